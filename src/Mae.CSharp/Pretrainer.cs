using System;
using System.Collections.Generic;
using System.Threading;
using static TorchSharp.torch;
using TorchSharp;

namespace Mae
{
    /// <summary>Every pretraining setting. Defaults follow MAE's recipe, scaled for small runs.</summary>
    public sealed class PretrainerOptions
    {
        /// <summary>Passes over the data (default 10).</summary>
        public int Epochs { get; init; } = 10;

        /// <summary>Images per micro-batch (default 256).</summary>
        public int BatchSize { get; init; } = 256;

        /// <summary>Learning rate per 256 images of effective batch (default 1.5e-4, MAE's).</summary>
        public double BaseLr { get; init; } = 1.5e-4;

        /// <summary>Linear warmup in epochs, then half-cycle cosine (default 1).</summary>
        public double WarmupEpochs { get; init; } = 1.0;

        /// <summary>AdamW weight decay on weight matrices (default 0.05).</summary>
        public double WeightDecay { get; init; } = 0.05;

        /// <summary>Global gradient-norm clip; 0 = off (default).</summary>
        public double ClipGrad { get; init; }

        /// <summary>Micro-batches per optimizer step (default 1).</summary>
        public int AccumulationSteps { get; init; } = 1;

        /// <summary>Seed of the data order and the masks (default 0).</summary>
        public long Seed { get; init; }

        /// <summary>Folder for the resumable checkpoint <c>last.ckpt</c>; null = none.</summary>
        public string? CheckpointDirectory { get; init; }

        /// <summary>Optimizer steps between checkpoints; 0 = only at the end or on cancellation.</summary>
        public int CheckpointEvery { get; init; }

        /// <summary>Checkpoint to resume from (e.g. <c>last.ckpt</c>); null = start fresh.</summary>
        public string? ResumeFrom { get; init; }

        /// <summary>Stop after this many micro-batches in total; 0 = all epochs.</summary>
        public int MaxIterations { get; init; }

        /// <summary>
        /// Device to train on ("cpu", "cuda", "cuda:1"); the model is moved there first. Null keeps
        /// the model where it is (the device given to <see cref="MaeBuilder.Device"/>, CPU by default).
        /// </summary>
        public string? Device { get; init; }

        /// <summary>
        /// Arithmetic of the matrix products (default <see cref="TrainingPrecision.Float32"/>).
        /// <see cref="TrainingPrecision.BFloat16"/> keeps fp32 weights, norms and loss and runs the
        /// products in bfloat16: much faster on CPUs with AVX512-BF16 or AMX and on recent GPUs.
        /// </summary>
        public TrainingPrecision Precision { get; init; } = TrainingPrecision.Float32;

        /// <summary>
        /// Per-sample transform of the data, given the sample's own generator (seeded by the
        /// run's seed, the epoch and the sample's position, so that a resumed run sees the same
        /// batches), e.g. <see cref="ImageTransforms.Pretraining"/>. Null: samples as read.
        /// </summary>
        public Func<Random, Tensor, Tensor>? Transform { get; init; }

        /// <summary>Threads that read and transform batches ahead of training (0: none).</summary>
        public int Workers { get; init; }

        /// <summary>
        /// True: a sample that cannot be read (a file that is not an image, another channel count)
        /// is left out and training goes on; false (default): the run stops with an
        /// <see cref="System.IO.InvalidDataException"/> naming the file.
        /// </summary>
        public bool SkipBadSamples { get; init; }

        internal PretrainOptions ToCore() => new(
            Epochs, BatchSize, BaseLr, 0.0, WarmupEpochs, WeightDecay, new Tuple<double, double>(0.9, 0.95), ClipGrad,
            AccumulationSteps, Seed, CheckpointDirectory, CheckpointEvery, MaxIterations,
            Precision == TrainingPrecision.BFloat16 ? Mae.Precision.BFloat16 : Mae.Precision.Float32,
            Transform ?? Mae.Data.Transforms.identity, Workers,
            SkipBadSamples ? Mae.Data.OnBadSample.Skip : Mae.Data.OnBadSample.Stop, null!);
    }

    /// <summary>Arithmetic of a training step's matrix products.</summary>
    public enum TrainingPrecision
    {
        /// <summary>Everything in fp32.</summary>
        Float32 = 0,

        /// <summary>Matrix products in bfloat16 on copies of fp32 master weights.</summary>
        BFloat16 = 1,
    }

    /// <summary>One report per optimizer step.</summary>
    public sealed class PretrainProgressInfo
    {
        internal PretrainProgressInfo(PretrainProgress p)
        {
            Step = p.Step; TotalSteps = p.TotalSteps; Epoch = p.Epoch; Loss = p.Loss; LearningRate = p.Lr;
            ImagesPerSecond = p.ImagesPerSecond; GradNorm = p.GradNorm; Elapsed = p.Elapsed;
        }

        /// <summary>Optimizer steps done.</summary>
        public int Step { get; }

        /// <summary>Optimizer steps of the whole run.</summary>
        public int TotalSteps { get; }

        /// <summary>Current epoch, from 0.</summary>
        public int Epoch { get; }

        /// <summary>Loss of the last micro-batch.</summary>
        public double Loss { get; }

        /// <summary>Learning rate of the step.</summary>
        public double LearningRate { get; }

        /// <summary>Throughput of the last step.</summary>
        public double ImagesPerSecond { get; }

        /// <summary>L2 norm of all gradients of the step, before clipping.</summary>
        public double GradNorm { get; }

        /// <summary>Time since the run started.</summary>
        public TimeSpan Elapsed { get; }
    }

    /// <summary>What a pretraining run did.</summary>
    public sealed class PretrainOutcome
    {
        internal PretrainOutcome(PretrainResult r)
        {
            Steps = r.Steps; Iterations = r.Iterations; EpochLosses = r.EpochLosses; FinalLoss = r.FinalLoss;
            Seconds = r.Seconds; Cancelled = r.Cancelled; CheckpointPath = r.CheckpointPath;
        }

        /// <summary>Optimizer steps done in total (resumed runs included).</summary>
        public int Steps { get; }

        /// <summary>Micro-batches done in total.</summary>
        public int Iterations { get; }

        /// <summary>Mean loss of each epoch this run trained.</summary>
        public IReadOnlyList<double> EpochLosses { get; }

        /// <summary>Loss of the last micro-batch.</summary>
        public double FinalLoss { get; }

        /// <summary>Wall-clock seconds of this run.</summary>
        public double Seconds { get; }

        /// <summary>True when stopped by the cancellation token (a checkpoint was written if a directory was set).</summary>
        public bool Cancelled { get; }

        /// <summary>The last checkpoint written, or null.</summary>
        public string? CheckpointPath { get; }
    }

    /// <summary>Pretrains a <see cref="MaeModel"/> on unlabelled samples of its modality.</summary>
    public static class Pretrainer
    {
        /// <summary>Pretrains with the default options but for the epochs and batch size given.</summary>
        public static PretrainOutcome Pretrain(MaeModel model, ImageDataset data, int epochs = 10, int batchSize = 256,
            IProgress<PretrainProgressInfo>? progress = null, CancellationToken cancellationToken = default) =>
            Pretrain(model, data, new PretrainerOptions { Epochs = epochs, BatchSize = batchSize }, progress, cancellationToken);

        /// <summary>
        /// Pretrains on images held in memory, with every option. Cancelling stops after the
        /// current step and, when <see cref="PretrainerOptions.CheckpointDirectory"/> is set, leaves
        /// a resumable checkpoint. Throws <see cref="ArgumentException"/> naming a bad option.
        /// </summary>
        public static PretrainOutcome Pretrain(MaeModel model, ImageDataset data, PretrainerOptions options,
            IProgress<PretrainProgressInfo>? progress = null, CancellationToken cancellationToken = default)
        {
            ArgumentNullException.ThrowIfNull(data);
            return Run(model, options, progress, (core, o, report) =>
                Mae.Pretrain.run(core, data.Images, o, options.ResumeFrom, report, cancellationToken));
        }

        /// <summary>
        /// Pretrains on a dataset read on demand (an image folder, or tensors in memory): batches
        /// come from Mae's loader, in an order drawn from the seed and the epoch, each sample through
        /// <see cref="PretrainerOptions.Transform"/> (e.g. <see cref="ImageTransforms.Pretraining"/>),
        /// <see cref="PretrainerOptions.Workers"/> threads reading ahead. A run stops before
        /// anything non-finite reaches the weights or a checkpoint, naming the step and tensors.
        /// Throws <see cref="ArgumentException"/> naming a bad option, and the dataset's
        /// <see cref="System.IO.InvalidDataException"/> naming a file that cannot be read (unless
        /// <see cref="PretrainerOptions.SkipBadSamples"/>).
        /// </summary>
        public static PretrainOutcome Pretrain(MaeModel model, MaeDataset data, PretrainerOptions options,
            IProgress<PretrainProgressInfo>? progress = null, CancellationToken cancellationToken = default)
        {
            ArgumentNullException.ThrowIfNull(data);
            return Run(model, options, progress, (core, o, report) =>
                Mae.Pretrain.runOn(core, data.Core, o, options.ResumeFrom, report, cancellationToken));
        }

        private static PretrainOutcome Run(MaeModel model, PretrainerOptions options, IProgress<PretrainProgressInfo>? progress,
            Func<MaskedAutoencoder, PretrainOptions, Microsoft.FSharp.Core.FSharpFunc<PretrainProgress, Microsoft.FSharp.Core.Unit>, PretrainResult> train)
        {
            ArgumentNullException.ThrowIfNull(model);
            ArgumentNullException.ThrowIfNull(options);
            if (options.Device is not null) model.Core.to(Runtime.device(options.Device));
            var report = Microsoft.FSharp.Core.FuncConvert.FromAction<PretrainProgress>(p => progress?.Report(new PretrainProgressInfo(p)));
            return new PretrainOutcome(train(model.Core, options.ToCore(), report));
        }
    }
}
