/// The options of pretraining, what it reports, and what it records in checkpoints.
namespace Mae

open System
open System.Text.Json.Nodes
open Mae.Data

type PretrainOptions =
    { /// Passes over the data.
      Epochs: int
      /// Samples per micro-batch.
      BatchSize: int
      /// Learning rate per 256 images of effective batch (MAE: 1.5e-4).
      BaseLr: float
      /// Floor of the cosine schedule.
      MinLr: float
      /// Linear warmup length in epochs (may be fractional).
      WarmupEpochs: float
      /// AdamW weight decay on the tensors that decay (see Optim.decays).
      WeightDecay: float
      /// AdamW betas (MAE: 0.9, 0.95).
      Betas: float * float
      /// Clip the gradient's global norm to this value; 0 = no clipping.
      ClipGrad: float
      /// Micro-batches per optimizer step.
      AccumulationSteps: int
      /// Seed of the data order and of the masks.
      Seed: int64
      /// Where checkpoints go (null = none): `last.ckpt`, rewritten every `CheckpointEvery` steps.
      CheckpointDirectory: string
      /// Optimizer steps between checkpoints (0 = only at the end / on cancellation).
      CheckpointEvery: int
      /// Stop after this many micro-batches in total (0 = run every epoch); the schedule still
      /// spans all epochs. Used by tests and for resumable partial runs.
      MaxIterations: int
      /// Arithmetic of the matrix products (Float32, or BFloat16 with fp32 master weights).
      Precision: Precision
      /// Per-sample transform of the data (e.g. Transforms.forPretraining: MAE's random resized
      /// crop and flip, then normalisation), drawn from (Seed, epoch, position) so that a resumed
      /// run sees the same batches. Default Transforms.identity.
      Transform: Func<Random, Tensor, Tensor>
      /// Threads that read and transform the next batches while the model trains (0 = read on
      /// the training thread; data held in memory needs none).
      Workers: int
      /// What a sample that cannot be read does: stop the run (default), or skip it and count it.
      OnBadSample: OnBadSample
      /// Entries every checkpoint of the run records besides the options (e.g. where the data came
      /// from, so that later commands can read the same data); null: none.
      Notes: System.Text.Json.Nodes.JsonObject }

module PretrainOptions =
    /// MAE's recipe, scaled for small runs.
    let defaults =
        { Epochs = 10; BatchSize = 256; BaseLr = 1.5e-4; MinLr = 0.0; WarmupEpochs = 1.0; WeightDecay = 0.05
          Betas = (0.9, 0.95); ClipGrad = 0.0; AccumulationSteps = 1; Seed = 0L
          CheckpointDirectory = null; CheckpointEvery = 0; MaxIterations = 0
          Precision = Float32; Transform = Transforms.identity; Workers = 0; OnBadSample = OnBadSample.Stop; Notes = null }

    let validate (o: PretrainOptions) =
        Guard.positive "Epochs" o.Epochs
        Guard.positive "BatchSize" o.BatchSize
        Guard.positive "AccumulationSteps" o.AccumulationSteps
        if not (o.BaseLr > 0.0) then Guard.fail "BaseLr" o.BaseLr "a positive learning rate"
        if o.MinLr < 0.0 then Guard.fail "MinLr" o.MinLr "a non-negative learning rate"
        if o.WarmupEpochs < 0.0 then Guard.fail "WarmupEpochs" o.WarmupEpochs "a non-negative number of epochs"
        if o.WeightDecay < 0.0 then Guard.fail "WeightDecay" o.WeightDecay "a non-negative number"
        if o.ClipGrad < 0.0 then Guard.fail "ClipGrad" o.ClipGrad "0 (off) or a positive norm"
        Guard.notNull "Transform" o.Transform
        if o.Workers < 0 then Guard.fail "Workers" o.Workers "0 (no prefetch) or a positive number of threads"
        if o.MaxIterations < 0 then Guard.fail "MaxIterations" o.MaxIterations "0 (all) or a positive count"
        o

    /// The training options a checkpoint records (a resumed run must use the same: the data order
    /// and the schedule depend on them), as JSON values by name.
    let recordedOptions (o: PretrainOptions) : (string * JsonNode) list =
        [ "seed", JsonValue.Create o.Seed; "batchSize", JsonValue.Create(int64 o.BatchSize)
          "accumulationSteps", JsonValue.Create(int64 o.AccumulationSteps); "epochs", JsonValue.Create(int64 o.Epochs)
          "baseLr", JsonValue.Create o.BaseLr; "minLr", JsonValue.Create o.MinLr; "warmupEpochs", JsonValue.Create o.WarmupEpochs
          "weightDecay", JsonValue.Create o.WeightDecay; "clipGrad", JsonValue.Create o.ClipGrad ]

/// One report per optimizer step.
type PretrainProgress =
    { Step: int
      TotalSteps: int
      Epoch: int
      /// Loss of the last micro-batch.
      Loss: float
      Lr: float
      ImagesPerSecond: float
      /// L2 norm of all gradients of the step, before clipping (torch.nn.utils.clip_grad_norm_'s total norm).
      GradNorm: float
      Elapsed: TimeSpan }

type PretrainResult =
    { Steps: int
      Iterations: int
      /// Mean loss of each epoch run (partial epochs included).
      EpochLosses: float[]
      FinalLoss: float
      Seconds: float
      /// True when stopped by the cancellation token (a checkpoint was written if a directory was given).
      Cancelled: bool
      /// The last checkpoint written, or null.
      CheckpointPath: string }
