/// Evaluating an encoder without training it: features, a linear probe (MAE's recipe: BatchNorm
/// without affine parameters, then a linear layer) and a k-NN classifier.
module Mae.Probe

open System
open TorchSharp
open TorchSharp.Modules

/// Runs `features` ([B, ...] -> [B, D]) over `inputs` in batches, no gradients; returns [N, D] on
/// the CPU (the caller disposes it). Each batch has its own dispose scope and ends with
/// Runtime.endOfStep, so that nothing native waits for the garbage collector between batches.
let extract (features: Tensor -> Tensor) (device: Device) (batchSize: int) (inputs: Tensor) : Tensor =
    Guard.positive "batchSize" batchSize
    Guard.nonEmptyBatch "inputs" inputs
    use _ = torch.no_grad()
    let n = inputs.shape.[0]
    // one batch [len, ...] -> its features [len, D] on the CPU, outside the batch's scope
    let batch start =
        use _ = torch.NewDisposeScope()
        let len = min (int64 batchSize) (n - start)
        let z = features (inputs.narrow(0L, start, len).``to``(device))
        if isNull z || z.ndim <> 2L || z.shape.[0] <> len then
            Guard.fail "features" (if isNull z then "null" else Guard.shapeOf z) (sprintf "[B, D] with B = %d, the rows of the batch" len)
        z.cpu().MoveToOuterDisposeScope()
    let chunks = Collections.Generic.List<Tensor>()
    try
        for start in 0L .. int64 batchSize .. n - 1L do
            chunks.Add(batch start)
            Runtime.endOfStep ()
        torch.cat(chunks.ToArray(), 0L)
    finally
        for c in chunks do c.Dispose()

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
      TestAccuracy: float }

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

/// Accuracy of the head on features x [N, D] against labels [N], in evaluation mode.
let private headAccuracy (head: LinearHead) (x: Tensor) (labels: Tensor) =
    use _ = torch.NewDisposeScope()
    use _ = torch.no_grad()
    head.eval ()
    accuracy (head.forward x) labels

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
    let trainAcc = headAccuracy head trainX trainY
    let testAcc = headAccuracy head testX testY
    Runtime.endOfStep ()
    { TrainAccuracy = trainAcc; TestAccuracy = testAcc }

/// Labels of a split for `classes` (checked before any feature is computed).
let private checkLabels (name: string) (classes: int) (split: Data.ImageSet) =
    Guard.positive "classes" classes
    Guard.labelsWithin (name + " labels") classes split.Images.shape.[0] (name + " images") split.Labels

/// The linear probe of a feature function ([B, ...] -> [B, D], e.g. a frozen encoder): features of
/// both splits computed in batches of `batchSize` on `device`, then `linear`.
let linearOn (options: LinearProbeOptions) (classes: int) (features: Tensor -> Tensor) (device: Device) (batchSize: int)
             (train: Data.ImageSet) (test: Data.ImageSet) =
    checkLabels "train" classes train
    checkLabels "test" classes test
    use trainX = extract features device batchSize train.Images
    use testX = extract features device batchSize test.Images
    linear options classes trainX train.Labels testX test.Labels

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
    use trainX = extract features device batchSize train.Images
    use testX = extract features device batchSize test.Images
    knn k temperature classes trainX train.Labels testX test.Labels
