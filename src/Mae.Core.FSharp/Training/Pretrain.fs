/// Pretraining loop: AdamW, warmup + cosine per iteration, gradient accumulation and clipping,
/// batches from a BatchLoader (order from the seed and epoch, prefetch, per-sample transforms),
/// a stop before anything non-finite reaches the weights or a checkpoint, one dispose scope per
/// step, checkpoints that resume the same trajectory.
namespace Mae

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open System.Threading
open TorchSharp
open Mae.Data

module Pretrain =

    let checkpointFile (dir: string) = Path.Combine(dir, "last.ckpt")

    /// Where resuming from a checkpoint with `meta`, a model of `config` and options `o` would not
    /// continue the run that wrote it: (setting, value here, value in the checkpoint), first the
    /// configuration's settings ("depth", "maskRatio", "input.imageHeight"), then the options
    /// (`recordedOptions`' names; an option the checkpoint does not record is not compared).
    let resumeMismatches (meta: Checkpoint.Meta) (config: MaeConfig) (o: PretrainOptions) =
        let configDiffs = ConfigJson.differences meta.Config config |> Array.map (fun (k, ckpt, here) -> k, here, ckpt)
        let optionDiffs =
            [| for key, value in PretrainOptions.recordedOptions o do
                   match meta.Extra.[key] with
                   | null -> ()
                   | stored when stored.ToJsonString() <> value.ToJsonString() -> yield key, value.ToJsonString(), stored.ToJsonString()
                   | _ -> () |]
        configDiffs, optionDiffs

    /// The L2 norm of all the parameters' gradients together (clip_grad_norm_'s total norm), in
    /// float64; one sync.
    let private totalNorm (parameters: Modules.Parameter[]) =
        use _ = torch.no_grad()
        use _ = torch.NewDisposeScope()
        let norms = [| for p in parameters do if not (isNull p.grad) then yield p.grad.norm().to_type(ScalarType.Float64) |]
        if norms.Length = 0 then 0.0 else torch.stack(norms).norm().item<float>()

    /// The stop when a step's gradients or its update are not finite: names the step and the
    /// tensors, and says that nothing of this step was saved.
    let private diverged (what: string) (bad: string[]) (step: int) (it: int) (epoch: int) (saved: string) =
        let shown = if bad.Length > 12 then Array.append bad.[.. 11] [| sprintf "... (%d more)" (bad.Length - 12) |] else bad
        InvalidOperationException(
            sprintf "%s NaN or infinite at step %d (iteration %d, epoch %d) in %d tensor(s): %s. Training stopped; nothing of this step was saved%s. Lower BaseLr, enable ClipGrad, or check the input for NaN/Inf."
                what step it epoch bad.Length (String.Join(", ", shown)) saved)

    /// Pretrains `model` on the samples of `data` (each a sample of the model's modality, e.g. an
    /// image [C, H, W]; batches come from a BatchLoader: order from (Seed, epoch), options'
    /// Transform per sample, Workers threads reading ahead; each batch is moved to the model's
    /// device). `resumeFrom`: a checkpoint written by this function (or null); the resumed run sees
    /// the batches an uninterrupted one would. A step whose gradients or whose update are not finite
    /// stops the run with InvalidOperationException naming the step and the tensors, before the
    /// weights (for gradients) or any checkpoint (in both cases) takes them: the last checkpoint
    /// written stays the last finite state. A sample that cannot be read stops the run with the
    /// dataset's InvalidDataException naming it, or is skipped (OnBadSample.Skip).
    let runOn (model: MaskedAutoencoder) (data: IDataset) (options: PretrainOptions) (resumeFrom: string)
              (progress: PretrainProgress -> unit) (cancel: CancellationToken) : PretrainResult =
        Runtime.tuneAllocator ()
        let o = PretrainOptions.validate options
        Guard.notNull "model" model
        Guard.notNull "data" data
        let n = data.Count
        if n < o.BatchSize then Guard.fail "data" (sprintf "%d samples" n) (sprintf "at least BatchSize = %d samples" o.BatchSize)
        let loader =
            BatchLoader(data, { LoaderOptions.training o.BatchSize o.Seed o.Transform with Workers = o.Workers; OnBadSample = o.OnBadSample })
        let device = Runtime.deviceOf model
        let itersPerEpoch = loader.IterationsPerEpoch
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
                for key, value in PretrainOptions.recordedOptions o do
                    extra.[key] <- value
                if not (isNull o.Notes) then
                    for kv in o.Notes do
                        extra.[kv.Key] <- (if isNull kv.Value then null else kv.Value.DeepClone())
                Checkpoint.save path model (Some optimizer) (Some maskGen)
                    { Config = model.Config; Iteration = it; Step = it / accum; Epoch = it / itersPerEpoch; Extra = extra }
                lastCkpt <- path
        let mutable gradNorm = nan
        /// One micro-batch: forward, backward and, at the end of an accumulation, the checked step.
        let step (inputs: Tensor) (epoch: int) =
            use _ = torch.NewDisposeScope()
            if it % accum = 0 then
                Optim.setLr optimizer groups (Optim.scheduledLr lr o.MinLr warmupSteps totalSteps (it / accum))
            let batch = inputs.``to``(device)
            let out = (use _ = Precision.scope o.Precision in model.Forward(batch, maskGen))
            let value = out.Loss.item<float32>() |> float
            if Double.IsNaN value || Double.IsInfinity value then
                raise (InvalidOperationException(sprintf "Loss is %f at iteration %d (epoch %d); training stopped. Lower BaseLr, enable ClipGrad, or check the input for NaN/Inf." value it epoch))
            (if accum = 1 then out.Loss else out.Loss / float accum).backward()
            if (it + 1) % accum = 0 then
                let step = (it + 1) / accum
                let saved = if isNull lastCkpt then "" else sprintf "; %s holds the last finite state" lastCkpt
                // the total norm is finite exactly when every gradient is (short of an overflow of
                // the sum, which the per-tensor check below tells apart)
                gradNorm <- totalNorm parameters
                if not (Double.IsFinite gradNorm) && not (Weights.allFinite [| for p in parameters -> p.grad |]) then
                    let grads = named |> Array.map (fun (name, p) -> name, p.grad)
                    raise (diverged "Gradients are" (Weights.nonFinite grads) step it epoch saved)
                if o.ClipGrad > 0.0 then torch.nn.utils.clip_grad_norm_(parameters, o.ClipGrad) |> ignore
                optimizer.Step()
                if not (optimizer.IsFinite()) then
                    let bad = Array.append (Weights.nonFinite named) (Weights.nonFinite (optimizer.State()))
                    raise (diverged "The AdamW update made weights" bad step it epoch saved)
                optimizer.ZeroGrad()
            value
        model.train ()
        let mutable windowStart = clock.Elapsed
        while it < stopAt && not cancelled do
            let epoch = it / itersPerEpoch
            // the loader's workers stop when the enumerator is disposed (end of epoch, stop, error)
            use batches = loader.Epoch(epoch, it % itersPerEpoch, CancellationToken.None).GetEnumerator()
            let mutable sum, count = 0.0, 0
            while it < stopAt && it / itersPerEpoch = epoch && not cancelled && batches.MoveNext() do
                let stepLoss =
                    use batch = batches.Current
                    it <- epoch * itersPerEpoch + batch.Iteration // a batch whose samples were all skipped is missing
                    step batch.Inputs epoch
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
                          ImagesPerSecond = ips; GradNorm = gradNorm; Elapsed = now }
                    if o.CheckpointEvery > 0 && step % o.CheckpointEvery = 0 then save ()
                    if cancel.IsCancellationRequested then cancelled <- true
            if count > 0 then epochLosses.Add(sum / float count)
            // an epoch whose last batches were all skipped ends where the next one starts
            if not cancelled && it < stopAt && it / itersPerEpoch = epoch then it <- min stopAt ((epoch + 1) * itersPerEpoch)
        // the state at the end (or at cancellation) is always resumable
        if it % accum = 0 then save ()
        model.eval ()
        { Steps = it / accum; Iterations = it; EpochLosses = epochLosses.ToArray(); FinalLoss = lastLoss
          Seconds = clock.Elapsed.TotalSeconds; Cancelled = cancelled; CheckpointPath = lastCkpt }

    /// `runOn` over samples held in memory: `inputs` [N, ...] (e.g. images [N, C, H, W]), read
    /// without a copy per sample (the loader takes each batch with one index_select).
    let run (model: MaskedAutoencoder) (inputs: Tensor) (options: PretrainOptions) (resumeFrom: string)
            (progress: PretrainProgress -> unit) (cancel: CancellationToken) : PretrainResult =
        Guard.notNull "inputs" inputs
        Guard.nonEmptyBatch "inputs" inputs
        Guard.notNull "model" model
        (use first = inputs.narrow(0L, 0L, 1L) in model.Adapter.Check("inputs", first))
        let o = PretrainOptions.validate options
        if inputs.shape.[0] < int64 o.BatchSize then
            Guard.fail "inputs" (Guard.shapeOf inputs) (sprintf "at least BatchSize = %d samples" o.BatchSize)
        use labels = torch.zeros(inputs.shape.[0], dtype = ScalarType.Int64)
        runOn model (InMemoryDataset(inputs, labels, [| "unlabelled" |])) options resumeFrom progress cancel
