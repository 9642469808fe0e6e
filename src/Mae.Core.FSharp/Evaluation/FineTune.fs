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
    let head = new ClassifierHead(cfg.EmbedDim, classes)
    let adapterNames = set [ for struct (n, _) in adapter.named_parameters() -> n ]
    do
        for part in [ adapter :> Part; encoder; head ] do
            this.Adopt part
        Init.weights this
        for part in this.Parts do
            part.Initialize()

    member _.Config = cfg

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
        head.Forward(y.narrow(1L, extra, y.shape.[1] - extra).mean([| 1L |]))

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
      Seed: int64 }

module FineTune =

    let defaults =
        { Epochs = 5; BatchSize = 128; BaseLr = 1e-3; LayerDecay = 0.75; WeightDecay = 0.05
          WarmupEpochs = 1.0; LabelSmoothing = 0.1; Seed = 0L }

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

    /// Trains the classifier on images [N, C, H, W] / labels [N]; returns the loss of each epoch.
    let run (m: VitClassifier) (images: Tensor) (labels: Tensor) (o: FineTuneOptions) (cancel: CancellationToken) =
        Runtime.tuneAllocator ()
        Guard.positive "Epochs" o.Epochs
        Guard.positive "BatchSize" o.BatchSize
        if not (o.LayerDecay > 0.0 && o.LayerDecay <= 1.0) then Guard.fail "LayerDecay" o.LayerDecay "a number in (0, 1]"
        Guard.rank "images" 4 "[N, C, H, W]" images
        let n = int images.shape.[0]
        if n < o.BatchSize then Guard.fail "images" (Guard.shapeOf images) (sprintf "at least BatchSize = %d images" o.BatchSize)
        Guard.labelsWithin "labels" m.Classes images.shape.[0] "images" labels
        let device = Runtime.deviceOf m
        let gs = groups m o.WeightDecay o.LayerDecay
        let lr = Optim.scaledLr o.BaseLr o.BatchSize
        use opt = Optim.adamW lr (0.9, 0.999) gs
        let perEpoch = n / o.BatchSize
        let total = perEpoch * o.Epochs
        let warmup = int (o.WarmupEpochs * float perEpoch)
        let losses = Collections.Generic.List<float>()
        let mutable it = 0
        m.train ()
        for epoch in 0 .. o.Epochs - 1 do
            if not cancel.IsCancellationRequested then
                use order = torch.tensor(Data.Loader.epochOrder o.Seed epoch n |> Array.map int64)
                let mutable sum = 0.0
                for b in 0 .. perEpoch - 1 do
                    let stepLoss =
                        use _ = torch.NewDisposeScope()
                        Optim.setLr opt gs (Optim.scheduledLr lr 1e-6 warmup total it)
                        let idx = order.narrow(0L, int64 (b * o.BatchSize), int64 o.BatchSize)
                        let x = images.index_select(0L, idx).``to``(device)
                        let y = labels.index_select(0L, idx).``to``(device)
                        let loss = torch.nn.functional.cross_entropy(m.forward(x), y, label_smoothing = o.LabelSmoothing)
                        opt.ZeroGrad()
                        loss.backward()
                        opt.Step()
                        float (loss.item<float32>())
                    Runtime.endOfStep ()
                    sum <- sum + stepLoss
                    it <- it + 1
                losses.Add(sum / float perEpoch)
        m.eval ()
        losses.ToArray()

    /// Test accuracy of the classifier on images [N, C, H, W] and labels [N] in [0, classes).
    let evaluate (m: VitClassifier) (images: Tensor) (labels: Tensor) =
        Guard.rank "images" 4 "[N, C, H, W]" images
        Guard.labelsWithin "labels" m.Classes images.shape.[0] "images" labels
        m.eval ()
        let device = Runtime.deviceOf m
        let accuracy =
            use logits = Probe.extract (fun x -> m.forward(x)) device 512 images
            Probe.accuracy logits labels
        Runtime.endOfStep ()
        accuracy
