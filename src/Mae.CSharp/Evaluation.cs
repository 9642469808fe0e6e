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

    /// <summary>Test accuracies of the few-label comparison (<see cref="Evaluation.FewLabels"/>).</summary>
    public sealed class FewLabelsAccuracy
    {
        internal FewLabelsAccuracy(FewLabelsResult r)
        {
            LabelsPerClass = r.LabelsPerClass; TrainSamples = r.TrainSamples; TestSamples = r.TestSamples;
            Pretrained = r.Pretrained; Scratch = r.Scratch; LinearProbe = r.LinearProbe;
        }

        /// <summary>K: labelled training samples per class.</summary>
        public int LabelsPerClass { get; }

        /// <summary>K × classes: the samples both classifiers and the probe were trained on.</summary>
        public int TrainSamples { get; }

        /// <summary>Test samples scored.</summary>
        public int TestSamples { get; }

        /// <summary>The pretrained encoder fine-tuned on the K labels per class.</summary>
        public double Pretrained { get; }

        /// <summary>The same classifier from random weights, trained the same way.</summary>
        public double Scratch { get; }

        /// <summary>The linear probe of the frozen pretrained encoder on the same labels.</summary>
        public double LinearProbe { get; }
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

        /// <summary>
        /// The point of pretraining, measured: <paramref name="labelsPerClass"/> labelled samples
        /// per class of <paramref name="train"/> (a subset drawn from <paramref name="seed"/>); the
        /// model's encoder fine-tuned on them (layer-wise decay, mean-pooled head), the same
        /// classifier trained from scratch on them, and the linear probe on them, each scored on all
        /// of <paramref name="test"/>. <paramref name="transform"/> is applied to every sample
        /// (e.g. <see cref="ImageTransforms.Evaluation"/>; null: as read). The model is not changed.
        /// Throws <see cref="ArgumentException"/> naming <c>labelsPerClass</c> when a class has fewer samples.
        /// </summary>
        public static FewLabelsAccuracy FewLabels(MaeModel model, MaeDataset train, MaeDataset test, int labelsPerClass = 10,
            Func<Random, Tensor, Tensor>? transform = null, int epochs = 50, long seed = 0, int workers = 0)
        {
            ArgumentNullException.ThrowIfNull(model);
            ArgumentNullException.ThrowIfNull(train);
            ArgumentNullException.ThrowIfNull(test);
            var d = global::Mae.FewLabels.defaults;
            var f = d.FineTune;
            var fineTune = new FineTuneOptions(epochs, f.BatchSize, f.BaseLr, f.LayerDecay, f.WeightDecay, f.WarmupEpochs,
                f.LabelSmoothing, seed, f.Transform, f.Workers, f.OnBadSample);
            var options = new FewLabelsOptions(labelsPerClass, seed, fineTune, d.Probe, transform ?? Data.Transforms.identity,
                d.EvalBatchSize, workers);
            return new FewLabelsAccuracy(global::Mae.FewLabels.run(model.Core, train.Core, test.Core, options, System.Threading.CancellationToken.None));
        }
    }
}
