using System;
using System.Linq;
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
        private static Tensor Features(ImageMaeModel model, Tensor images, bool meanPool)
        {
            var device = model.Core.parameters().First().device;
            return Probe.extract(Microsoft.FSharp.Core.FuncConvert.FromFunc<Tensor, Tensor>(x => model.Core.Features(x, meanPool)), device, 512, images);
        }

        private static void CheckLabelled(ImageDataset d, string name)
        {
            ArgumentNullException.ThrowIfNull(d, name);
            if (d.Labels is null) throw new ArgumentException($"{name} has no labels; expected a labelled dataset.", name);
        }

        /// <summary>
        /// Linear probe (MAE's recipe: BatchNorm without affine + linear layer, SGD) on the frozen
        /// encoder's features (cls token, or mean-pooled with <paramref name="meanPool"/>).
        /// </summary>
        public static ProbeAccuracy LinearProbe(ImageMaeModel model, ImageDataset train, ImageDataset test, int classes,
            int epochs = 20, bool meanPool = false, long seed = 0)
        {
            ArgumentNullException.ThrowIfNull(model);
            CheckLabelled(train, nameof(train));
            CheckLabelled(test, nameof(test));
            using var trX = Features(model, train.Images, meanPool);
            using var teX = Features(model, test.Images, meanPool);
            var options = new Probe.LinearProbeOptions(epochs, 256, 0.1, 0.0, seed);
            var r = Probe.linear(options, classes, trX, train.Labels!, teX, test.Labels!);
            return new ProbeAccuracy(r.TrainAccuracy, r.TestAccuracy);
        }

        /// <summary>Weighted k-NN (cosine similarity, temperature 0.07) test accuracy on frozen features.</summary>
        public static double KnnAccuracy(ImageMaeModel model, ImageDataset train, ImageDataset test, int classes, int k = 20,
            bool meanPool = false)
        {
            ArgumentNullException.ThrowIfNull(model);
            CheckLabelled(train, nameof(train));
            CheckLabelled(test, nameof(test));
            using var trX = Features(model, train.Images, meanPool);
            using var teX = Features(model, test.Images, meanPool);
            return Probe.knn(k, 0.07, classes, trX, train.Labels!, teX, test.Labels!);
        }
    }
}
