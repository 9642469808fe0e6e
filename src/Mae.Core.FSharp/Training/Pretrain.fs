/// Pretraining loop: AdamW, warmup + cosine per iteration, gradient accumulation and clipping,
/// a stop on NaN/Inf, one dispose scope per step, checkpoints that resume the same trajectory.
namespace Mae

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open System.Threading
open TorchSharp

type PretrainOptions =
    { /// Passes over the data.
      Epochs: int
      /// Images per micro-batch.
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
      Precision: Precision }

module PretrainOptions =
    /// MAE's recipe, scaled for small runs.
    let defaults =
        { Epochs = 10; BatchSize = 256; BaseLr = 1.5e-4; MinLr = 0.0; WarmupEpochs = 1.0; WeightDecay = 0.05
          Betas = (0.9, 0.95); ClipGrad = 0.0; AccumulationSteps = 1; Seed = 0L
          CheckpointDirectory = null; CheckpointEvery = 0; MaxIterations = 0
          Precision = Float32 }

    let validate (o: PretrainOptions) =
        Guard.positive "Epochs" o.Epochs
        Guard.positive "BatchSize" o.BatchSize
        Guard.positive "AccumulationSteps" o.AccumulationSteps
        if not (o.BaseLr > 0.0) then Guard.fail "BaseLr" o.BaseLr "a positive learning rate"
        if o.MinLr < 0.0 then Guard.fail "MinLr" o.MinLr "a non-negative learning rate"
        if o.WarmupEpochs < 0.0 then Guard.fail "WarmupEpochs" o.WarmupEpochs "a non-negative number of epochs"
        if o.WeightDecay < 0.0 then Guard.fail "WeightDecay" o.WeightDecay "a non-negative number"
        if o.ClipGrad < 0.0 then Guard.fail "ClipGrad" o.ClipGrad "0 (off) or a positive norm"
        if o.MaxIterations < 0 then Guard.fail "MaxIterations" o.MaxIterations "0 (all) or a positive count"
        o

/// One report per optimizer step.
type PretrainProgress =
    { Step: int
      TotalSteps: int
      Epoch: int
      /// Loss of the last micro-batch.
      Loss: float
      Lr: float
      ImagesPerSecond: float
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

module Pretrain =

    let checkpointFile (dir: string) = Path.Combine(dir, "last.ckpt")

    /// The data order of an epoch: a permutation drawn from (seed, epoch) alone, so a resumed run
    /// sees the same batches.
    let epochOrder (seed: int64) (epoch: int) (n: int) =
        use g = new Generator(uint64 (seed * 1000003L + int64 epoch + 17L), torch.CPU)
        torch.randperm(int64 n, generator = g)

    /// Pretrains `model` on `images` [N, C, H, W] (kept where they are; each batch is moved to the
    /// model's device). `resumeFrom`: a checkpoint written by this function (or null).
    let run (model: MaskedAutoencoderViT) (images: Tensor) (options: PretrainOptions) (resumeFrom: string)
            (progress: PretrainProgress -> unit) (cancel: CancellationToken) : PretrainResult =
        Runtime.tuneAllocator ()
        let o = PretrainOptions.validate options
        Guard.rank "images" 4 "[N, C, H, W]" images
        let n = int images.shape.[0]
        if n < o.BatchSize then Guard.fail "images" (Guard.shapeOf images) (sprintf "at least BatchSize = %d images" o.BatchSize)
        let device = Runtime.deviceOf model
        let itersPerEpoch = n / o.BatchSize
        let totalIters = itersPerEpoch * o.Epochs
        let accum = o.AccumulationSteps
        let totalSteps = totalIters / accum
        let warmupSteps = int (o.WarmupEpochs * float itersPerEpoch) / accum
        let lr = Optim.scaledLr o.BaseLr (o.BatchSize * accum)
        let groups = Optim.decayGroups o.WeightDecay model
        use optimizer = Optim.adamW lr o.Betas groups
        use maskGen = new Generator(uint64 o.Seed, torch.CPU)
        let mutable it = 0
        if not (String.IsNullOrEmpty resumeFrom) then
            let meta = Checkpoint.readMeta resumeFrom
            if meta.Config <> model.Config then
                Guard.fail "resumeFrom" resumeFrom "a checkpoint of a model with the same configuration"
            // the data order and the schedule depend on these: a resumed run must use the same
            for key, value in [ "seed", o.Seed; "batchSize", int64 o.BatchSize; "accumulationSteps", int64 accum; "epochs", int64 o.Epochs ] do
                match meta.Extra.[key] with
                | null -> ()
                | stored when stored.GetValue<int64>() <> value ->
                    Guard.fail "options" (sprintf "%s = %d" key value) (sprintf "%s = %d as in the checkpoint %s" key (stored.GetValue<int64>()) resumeFrom)
                | _ -> ()
            Checkpoint.loadInto resumeFrom model (Some optimizer) (Some maskGen)
            it <- meta.Iteration
        let stopAt = if o.MaxIterations > 0 then min totalIters o.MaxIterations else totalIters
        let parameters = model.parameters() |> Array.ofSeq
        let epochLosses = Collections.Generic.List<float>()
        let clock = Stopwatch.StartNew()
        let mutable lastLoss = nan
        let mutable cancelled = false
        let mutable lastCkpt = null
        let save () =
            if not (String.IsNullOrEmpty o.CheckpointDirectory) then
                let path = checkpointFile o.CheckpointDirectory
                let extra = JsonObject()
                extra.["seed"] <- JsonValue.Create o.Seed
                extra.["batchSize"] <- JsonValue.Create(int64 o.BatchSize)
                extra.["accumulationSteps"] <- JsonValue.Create(int64 accum)
                extra.["epochs"] <- JsonValue.Create(int64 o.Epochs)
                Checkpoint.save path model (Some optimizer) (Some maskGen)
                    { Config = model.Config; Iteration = it; Step = it / accum; Epoch = it / itersPerEpoch; Extra = extra }
                lastCkpt <- path
        model.train ()
        let mutable windowStart = clock.Elapsed
        while it < stopAt && not cancelled do
            let epoch = it / itersPerEpoch
            use order = epochOrder o.Seed epoch n
            let mutable sum, count = 0.0, 0
            while it < stopAt && it / itersPerEpoch = epoch && not cancelled do
                let stepLoss =
                    use _ = torch.NewDisposeScope()
                    if it % accum = 0 then
                        Optim.setLr optimizer groups (Optim.scheduledLr lr o.MinLr warmupSteps totalSteps (it / accum))
                    let idx = order.narrow(0L, int64 ((it % itersPerEpoch) * o.BatchSize), int64 o.BatchSize)
                    let batch = images.index_select(0L, idx).``to``(device)
                    let out = (use _ = Precision.scope o.Precision in model.Forward(batch, maskGen))
                    let value = out.Loss.item<float32>() |> float
                    if Double.IsNaN value || Double.IsInfinity value then
                        raise (InvalidOperationException(sprintf "Loss is %f at iteration %d (epoch %d); training stopped. Lower BaseLr, enable ClipGrad, or check the input for NaN/Inf." value it epoch))
                    (if accum = 1 then out.Loss else out.Loss / float accum).backward()
                    if (it + 1) % accum = 0 then
                        if o.ClipGrad > 0.0 then torch.nn.utils.clip_grad_norm_(parameters, o.ClipGrad) |> ignore
                        optimizer.Step()
                        optimizer.ZeroGrad()
                    value
                Runtime.endOfStep ()
                it <- it + 1
                lastLoss <- stepLoss
                sum <- sum + stepLoss
                count <- count + 1
                if it % accum = 0 then
                    let step = it / accum
                    let now = clock.Elapsed
                    let ips = float (o.BatchSize * accum) / max 1e-9 (now - windowStart).TotalSeconds
                    windowStart <- now
                    progress
                        { Step = step; TotalSteps = totalSteps; Epoch = epoch; Loss = stepLoss
                          Lr = optimizer.LearningRate 0
                          ImagesPerSecond = ips; Elapsed = now }
                    if o.CheckpointEvery > 0 && step % o.CheckpointEvery = 0 then save ()
                    if cancel.IsCancellationRequested then cancelled <- true
            if count > 0 then epochLosses.Add(sum / float count)
        // the state at the end (or at cancellation) is always resumable
        if it % accum = 0 then save ()
        model.eval ()
        { Steps = it / accum; Iterations = it; EpochLosses = epochLosses.ToArray(); FinalLoss = lastLoss
          Seconds = clock.Elapsed.TotalSeconds; Cancelled = cancelled; CheckpointPath = lastCkpt }
