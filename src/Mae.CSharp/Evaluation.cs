using System;
using TorchSharp;
using static TorchSharp.torch;

namespace Mae
{
    /// <summary>Accuracies of a probe.</summary>
    public sealed class ProbeAccuracy
    {
        internal ProbeAccuracy(double train, double test)
        {
            TrainAccuracy = train; TestAccuracy = test;
        }

        /// <summary>Accuracy on the training split.</summary>
        public double TrainAccuracy { get; }

        /// <summary>Accuracy on the test split.</summary>
        public double TestAccuracy { get; }
    }

    /// <summary>Evaluates a pretrained encoder without training it.</summary>
    public static class Evaluation
    {
        private static Microsoft.FSharp.Core.FSharpFunc<Tensor, Tensor> FeaturesOf(ImageMaeModel model, bool meanPool) =>
            Microsoft.FSharp.Core.FuncConvert.FromFunc<Tensor, Tensor>(x => model.Core.Features(x, meanPool));

        private static void CheckLabelled(ImageDataset d, string name)
        {
            ArgumentNullException.ThrowIfNull(d, name);
            if (d.Labels is null) throw new ArgumentException($"{name} has no labels; expected a labelled dataset.", name);
        }

        /// <summary>
        /// Linear probe (MAE's recipe: BatchNorm without affine + linear layer, SGD) on the frozen
        /// encoder's features (cls token, or mean-pooled with <paramref name="meanPool"/>). Labels lie in [0, classes).
        /// </summary>
        public static ProbeAccuracy LinearProbe(ImageMaeModel model, ImageDataset train, ImageDataset test, int classes,
            int epochs = 20, bool meanPool = false, long seed = 0)
        {
            ArgumentNullException.ThrowIfNull(model);
            CheckLabelled(train, nameof(train));
            CheckLabelled(test, nameof(test));
            var options = new Probe.LinearProbeOptions(epochs, 256, 0.1, 0.0, seed);
            var r = Probe.linearOn(options, classes, FeaturesOf(model, meanPool), Runtime.deviceOf(model.Core), 512, train.ToCore(), test.ToCore());
            return new ProbeAccuracy(r.TrainAccuracy, r.TestAccuracy);
        }

        /// <summary>
        /// Weighted k-NN (cosine similarity, temperature 0.07) test accuracy on frozen features.
        /// <paramref name="k"/> is at least 1 and at most the number of training images; labels lie in [0, classes).
        /// </summary>
        public static double KnnAccuracy(ImageMaeModel model, ImageDataset train, ImageDataset test, int classes, int k = 20,
            bool meanPool = false)
        {
            ArgumentNullException.ThrowIfNull(model);
            CheckLabelled(train, nameof(train));
            CheckLabelled(test, nameof(test));
            return Probe.knnOn(k, 0.07, classes, FeaturesOf(model, meanPool), Runtime.deviceOf(model.Core), 512, train.ToCore(), test.ToCore());
        }
    }
}
