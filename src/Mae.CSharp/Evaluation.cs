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
        private static Microsoft.FSharp.Core.FSharpFunc<Tensor, Tensor> FeaturesOf(MaeModel model, bool meanPool) =>
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
        public static ProbeAccuracy LinearProbe(MaeModel model, ImageDataset train, ImageDataset test, int classes,
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
        public static double KnnAccuracy(MaeModel model, ImageDataset train, ImageDataset test, int classes, int k = 20,
            bool meanPool = false)
        {
            ArgumentNullException.ThrowIfNull(model);
            CheckLabelled(train, nameof(train));
            CheckLabelled(test, nameof(test));
            return Probe.knnOn(k, 0.07, classes, FeaturesOf(model, meanPool), Runtime.deviceOf(model.Core), 512, train.ToCore(), test.ToCore());
        }

        private static Data.LoaderOptions Loader(Func<Random, Tensor, Tensor>? transform, int batchSize, int workers)
        {
            var e = Data.LoaderOptionsModule.evaluation(batchSize, transform ?? Data.Transforms.identity);
            return new Data.LoaderOptions(e.BatchSize, e.Shuffle, e.DropLast, e.Seed, workers, e.Prefetch, e.OnBadSample, e.Transform);
        }

        /// <summary>
        /// Linear probe (as <see cref="LinearProbe(MaeModel, ImageDataset, ImageDataset, int, int, bool, long)"/>)
        /// on datasets read on demand: each sample through <paramref name="transform"/> (e.g.
        /// <see cref="ImageTransforms.Evaluation"/>; null: as read), in batches of
        /// <paramref name="batchSize"/>, <paramref name="workers"/> threads reading ahead; only the
        /// features are held in memory. A dataset with more class names than <paramref name="classes"/>
        /// is an <see cref="ArgumentException"/> before any feature is computed.
        /// </summary>
        public static ProbeAccuracy LinearProbe(MaeModel model, MaeDataset train, MaeDataset test, int classes,
            Func<Random, Tensor, Tensor>? transform, int epochs = 20, bool meanPool = false, long seed = 0,
            int batchSize = 256, int workers = 0)
        {
            ArgumentNullException.ThrowIfNull(model);
            ArgumentNullException.ThrowIfNull(train);
            ArgumentNullException.ThrowIfNull(test);
            var options = new Probe.LinearProbeOptions(epochs, 256, 0.1, 0.0, seed);
            var r = Probe.linearOnData(options, classes, FeaturesOf(model, meanPool), Runtime.deviceOf(model.Core),
                Loader(transform, batchSize, workers), train.Core, test.Core);
            return new ProbeAccuracy(r.TrainAccuracy, r.TestAccuracy);
        }

        /// <summary>
        /// Weighted k-NN accuracy (as <see cref="KnnAccuracy(MaeModel, ImageDataset, ImageDataset, int, int, bool)"/>)
        /// on datasets read on demand through <paramref name="transform"/> (null: as read).
        /// </summary>
        public static double KnnAccuracy(MaeModel model, MaeDataset train, MaeDataset test, int classes,
            Func<Random, Tensor, Tensor>? transform, int k = 20, bool meanPool = false, int batchSize = 256, int workers = 0)
        {
            ArgumentNullException.ThrowIfNull(model);
            ArgumentNullException.ThrowIfNull(train);
            ArgumentNullException.ThrowIfNull(test);
            return Probe.knnOnData(k, 0.07, classes, FeaturesOf(model, meanPool), Runtime.deviceOf(model.Core),
                Loader(transform, batchSize, workers), train.Core, test.Core);
        }
    }
}
