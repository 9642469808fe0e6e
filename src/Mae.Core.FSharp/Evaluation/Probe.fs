/// Evaluating an encoder without training it: features, a linear probe (MAE's recipe: BatchNorm
/// without affine parameters, then a linear layer) and a k-NN classifier.
module Mae.Probe

open System
open TorchSharp
open TorchSharp.Modules

/// Runs `features` ([B, ...] -> [B, D]) over `inputs` in batches, no gradients, one dispose scope
/// per batch; returns [N, D] on the CPU (the caller disposes it).
let extract (features: Tensor -> Tensor) (device: Device) (batchSize: int) (inputs: Tensor) : Tensor =
    Guard.positive "batchSize" batchSize
    Guard.nonEmptyBatch "inputs" inputs
    use _ = torch.no_grad()
    let n = inputs.shape.[0]
    let chunks =
        [| for start in 0L .. int64 batchSize .. n - 1L do
               use scope = torch.NewDisposeScope()
               let len = min (int64 batchSize) (n - start)
               let batch = inputs.narrow(0L, start, len).``to``(device)
               yield (features batch).cpu().MoveToOuterDisposeScope() |]
    let all = torch.cat(chunks, 0L)
    for c in chunks do c.Dispose()
    all

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
    use eq = logits.argmax(1L).eq(labels)
    eq.to_type(ScalarType.Float64).mean().item<float>()

let private predictAll (head: LinearHead) (x: Tensor) =
    use _ = torch.no_grad()
    head.eval ()
    head.forward(x)

/// Trains the linear head on frozen features trainX [N, D] / trainY [N] and reports accuracies.
let linear (options: LinearProbeOptions) (classes: int) (trainX: Tensor) (trainY: Tensor) (testX: Tensor) (testY: Tensor) =
    Guard.rank "trainX" 2 "[N, D]" trainX
    Guard.rank "testX" 2 "[N, D]" testX
    Guard.positive "Epochs" options.Epochs
    Guard.positive "BatchSize" options.BatchSize
    Guard.positive "classes" classes
    torch.manual_seed(options.Seed) |> ignore
    let n, d = int trainX.shape.[0], int trainX.shape.[1]
    use head = new LinearHead(d, classes)
    use opt = torch.optim.SGD(head.parameters(), options.Lr, momentum = 0.9, weight_decay = options.WeightDecay)
    let perEpoch = max 1 (n / options.BatchSize)
    let total = perEpoch * options.Epochs
    use g = new Generator(uint64 options.Seed, torch.CPU)
    let mutable it = 0
    for _ in 1 .. options.Epochs do
        head.train ()
        use order = torch.randperm(int64 n, generator = g)
        for b in 0 .. perEpoch - 1 do
            use _ = torch.NewDisposeScope()
            for pg in opt.ParamGroups do
                pg.LearningRate <- Optim.scheduledLr options.Lr 0.0 perEpoch total it
            let idx = order.narrow(0L, int64 (b * options.BatchSize), int64 (min options.BatchSize n))
            let loss = torch.nn.functional.cross_entropy(head.forward(trainX.index_select(0L, idx)), trainY.index_select(0L, idx))
            opt.zero_grad()
            loss.backward()
            opt.step() |> ignore
            it <- it + 1
    let trainAcc = (use l = predictAll head trainX in accuracy l trainY)
    let testAcc = (use l = predictAll head testX in accuracy l testY)
    { TrainAccuracy = trainAcc; TestAccuracy = testAcc }

/// The linear probe of a feature function ([B, ...] -> [B, D], e.g. a frozen encoder): features of
/// both splits computed in batches of `batchSize` on `device`, then `linear`.
let linearOn (options: LinearProbeOptions) (classes: int) (features: Tensor -> Tensor) (device: Device) (batchSize: int)
             (train: Data.ImageSet) (test: Data.ImageSet) =
    use trainX = extract features device batchSize train.Images
    use testX = extract features device batchSize test.Images
    linear options classes trainX train.Labels testX test.Labels

/// Weighted k-NN on cosine similarity (each of the k neighbours votes exp(sim / temperature)).
/// Returns the test accuracy.
let knn (k: int) (temperature: float) (classes: int) (trainX: Tensor) (trainY: Tensor) (testX: Tensor) (testY: Tensor) =
    Guard.rank "trainX" 2 "[N, D]" trainX
    Guard.rank "testX" 2 "[N, D]" testX
    Guard.positive "k" k
    use _ = torch.no_grad()
    use train = torch.nn.functional.normalize(trainX, dim = 1L)
    let k = min k (int trainX.shape.[0])
    let mutable correct = 0L
    let m = testX.shape.[0]
    for start in 0L .. 512L .. m - 1L do
        use _ = torch.NewDisposeScope()
        let len = min 512L (m - start)
        let q = torch.nn.functional.normalize(testX.narrow(0L, start, len), dim = 1L)
        let sims = q.matmul(train.t())
        let struct (topSim, topIdx) = sims.topk(k, dim = 1)
        let votes = torch.zeros(len, int64 classes)
        let neighbourLabels = trainY.index_select(0L, topIdx.reshape(-1L)).reshape(len, int64 k)
        votes.scatter_add_(1L, neighbourLabels, (topSim / temperature).exp()) |> ignore
        correct <- correct + votes.argmax(1L).eq(testY.narrow(0L, start, len)).sum().item<int64>()
    float correct / float m
