/// Pretraining loop: AdamW, warmup + cosine per iteration, gradient accumulation and clipping,
/// a stop before anything non-finite reaches the weights or a checkpoint, one dispose scope per
/// step, checkpoints that resume the same trajectory.
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

    /// The training options a checkpoint records (a resumed run must use the same: the data order
    /// and the schedule depend on them), as JSON values by name.
    let recordedOptions (o: PretrainOptions) : (string * JsonNode) list =
        [ "seed", JsonValue.Create o.Seed; "batchSize", JsonValue.Create(int64 o.BatchSize)
          "accumulationSteps", JsonValue.Create(int64 o.AccumulationSteps); "epochs", JsonValue.Create(int64 o.Epochs)
          "baseLr", JsonValue.Create o.BaseLr; "minLr", JsonValue.Create o.MinLr; "warmupEpochs", JsonValue.Create o.WarmupEpochs
          "weightDecay", JsonValue.Create o.WeightDecay; "clipGrad", JsonValue.Create o.ClipGrad ]

    /// Where resuming from a checkpoint with `meta`, a model of `config` and options `o` would not
    /// continue the run that wrote it: (setting, value here, value in the checkpoint), first the
    /// configuration's settings ("depth", "maskRatio", "input.imageHeight"), then the options
    /// (`recordedOptions`' names; an option the checkpoint does not record is not compared).
    let resumeMismatches (meta: Checkpoint.Meta) (config: MaeConfig) (o: PretrainOptions) =
        let configDiffs = ConfigJson.differences meta.Config config |> Array.map (fun (k, ckpt, here) -> k, here, ckpt)
        let optionDiffs =
            [| for key, value in recordedOptions o do
                   match meta.Extra.[key] with
                   | null -> ()
                   | stored when stored.ToJsonString() <> value.ToJsonString() -> yield key, value.ToJsonString(), stored.ToJsonString()
                   | _ -> () |]
        configDiffs, optionDiffs

    /// The stop when a step's gradients or its update are not finite: names the step and the
    /// tensors, and says that nothing of this step was saved.
    let private diverged (what: string) (bad: string[]) (step: int) (it: int) (epoch: int) (saved: string) =
        let shown = if bad.Length > 12 then Array.append bad.[.. 11] [| sprintf "... (%d more)" (bad.Length - 12) |] else bad
        InvalidOperationException(
            sprintf "%s NaN or infinite at step %d (iteration %d, epoch %d) in %d tensor(s): %s. Training stopped; nothing of this step was saved%s. Lower BaseLr, enable ClipGrad, or check the input for NaN/Inf."
                what step it epoch bad.Length (String.Join(", ", shown)) saved)

    /// Pretrains `model` on `inputs` (a batch of the model's modality, e.g. images [N, C, H, W];
    /// kept where they are; each batch is moved to the model's device). `resumeFrom`: a checkpoint
    /// written by this function (or null). A step whose gradients or whose update are not finite
    /// stops the run with InvalidOperationException naming the step and the tensors, before the
    /// weights (for gradients) or any checkpoint (in both cases) takes them: the last checkpoint
    /// written stays the last finite state.
    let run (model: MaskedAutoencoder) (inputs: Tensor) (options: PretrainOptions) (resumeFrom: string)
            (progress: PretrainProgress -> unit) (cancel: CancellationToken) : PretrainResult =
        Runtime.tuneAllocator ()
        let o = PretrainOptions.validate options
        Guard.notNull "model" model
        Guard.notNull "inputs" inputs
        Guard.nonEmptyBatch "inputs" inputs
        model.Adapter.Check("inputs", inputs.narrow(0L, 0L, 1L))
        let n = int inputs.shape.[0]
        if n < o.BatchSize then Guard.fail "inputs" (Guard.shapeOf inputs) (sprintf "at least BatchSize = %d samples" o.BatchSize)
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
            let configDiffs, optionDiffs = resumeMismatches meta model.Config o
            let describe (diffs: (string * string * string)[]) =
                String.Join("; ", diffs |> Array.map (fun (k, here, ckpt) -> sprintf "%s = %s here, %s in the checkpoint" k here ckpt))
            if configDiffs.Length > 0 then
                Guard.fail "resumeFrom" resumeFrom (sprintf "a checkpoint of a model with the same configuration (%s)" (describe configDiffs))
            // the data order and the schedule depend on these: a resumed run must use the same
            if optionDiffs.Length > 0 then
                Guard.fail "options" (describe optionDiffs) (sprintf "the options of the run that wrote %s" resumeFrom)
            Checkpoint.loadInto resumeFrom model (Some optimizer) (Some maskGen)
            it <- meta.Iteration
        let stopAt = if o.MaxIterations > 0 then min totalIters o.MaxIterations else totalIters
        let named = Weights.named model
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
                for key, value in recordedOptions o do
                    extra.[key] <- value
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
                    let batch = inputs.index_select(0L, idx).``to``(device)
                    let out = (use _ = Precision.scope o.Precision in model.Forward(batch, maskGen))
                    let value = out.Loss.item<float32>() |> float
                    if Double.IsNaN value || Double.IsInfinity value then
                        raise (InvalidOperationException(sprintf "Loss is %f at iteration %d (epoch %d); training stopped. Lower BaseLr, enable ClipGrad, or check the input for NaN/Inf." value it epoch))
                    (if accum = 1 then out.Loss else out.Loss / float accum).backward()
                    if (it + 1) % accum = 0 then
                        let step = (it + 1) / accum
                        let saved = if isNull lastCkpt then "" else sprintf "; %s holds the last finite state" lastCkpt
                        if not (Weights.allFinite [| for p in parameters -> p.grad |]) then
                            let grads = named |> Array.map (fun (name, p) -> name, p.grad)
                            raise (diverged "Gradients are" (Weights.nonFinite grads) step it epoch saved)
                        if o.ClipGrad > 0.0 then torch.nn.utils.clip_grad_norm_(parameters, o.ClipGrad) |> ignore
                        optimizer.Step()
                        if not (optimizer.IsFinite()) then
                            let bad = Array.append (Weights.nonFinite named) (Weights.nonFinite (optimizer.State()))
                            raise (diverged "The AdamW update made weights" bad step it epoch saved)
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
