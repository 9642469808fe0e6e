/// Evaluating an encoder without training it: features, a linear probe (MAE's recipe: BatchNorm
/// without affine parameters, then a linear layer) and a k-NN classifier.
module Mae.Probe

open System
open TorchSharp
open TorchSharp.Modules

/// The features [B, D] of one batch [B, ...] on the CPU, computed on `device` in a dispose scope
/// of its own (the result is outside it: the caller disposes it).
let private featuresOfBatch (features: Tensor -> Tensor) (device: Device) (x: Tensor) =
    use _ = torch.NewDisposeScope()
    let len = x.shape.[0]
    let z = features (x.``to``(device))
    if isNull z || z.ndim <> 2L || z.shape.[0] <> len then
        Guard.fail "features" (if isNull z then "null" else Guard.shapeOf z) (sprintf "[B, D] with B = %d, the rows of the batch" len)
    z.cpu().MoveToOuterDisposeScope()

/// Runs `features` ([B, ...] -> [B, D]) over `inputs` in batches, no gradients; returns [N, D] on
/// the CPU (the caller disposes it). Each batch has its own dispose scope and ends with
/// Runtime.endOfStep, so that nothing native waits for the garbage collector between batches.
let extract (features: Tensor -> Tensor) (device: Device) (batchSize: int) (inputs: Tensor) : Tensor =
    Guard.positive "batchSize" batchSize
    Guard.nonEmptyBatch "inputs" inputs
    use _ = torch.no_grad()
    let n = inputs.shape.[0]
    let chunks = Collections.Generic.List<Tensor>()
    try
        for start in 0L .. int64 batchSize .. n - 1L do
            use x = inputs.narrow(0L, start, min (int64 batchSize) (n - start))
            chunks.Add(featuresOfBatch features device x)
            Runtime.endOfStep ()
        torch.cat(chunks.ToArray(), 0L)
    finally
        for c in chunks do c.Dispose()

/// Features [N, D] and labels [N] (on the CPU; the caller disposes both) of the samples `loader`
/// reads in its epoch 0, in the loader's order: with an evaluation loader (LoaderOptions.evaluation)
/// every sample of the dataset in dataset order, read on demand, so that a dataset larger than
/// memory is probed with only its features held. Samples the loader skips (OnBadSample.Skip) are
/// left out of both. Each batch has its own dispose scope and ends with Runtime.endOfStep.
/// InvalidDataException (naming the file) for a sample that cannot be read under OnBadSample.Stop;
/// ArgumentException when no sample at all could be read.
let extractFrom (features: Tensor -> Tensor) (device: Device) (loader: Data.BatchLoader) : Tensor * Tensor =
    Guard.notNull "loader" loader
    use _ = torch.no_grad()
    let xs = Collections.Generic.List<Tensor>()
    let ys = Collections.Generic.List<Tensor>()
    try
        for batch in loader.Epoch 0 do
            use batch = batch
            xs.Add(featuresOfBatch features device batch.Inputs)
            ys.Add(batch.Labels.clone ())
            Runtime.endOfStep ()
        if xs.Count = 0 then
            Guard.fail "loader" (sprintf "%d samples, all skipped" loader.Dataset.Count) "at least one sample that can be read"
        torch.cat(xs.ToArray(), 0L), torch.cat(ys.ToArray(), 0L)
    finally
        for t in Seq.append xs ys do t.Dispose()

type LinearProbeOptions =
    { Epochs: int
      BatchSize: int
      /// Peak learning rate of SGD with momentum 0.9 (cosine schedule, 1 warmup epoch).
      Lr: float
      WeightDecay: float
      Seed: int64 }

let defaultLinearOptions = { Epochs = 20; BatchSize = 256; Lr = 0.1; WeightDecay = 0.0; Seed = 0L }

type ProbeResult =
    { TrainAccuracy: float
      TestAccuracy: float
      /// The mean over the classes present in the test split of the share of their samples
      /// predicted right (balanced accuracy): what a rare class (an anomaly) shows that accuracy
      /// hides.
      TestBalancedAccuracy: float }

/// BatchNorm1d(affine = false, eps 1e-6) then Linear: MAE's linear-probe head.
type LinearHead(dim: int, classes: int) as this =
    inherit torch.nn.Module<Tensor, Tensor>("LinearHead")
    let bn = torch.nn.BatchNorm1d(int64 dim, eps = 1e-6, affine = false)
    let head = torch.nn.Linear(int64 dim, int64 classes)
    do
        this.RegisterComponents()
        use _ = torch.no_grad()
        torch.nn.init.trunc_normal_(head.weight, std = 0.01) |> ignore
        torch.nn.init.zeros_(head.bias) |> ignore
    override _.forward(x) = head.forward(bn.forward(x))

/// Share of rows where argmax(logits) = labels.
let accuracy (logits: Tensor) (labels: Tensor) =
    use _ = torch.NewDisposeScope()
    logits.argmax(1L).eq(labels).to_type(ScalarType.Float64).mean().item<float>()

/// Balanced accuracy: the mean over the classes present in `labels` of each class's recall.
let balancedAccuracy (logits: Tensor) (labels: Tensor) =
    use _ = torch.NewDisposeScope()
    let predicted = logits.argmax(1L).cpu().data<int64>().ToArray()
    let truth = labels.cpu().data<int64>().ToArray()
    truth
    |> Array.indexed
    |> Array.groupBy snd
    |> Array.averageBy (fun (_, members) -> members |> Array.averageBy (fun (i, y) -> if predicted.[i] = y then 1.0 else 0.0))

/// Accuracy (and balanced accuracy) of the head on features x [N, D] against labels [N], in evaluation mode.
let private headAccuracy (head: LinearHead) (x: Tensor) (labels: Tensor) =
    use _ = torch.NewDisposeScope()
    use _ = torch.no_grad()
    head.eval ()
    let logits = head.forward x
    accuracy logits labels, balancedAccuracy logits labels

/// Frozen features of a train and a test split, x [N, D] and [M, D], with their labels [N] and
/// [M] in [0, classes): everything a native index check would otherwise catch.
let private checkSplits (classes: int) (trainX: Tensor) (trainY: Tensor) (testX: Tensor) (testY: Tensor) =
    Guard.rank "trainX" 2 "[N, D]" trainX
    Guard.rank "testX" 2 "[M, D]" testX
    Guard.nonEmptyBatch "trainX" trainX
    Guard.nonEmptyBatch "testX" testX
    Guard.positive "classes" classes
    let d = trainX.shape.[1]
    if testX.shape.[1] <> d then
        Guard.fail "testX" (Guard.shapeOf testX) (sprintf "[M, %d]: the feature width D = %d of trainX" d d)
    Guard.labelsWithin "trainY" classes trainX.shape.[0] "trainX" trainY
    Guard.labelsWithin "testY" classes testX.shape.[0] "testX" testY

/// Trains the linear head on frozen features trainX [N, D] / trainY [N] and reports accuracies.
/// Labels are int64 in [0, classes).
let linear (options: LinearProbeOptions) (classes: int) (trainX: Tensor) (trainY: Tensor) (testX: Tensor) (testY: Tensor) =
    Guard.positive "Epochs" options.Epochs
    Guard.positive "BatchSize" options.BatchSize
    checkSplits classes trainX trainY testX testY
    torch.manual_seed(options.Seed) |> ignore
    let n, d = int trainX.shape.[0], int trainX.shape.[1]
    use head = new LinearHead(d, classes)
    use opt = torch.optim.SGD(head.parameters(), options.Lr, momentum = 0.9, weight_decay = options.WeightDecay)
    let perEpoch = max 1 (n / options.BatchSize)
    let total = perEpoch * options.Epochs
    use g = new Generator(uint64 options.Seed, torch.CPU)
    // one SGD step on the b-th batch of `order`
    let step (order: Tensor) (b: int) (it: int) =
        use _ = torch.NewDisposeScope()
        for pg in opt.ParamGroups do
            pg.LearningRate <- Optim.scheduledLr options.Lr 0.0 perEpoch total it
        let idx = order.narrow(0L, int64 (b * options.BatchSize), int64 (min options.BatchSize n))
        let loss = torch.nn.functional.cross_entropy(head.forward(trainX.index_select(0L, idx)), trainY.index_select(0L, idx))
        opt.zero_grad()
        loss.backward()
        opt.step() |> ignore
    let mutable it = 0
    for _ in 1 .. options.Epochs do
        head.train ()
        use order = torch.randperm(int64 n, generator = g)
        for b in 0 .. perEpoch - 1 do
            step order b it
            Runtime.endOfStep ()
            it <- it + 1
    let trainAcc, _ = headAccuracy head trainX trainY
    let testAcc, testBalanced = headAccuracy head testX testY
    Runtime.endOfStep ()
    { TrainAccuracy = trainAcc; TestAccuracy = testAcc; TestBalancedAccuracy = testBalanced }

/// Features and labels of a train and a test loader (`extractFrom`), given to `f` and freed after it.
let private onFeatures (features: Tensor -> Tensor) (device: Device) (train: Data.BatchLoader) (test: Data.BatchLoader)
                       (f: Tensor -> Tensor -> Tensor -> Tensor -> 'r) : 'r =
    let trainX, trainY = extractFrom features device train
    use trainX = trainX
    use trainY = trainY
    let testX, testY = extractFrom features device test
    use testX = testX
    use testY = testY
    f trainX trainY testX testY

/// Labels of a split for `classes` (checked before any feature is computed).
let private checkLabels (name: string) (classes: int) (split: Data.ImageSet) =
    Guard.positive "classes" classes
    Guard.labelsWithin (name + " labels") classes split.Images.shape.[0] (name + " images") split.Labels

/// The classes of a dataset against `classes` (checked before any feature is computed): a
/// dataset labels its samples 0 .. ClassNames.Length - 1.
let private checkClasses (name: string) (classes: int) (data: Data.IDataset) =
    Guard.positive "classes" classes
    Guard.notNull name data
    if data.ClassNames.Length > classes then
        Guard.fail (name + " classes") data.ClassNames.Length
            (sprintf "at most classes = %d: its labels must lie in [0, %d)" classes classes)

/// An evaluation loader over inputs [N, ...] and labels [N] held in memory, read by the loader's
/// fast path (one index_select per batch, no copy per sample).
let internal inMemoryLoader (batchSize: int) (inputs: Tensor) (labels: Tensor) =
    Data.BatchLoader(
        Data.InMemoryDataset(inputs, labels),
        { Data.LoaderOptions.evaluation batchSize Data.Transforms.identity with Workers = 0 })

let private loaderOver (batchSize: int) (split: Data.ImageSet) = inMemoryLoader batchSize split.Images split.Labels

/// The linear probe of a feature function ([B, ...] -> [B, D], e.g. a frozen encoder) on two
/// datasets read on demand through evaluation loaders of `loaderOptions` (batch size, per-sample
/// transform such as Transforms.forEvaluation, workers, stop or skip on a bad file): only the
/// features [N, D] are held in memory. Labels lie in [0, classes): a dataset with more class names
/// is an ArgumentException before any feature is computed.
let linearOnData (options: LinearProbeOptions) (classes: int) (features: Tensor -> Tensor) (device: Device)
                 (loaderOptions: Data.LoaderOptions) (train: Data.IDataset) (test: Data.IDataset) =
    checkClasses "train" classes train
    checkClasses "test" classes test
    let evaluation = { loaderOptions with Shuffle = false; DropLast = false }
    onFeatures features device (Data.BatchLoader(train, evaluation)) (Data.BatchLoader(test, evaluation)) (linear options classes)

/// The linear probe of a feature function ([B, ...] -> [B, D], e.g. a frozen encoder): features of
/// both splits computed in batches of `batchSize` on `device`, then `linear`.
let linearOn (options: LinearProbeOptions) (classes: int) (features: Tensor -> Tensor) (device: Device) (batchSize: int)
             (train: Data.ImageSet) (test: Data.ImageSet) =
    checkLabels "train" classes train
    checkLabels "test" classes test
    Guard.positive "batchSize" batchSize
    onFeatures features device (loaderOver batchSize train) (loaderOver batchSize test) (linear options classes)

/// Weighted k-NN on cosine similarity (each of the k neighbours votes exp(sim / temperature)).
/// k in [1, N] for N training samples, temperature > 0, labels int64 in [0, classes).
/// Returns the test accuracy.
let knn (k: int) (temperature: float) (classes: int) (trainX: Tensor) (trainY: Tensor) (testX: Tensor) (testY: Tensor) =
    Guard.positive "k" k
    Guard.positiveNumber "temperature" temperature
    checkSplits classes trainX trainY testX testY
    if int64 k > trainX.shape.[0] then
        Guard.fail "k" k (sprintf "at most the number of training samples N = %d" trainX.shape.[0])
    use _ = torch.no_grad()
    use train = torch.nn.functional.normalize(trainX, dim = 1L)
    use trainT = train.t()
    use invTemperature = (1.0 / temperature).ToScalar()
    let m = testX.shape.[0]
    // correct votes among test rows [start, start + 512)
    let hits start =
        use _ = torch.NewDisposeScope()
        let len = min 512L (m - start)
        let q = torch.nn.functional.normalize(testX.narrow(0L, start, len), dim = 1L)
        let struct (topSim, topIdx) = q.matmul(trainT).topk(k, dim = 1)
        let votes = torch.zeros(len, int64 classes)
        let neighbourLabels = trainY.index_select(0L, topIdx.reshape(-1L)).reshape(len, int64 k)
        votes.scatter_add_(1L, neighbourLabels, topSim.mul_(invTemperature).exp_()) |> ignore
        votes.argmax(1L).eq(testY.narrow(0L, start, len)).sum().item<int64>()
    let mutable correct = 0L
    for start in 0L .. 512L .. m - 1L do
        correct <- correct + hits start
        Runtime.endOfStep ()
    float correct / float m

/// k-NN accuracy of a feature function on two datasets read on demand through evaluation loaders
/// of `loaderOptions` (see `linearOnData`): the test split classified by its `k` nearest training
/// samples (`knn`). Classes and k (at most the training samples) are checked before any feature
/// is computed.
let knnOnData (k: int) (temperature: float) (classes: int) (features: Tensor -> Tensor) (device: Device)
              (loaderOptions: Data.LoaderOptions) (train: Data.IDataset) (test: Data.IDataset) =
    checkClasses "train" classes train
    checkClasses "test" classes test
    Guard.positive "k" k
    if k > train.Count then Guard.fail "k" k (sprintf "at most the number of training samples N = %d" train.Count)
    let evaluation = { loaderOptions with Shuffle = false; DropLast = false }
    onFeatures features device (Data.BatchLoader(train, evaluation)) (Data.BatchLoader(test, evaluation)) (knn k temperature classes)

/// k-NN accuracy of a feature function: the test split classified by its `k` nearest training
/// images (`knn`), features computed in batches of `batchSize` on `device`. Labels and k are
/// checked before any feature is computed.
let knnOn (k: int) (temperature: float) (classes: int) (features: Tensor -> Tensor) (device: Device) (batchSize: int)
          (train: Data.ImageSet) (test: Data.ImageSet) =
    checkLabels "train" classes train
    checkLabels "test" classes test
    Guard.positive "k" k
    if int64 k > train.Images.shape.[0] then
        Guard.fail "k" k (sprintf "at most the number of training samples N = %d" train.Images.shape.[0])
    Guard.positive "batchSize" batchSize
    onFeatures features device (loaderOver batchSize train) (loaderOver batchSize test) (knn k temperature classes)
