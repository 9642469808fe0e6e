/// The batch loader: a seeded order per epoch, batches of B transformed samples, optional
/// background prefetch on worker threads. Every batch is a pure function of (seed, epoch,
/// iteration): its samples come from the epoch's permutation and each sample's augmentation from
/// a generator seeded by (seed, epoch, position), so prefetching, the number of workers and
/// resuming at an iteration change nothing in what the consumer sees.
namespace Mae.Data

open System
open System.Collections.Concurrent
open System.IO
open System.Runtime.ExceptionServices
open System.Threading
open System.Threading.Tasks
open TorchSharp
open Mae

/// What the loader does with a sample whose file cannot be read (the InvalidDataException of IDataset.Read).
type OnBadSample =
    /// Raise the exception, naming the file (the default).
    | Stop = 0
    /// Leave the sample out of its batch and record it in BatchLoader.Skipped.
    | Skip = 1

type LoaderOptions =
    { /// Samples per batch, B.
      BatchSize: int
      /// True: each epoch's order is a permutation drawn from (Seed, epoch); false: dataset order.
      Shuffle: bool
      /// True: leave out the last partial batch (training); false: keep it (evaluation).
      DropLast: bool
      /// Seed of the order and of every sample's augmentation.
      Seed: int64
      /// Threads that build batches ahead of the consumer; 0 = build each batch on the
      /// consumer's thread when asked for (no prefetch).
      Workers: int
      /// Batches built ahead of the consumer at most (in progress or ready), K >= 1; used when
      /// Workers > 0.
      Prefetch: int
      /// Stop (raise) or Skip on a sample that cannot be read.
      OnBadSample: OnBadSample
      /// Per-sample transform: the sample's own generator and its input [C, h, w] -> [C, H, W];
      /// must give every sample the same shape (Transforms.pretrain, Transforms.evaluation,
      /// composed with Transforms.normalize).
      Transform: Func<Random, Tensor, Tensor> }

module LoaderOptions =
    /// Training: shuffled, last partial batch dropped, 2 workers prefetching 4 batches, stop on bad files.
    let training (batchSize: int) (seed: int64) (transform: Func<Random, Tensor, Tensor>) =
        { BatchSize = batchSize; Shuffle = true; DropLast = true; Seed = seed; Workers = 2; Prefetch = 4
          OnBadSample = OnBadSample.Stop; Transform = transform }

    /// Evaluation: dataset order, last partial batch kept, otherwise as `training`.
    let evaluation (batchSize: int) (transform: Func<Random, Tensor, Tensor>) =
        { training batchSize 0L transform with Shuffle = false; DropLast = false }

    let validate (o: LoaderOptions) =
        Guard.positive "BatchSize" o.BatchSize
        if o.Workers < 0 then Guard.fail "Workers" o.Workers "0 (no prefetch) or a positive number of threads"
        if o.Workers > 0 then Guard.positive "Prefetch" o.Prefetch
        if o.OnBadSample <> OnBadSample.Stop && o.OnBadSample <> OnBadSample.Skip then
            Guard.fail "OnBadSample" o.OnBadSample "Stop or Skip"
        Guard.notNull "Transform" o.Transform
        o

/// One batch. Created outside any dispose scope: the consumer owns it and disposes it (Dispose
/// frees both tensors), or moves the tensors into a scope of its own.
type Batch =
    { /// [B, C, H, W] float32 (B smaller than BatchSize for a kept last batch or skipped samples).
      Inputs: Tensor
      /// [B] int64 class labels.
      Labels: Tensor
      Epoch: int
      /// The batch's index within its epoch (0-based).
      Iteration: int
      /// The dataset index of each sample of the batch.
      Indices: int[] }
    interface IDisposable with
        member b.Dispose() =
            b.Inputs.Dispose()
            b.Labels.Dispose()

/// A sample left out under OnBadSample.Skip.
type SkippedSample =
    { /// Its dataset index.
      Index: int
      /// Its file (or description).
      Source: string
      /// The error's message: the file and why it could not be read.
      Reason: string }

module Loader =

    /// The data order of an epoch: a permutation of 0 .. n-1 drawn with torch.randperm from a
    /// generator seeded by (seed, epoch) alone, so a resumed run sees the same batches (the order
    /// of pretraining and fine-tuning; unchanged from Mae's first releases).
    let epochOrder (seed: int64) (epoch: int) (n: int) : int[] =
        use g = new torch.Generator(uint64 (seed * 1000003L + int64 epoch + 17L), torch.CPU)
        use p = torch.randperm(int64 n, generator = g)
        p.data<int64>().ToArray() |> Array.map int

    let private splitmix (z: uint64) =
        let z = (z ^^^ (z >>> 30)) * 0xbf58476d1ce4e5b9UL
        let z = (z ^^^ (z >>> 27)) * 0x94d049bb133111ebUL
        z ^^^ (z >>> 31)

    /// The seed of the generator of the sample at `position` of epoch `epoch`'s order: a
    /// SplitMix64 hash of (seed, epoch, position), non-negative.
    let sampleSeed (seed: int64) (epoch: int) (position: int) : int =
        let golden = 0x9e3779b97f4a7c15UL
        let z = splitmix (splitmix (splitmix (uint64 seed + golden) + uint64 epoch + golden) + uint64 position + golden)
        int (z >>> 33)

    /// Waits for a worker's result; the worker's exception is rethrown as it was raised.
    let internal await (task: Task<'T>) (cancel: CancellationToken) : 'T =
        try
            task.Wait cancel
            task.Result
        with :? AggregateException as e when not (isNull e.InnerException) ->
            ExceptionDispatchInfo.Capture(e.InnerException).Throw()
            Unchecked.defaultof<'T>

/// Batches of `dataset` as `options` say. Thread-safe to read from one consumer per epoch
/// sequence; several sequences may run at once.
type BatchLoader(dataset: IDataset, options: LoaderOptions) =
    do Guard.notNull "dataset" dataset
    let o = LoaderOptions.validate options
    let n = dataset.Count
    let b = o.BatchSize
    do
        if n = 0 then Guard.fail "dataset" "empty" "at least one sample"
        if o.DropLast && n < b then
            Guard.fail "BatchSize" b (sprintf "at most the %d samples of the dataset when the last partial batch is dropped" n)
    let iterations = if o.DropLast then n / b else (n + b - 1) / b
    let skipped = ConcurrentDictionary<int, SkippedSample>()

    /// Data held in memory read without a transform: a batch is one index_select (the same values
    /// as stacking the samples one by one, without a copy per sample).
    let inMemory =
        match dataset with
        | :? InMemoryDataset as m when obj.ReferenceEquals(o.Transform, Transforms.identity) -> Some m
        | _ -> None

    /// Builds batch `iteration` of `epoch` from the epoch's `order`; None when every sample was skipped.
    let build (epoch: int) (order: int[]) (iteration: int) : Batch option =
        use _ = torch.NewDisposeScope()
        let first = iteration * b
        let count = min b (n - first)
        match inMemory with
        | Some m ->
            let indices = order.[first .. first + count - 1]
            use idx = torch.tensor(indices |> Array.map int64)
            let x = m.Inputs.index_select(0L, idx).to_type(ScalarType.Float32).contiguous()
            let y = m.Labels.index_select(0L, idx)
            Some { Inputs = x.DetachFromDisposeScope(); Labels = y.DetachFromDisposeScope()
                   Epoch = epoch; Iteration = iteration; Indices = indices }
        | None ->
            let inputs = ResizeArray<Tensor>(count)
            let labels = ResizeArray<int64>(count)
            let indices = ResizeArray<int>(count)
            for position in first .. first + count - 1 do
                let index = order.[position]
                let sample =
                    try Some(dataset.Read index)
                    with :? InvalidDataException as e when o.OnBadSample = OnBadSample.Skip ->
                        skipped.TryAdd(index, { Index = index; Source = dataset.Describe index; Reason = e.Message }) |> ignore
                        None
                match sample with
                | None -> ()
                | Some s ->
                    let x = o.Transform.Invoke(Random(Loader.sampleSeed o.Seed epoch position), s.Input)
                    if isNull x || x.ndim <> s.Input.ndim then
                        raise (InvalidOperationException(sprintf "the transform gave %s for %s; expected a tensor of the sample's rank %d." (if isNull x then "null" else Guard.shapeOf x) (dataset.Describe index) s.Input.ndim))
                    if inputs.Count > 0 && x.shape <> inputs.[0].shape then
                        raise (InvalidOperationException(
                            sprintf "%s is %s after the transform but %s is %s: the transform must give every sample one size (Transforms.pretrain / Transforms.evaluation)."
                                (dataset.Describe index) (Guard.shapeOf x) (dataset.Describe indices.[0]) (Guard.shapeOf inputs.[0])))
                    inputs.Add x
                    labels.Add s.Label
                    indices.Add index
            if inputs.Count = 0 then None
            else
                let x = torch.stack(inputs, 0L).to_type(ScalarType.Float32).contiguous() // [B, C, ...]
                let y = torch.tensor(labels.ToArray()) // [B]
                Some { Inputs = x.DetachFromDisposeScope(); Labels = y.DetachFromDisposeScope()
                       Epoch = epoch; Iteration = iteration; Indices = indices.ToArray() }

    let orderOf (epoch: int) = if o.Shuffle then Loader.epochOrder o.Seed epoch n else Array.init n id

    let checkStart (epoch: int) (startIteration: int) =
        if epoch < 0 then Guard.fail "epoch" epoch "a non-negative epoch"
        if startIteration < 0 || startIteration > iterations then
            Guard.fail "startIteration" startIteration (sprintf "an iteration in [0, %d]" iterations)

    /// Batches built on the consumer's thread, one when asked for.
    let onConsumerThread (epoch: int) (startIteration: int) (cancel: CancellationToken) =
        seq {
            let order = orderOf epoch
            for it in startIteration .. iterations - 1 do
                cancel.ThrowIfCancellationRequested()
                match build epoch order it with
                | Some batch -> yield batch
                | None -> ()
        }

    /// Batches built by `o.Workers` threads, at most `o.Prefetch` ahead, handed out in order.
    let prefetched (epoch: int) (startIteration: int) (cancel: CancellationToken) =
        seq {
            let order = orderOf epoch
            let count = iterations - startIteration
            use stop = CancellationTokenSource.CreateLinkedTokenSource cancel
            use slots = new SemaphoreSlim(o.Prefetch, o.Prefetch)
            let results = Array.init count (fun _ -> TaskCompletionSource<Batch option>(TaskCreationOptions.RunContinuationsAsynchronously))
            let next = [| -1 |]
            let work () =
                try
                    let mutable go = true
                    while go do
                        slots.Wait stop.Token // a slot per batch in progress or ready
                        let k = Interlocked.Increment(&next.[0])
                        if k >= count then go <- false
                        else
                            try results.[k].SetResult(build epoch order (startIteration + k))
                            with e -> results.[k].SetException e
                with :? OperationCanceledException -> ()
            let threads =
                Array.init (min o.Workers (max count 1)) (fun w ->
                    Thread(ThreadStart(work), IsBackground = true, Name = sprintf "Mae batch loader %d" w))
            for t in threads do t.Start()
            let consumed = [| 0 |]
            try
                for k in 0 .. count - 1 do
                    cancel.ThrowIfCancellationRequested() // also when batch k is already built
                    let batch = Loader.await results.[k].Task cancel
                    consumed.[0] <- k + 1
                    slots.Release() |> ignore
                    match batch with
                    | Some batch -> yield batch
                    | None -> ()
            finally
                stop.Cancel()
                for t in threads do t.Join()
                // batches built ahead but never handed out are the loader's to free
                for k in consumed.[0] .. count - 1 do
                    let t = results.[k].Task
                    if t.IsCompletedSuccessfully then
                        match t.Result with
                        | Some batch -> (batch :> IDisposable).Dispose()
                        | None -> ()
        }

    member _.Dataset = dataset
    member _.Options = o
    /// Batches per epoch: N / B (DropLast) or ceil(N / B).
    member _.IterationsPerEpoch = iterations

    /// The dataset order of `epoch`: Loader.epochOrder (Shuffle) or 0 .. N-1.
    member _.Order(epoch: int) : int[] =
        checkStart epoch 0
        orderOf epoch

    /// The batches of `epoch` from iteration `startIteration` on (0 = the whole epoch; k = what
    /// an uninterrupted run sees from its k-th batch on), in order. The batches are the same
    /// with and without prefetch and with any number of workers. A batch all of whose samples were
    /// skipped is left out (the following batches keep their Iteration). Each batch is the
    /// consumer's to dispose. A worker's exception (e.g. the InvalidDataException naming a bad file)
    /// is raised on the consumer's thread as it was raised; `cancel` stops the workers and raises
    /// OperationCanceledException. Leaving the sequence early stops the workers and frees the
    /// batches they built ahead.
    member _.Epoch(epoch: int, startIteration: int, cancel: CancellationToken) : seq<Batch> =
        checkStart epoch startIteration
        if o.Workers = 0 then onConsumerThread epoch startIteration cancel else prefetched epoch startIteration cancel

    /// The batches of a whole epoch (`Epoch(epoch, 0, CancellationToken.None)`).
    member this.Epoch(epoch: int) = this.Epoch(epoch, 0, CancellationToken.None)

    /// Samples left out so far under OnBadSample.Skip, each once, by dataset index. With workers,
    /// this includes batches built ahead and not yet consumed.
    member _.Skipped: SkippedSample[] = skipped.Values |> Seq.sortBy (fun s -> s.Index) |> Array.ofSeq

    /// The number of distinct samples skipped so far.
    member _.SkippedCount = skipped.Count
