/// Fine-tuning: the pretrained encoder plus a classification head on mean-pooled tokens, trained
/// end to end without masking, with layer-wise learning-rate decay. The encoder may run at another
/// image size: its positional table is then interpolated to the new patch grid.
namespace Mae

open System
open System.Threading
open TorchSharp
open TorchSharp.Modules

/// The classification head of fine-tuning (MAE's global pool): fc_norm.* then head.* on the mean
/// of the patch tokens.
type ClassifierHead(dim: int, classes: int) as this =
    inherit Part("ClassifierHead")
    let fc_norm = torch.nn.LayerNorm(int64 dim, eps = 1e-6)
    let head = torch.nn.Linear(int64 dim, int64 classes)
    do this.RegisterComponents()

    /// MAE's main_finetune.py: head weights from a truncated normal of std 2e-5.
    override _.Initialize() =
        use _ = torch.no_grad()
        torch.nn.init.trunc_normal_(head.weight, std = 2e-5) |> ignore

    /// Pooled features [N, D] -> logits [N, classes].
    member _.Forward(pooled: Tensor) = head.forward(fc_norm.forward(pooled))

/// A classifier on the masked autoencoder's encoder: the same input adapter and encoder parts
/// (so pretrained weights load by name: patch_embed.*, cls_token, pos_embed, blocks.N.*, norm.*)
/// and a head (fc_norm.*, head.*) on the mean of the patch tokens.
type VitClassifier(config: MaeConfig, classes: int) as this =
    inherit PartsModule("VitClassifier")
    let cfg = MaeConfig.validate { config with EncoderInput = VisibleOnly }
    do Guard.positive "classes" classes
    let adapter = Build.adapter cfg
    let encoder = Build.encoder cfg adapter
    let head = new ClassifierHead(cfg.EmbedDim * adapter.RowsPerSample, classes)
    let adapterNames = set [ for struct (n, _) in adapter.named_parameters() -> n ]
    do
        for part in [ adapter :> Part; encoder; head ] do
            this.Adopt part
        Init.weights this
        for part in this.Parts do
            part.Initialize()

    member _.Config = cfg

    /// The input adapter (it checks batches: `Adapter.Check`).
    member _.Adapter = adapter

    /// The encoder side's parameters (adapter and encoder), by name.
    member _.EncoderParameters =
        [| for part in [ adapter :> Part; encoder ] do
               for struct (n, p) in part.named_parameters() -> n, (p :> Tensor) |]

    /// Number of classes the head predicts.
    member _.Classes = classes

    /// Copies the encoder weights of a pretrained MAE, every one of them: a tensor missing on
    /// either side or of another shape is an ArgumentException naming each (pos_embed is
    /// interpolated, bicubic, when the image patch grids differ, as MAE's interpolate_pos_embed).
    member this.LoadEncoder(mae: MaskedAutoencoder) =
        Guard.notNull "mae" mae
        let mine, theirs = cfg.Input.Grid, mae.Config.Input.Grid
        let resizes = mine <> theirs && mine.Length = 2 && theirs.Length = 2
        let source =
            let all = dict (Weights.named mae)
            [| for n in mae.EncoderParameterNames -> n, all.[n] |]
        let convert (name: string) (src: Tensor) (_: Tensor) =
            if name = "pos_embed" && resizes then
                PosEmbed.interpolate2d src (theirs.[0], theirs.[1]) (mine.[0], mine.[1]) cfg.ClsToken
            else src
        Weights.copy source this.EncoderParameters (fun n -> n = "pos_embed" && resizes) convert (fun text ->
            ArgumentException(sprintf "mae's encoder does not match this classifier's: %s." text, "mae") :> exn)

    /// batch -> [N, classes] logits from the mean of the patch tokens.
    member _.forward(batch: Tensor) =
        adapter.Check("batch", batch)
        let y = encoder.All(adapter.Embed(adapter.Pieces batch))
        let extra = encoder.Extra
        let pooled = y.narrow(1L, extra, y.shape.[1] - extra).mean([| 1L |])
        let rows = int64 adapter.RowsPerSample
        // a channel-independent series: its channels' pooled vectors side by side
        head.Forward(if rows = 1L then pooled else pooled.reshape(pooled.shape.[0] / rows, rows * pooled.shape.[1]))

    /// Layer index for layer-wise decay: the adapter's embedding, cls token and positions 0,
    /// block i -> i + 1, the rest depth + 1 (MAE's lr_decay.py get_layer_id_for_vit).
    member _.LayerId(name: string) =
        if adapterNames.Contains name || name = "cls_token" || name = "pos_embed" then 0
        elif name.StartsWith "blocks." then Int32.Parse(name.Split('.').[1]) + 1
        else cfg.Depth + 1

type FineTuneOptions =
    { Epochs: int
      BatchSize: int
      /// Learning rate per 256 images (MAE fine-tuning: 5e-4 for ViT-B).
      BaseLr: float
      /// Multiplier per layer below the head (MAE: 0.65–0.75).
      LayerDecay: float
      WeightDecay: float
      WarmupEpochs: float
      LabelSmoothing: float
      /// Seed of the data order (and of each sample's augmentation).
      Seed: int64
      /// Per-sample transform of the training data (e.g. Transforms.forPretraining, or
      /// Transforms.identity for data already at the model's size and normalised); the loader
      /// gives each sample a generator seeded by (Seed, epoch, position).
      Transform: Func<Random, Tensor, Tensor>
      /// Threads reading batches ahead (0: none).
      Workers: int
      /// Stop on, or skip and count, a sample that cannot be read.
      OnBadSample: Data.OnBadSample }

module FineTune =

    let defaults =
        { Epochs = 5; BatchSize = 128; BaseLr = 1e-3; LayerDecay = 0.75; WeightDecay = 0.05
          WarmupEpochs = 1.0; LabelSmoothing = 0.1; Seed = 0L
          Transform = Data.Transforms.identity; Workers = 0; OnBadSample = Data.OnBadSample.Stop }

    /// Parameter groups with layer-wise learning-rate scales and the decay rule of Optim.decays.
    let groups (m: VitClassifier) (weightDecay: float) (layerDecay: float) =
        let top = m.Config.Depth + 1
        m.named_parameters()
        |> Seq.filter (fun struct (_, p) -> p.requires_grad)
        |> Seq.groupBy (fun struct (n, p) -> m.LayerId n, Optim.decays n p)
        |> Seq.map (fun ((layer, decay), ps) ->
            { Optim.Group.Parameters = ps |> Seq.map (fun struct (_, p) -> p) |> Array.ofSeq
              Optim.Group.WeightDecay = (if decay then weightDecay else 0.0)
              Optim.Group.LrScale = Math.Pow(layerDecay, float (top - layer)) })
        |> Array.ofSeq

    let private validate (o: FineTuneOptions) =
        Guard.positive "Epochs" o.Epochs
        Guard.positive "BatchSize" o.BatchSize
        if not (o.LayerDecay > 0.0 && o.LayerDecay <= 1.0) then Guard.fail "LayerDecay" o.LayerDecay "a number in (0, 1]"
        Guard.notNull "Transform" o.Transform
        if o.Workers < 0 then Guard.fail "Workers" o.Workers "0 (no prefetch) or a positive number of threads"

    /// Trains the classifier on the labelled samples of `data` (each a sample of the model's
    /// modality, e.g. an image [C, H, W]) read on demand: batches of BatchSize from a BatchLoader
    /// (order from (Seed, epoch), the last partial batch left out, Transform per sample, Workers
    /// threads reading ahead), AdamW with layer-wise decay, warmup then cosine per iteration, label
    /// smoothing (MAE's main_finetune.py without mixup). Returns the mean loss of each epoch.
    /// ArgumentException for a bad option, fewer samples than BatchSize or more classes than the
    /// head's; the dataset's InvalidDataException (naming the file) for a sample that cannot be
    /// read under OnBadSample.Stop. Cancelling stops at the end of the current epoch.
    let runOn (m: VitClassifier) (data: Data.IDataset) (o: FineTuneOptions) (cancel: CancellationToken) =
        Runtime.tuneAllocator ()
        Guard.notNull "m" m
        Guard.notNull "data" data
        validate o
        if data.ClassNames.Length > m.Classes then
            Guard.fail "data classes" data.ClassNames.Length (sprintf "at most the classifier's %d classes" m.Classes)
        if data.Count < o.BatchSize then
            Guard.fail "data" (sprintf "%d samples" data.Count) (sprintf "at least BatchSize = %d samples" o.BatchSize)
        let loader =
            Data.BatchLoader(data, { Data.LoaderOptions.training o.BatchSize o.Seed o.Transform with Workers = o.Workers; OnBadSample = o.OnBadSample })
        let device = Runtime.deviceOf m
        let gs = groups m o.WeightDecay o.LayerDecay
        let lr = Optim.scaledLr o.BaseLr o.BatchSize
        use opt = Optim.adamW lr (0.9, 0.999) gs
        let perEpoch = loader.IterationsPerEpoch
        let total = perEpoch * o.Epochs
        let warmup = int (o.WarmupEpochs * float perEpoch)
        let losses = Collections.Generic.List<float>()
        m.train ()
        for epoch in 0 .. o.Epochs - 1 do
            if not cancel.IsCancellationRequested then
                let mutable sum, count = 0.0, 0
                for batch in loader.Epoch epoch do
                    use batch = batch
                    let stepLoss =
                        use _ = torch.NewDisposeScope()
                        Optim.setLr opt gs (Optim.scheduledLr lr 1e-6 warmup total (epoch * perEpoch + batch.Iteration))
                        let x = batch.Inputs.``to``(device)
                        let y = batch.Labels.``to``(device)
                        let loss = torch.nn.functional.cross_entropy(m.forward(x), y, label_smoothing = o.LabelSmoothing)
                        opt.ZeroGrad()
                        loss.backward()
                        opt.Step()
                        float (loss.item<float32>())
                    Runtime.endOfStep ()
                    sum <- sum + stepLoss
                    count <- count + 1
                if count > 0 then losses.Add(sum / float count)
        m.eval ()
        losses.ToArray()

    /// `runOn` over inputs [N, ...] (e.g. images [N, C, H, W]) and labels [N] int64 in
    /// [0, classes) held in memory (no copy per sample; Transform is applied when it is not
    /// Transforms.identity).
    let run (m: VitClassifier) (inputs: Tensor) (labels: Tensor) (o: FineTuneOptions) (cancel: CancellationToken) =
        Guard.notNull "m" m
        Guard.notNull "inputs" inputs
        Guard.nonEmptyBatch "inputs" inputs
        validate o
        (use first = inputs.narrow(0L, 0L, 1L) in m.Adapter.Check("inputs", first))
        if inputs.shape.[0] < int64 o.BatchSize then
            Guard.fail "inputs" (Guard.shapeOf inputs) (sprintf "at least BatchSize = %d samples" o.BatchSize)
        Guard.labelsWithin "labels" m.Classes inputs.shape.[0] "inputs" labels
        runOn m (Data.InMemoryDataset(inputs, labels)) o cancel

    /// Accuracy of the classifier on the labelled samples of `data`, read through an evaluation
    /// loader of `loaderOptions` (dataset order; e.g. Transforms.forEvaluation per sample); a
    /// skipped sample is left out. ArgumentException when the dataset has more classes than the head.
    let evaluateOn (m: VitClassifier) (loaderOptions: Data.LoaderOptions) (data: Data.IDataset) =
        Guard.notNull "m" m
        Guard.notNull "data" data
        if data.ClassNames.Length > m.Classes then
            Guard.fail "data classes" data.ClassNames.Length (sprintf "at most the classifier's %d classes" m.Classes)
        m.eval ()
        let loader = Data.BatchLoader(data, { loaderOptions with Shuffle = false; DropLast = false })
        let logits, labels = Probe.extractFrom (fun x -> m.forward(x)) (Runtime.deviceOf m) loader
        use logits = logits
        use labels = labels
        let accuracy = Probe.accuracy logits labels
        Runtime.endOfStep ()
        accuracy

    /// Accuracy of the classifier on inputs [N, ...] and labels [N] in [0, classes) held in memory.
    let evaluate (m: VitClassifier) (inputs: Tensor) (labels: Tensor) =
        Guard.notNull "m" m
        Guard.notNull "inputs" inputs
        Guard.nonEmptyBatch "inputs" inputs
        (use first = inputs.narrow(0L, 0L, 1L) in m.Adapter.Check("inputs", first))
        Guard.labelsWithin "labels" m.Classes inputs.shape.[0] "inputs" labels
        evaluateOn m { Data.LoaderOptions.evaluation 512 Data.Transforms.identity with Workers = 0 } (Data.InMemoryDataset(inputs, labels))
