/// Fine-tuning: the pretrained encoder plus a classification head on mean-pooled tokens, trained
/// end to end without masking, with layer-wise learning-rate decay. The encoder may run at another
/// image size: its positional table is then interpolated to the new patch grid.
namespace Mae

open System
open System.Threading
open TorchSharp
open TorchSharp.Modules

/// ViT classifier whose encoder parameters carry the MAE's names (patch_embed.*, cls_token,
/// pos_embed, blocks.N.*), so pretrained weights load by name; fc_norm.* and head.* are new.
type VitClassifier(config: MaeConfig, classes: int) as this =
    inherit torch.nn.Module<Tensor, Tensor>("VitClassifier")
    let cfg = MaeConfig.validate config
    do Guard.positive "classes" classes
    let d = cfg.EmbedDim
    let extra = if cfg.ClsToken then 1L else 0L
    let patch_embed = new PatchEmbed(cfg.Channels, d, cfg.PatchSize)
    let cls_token = if cfg.ClsToken then new Parameter(torch.zeros(1L, 1L, int64 d)) else null
    let pos_embed = Init.posTable cfg d
    let blocks = Init.blocks d cfg.Depth cfg.Heads cfg
    let fc_norm = torch.nn.LayerNorm(int64 d, eps = 1e-6)
    let head = torch.nn.Linear(int64 d, int64 classes)
    do
        this.RegisterComponents()
        Init.weights this
        use _ = torch.no_grad()
        torch.nn.init.trunc_normal_(head.weight, std = 2e-5) |> ignore

    member _.Config = cfg

    /// Number of classes the head predicts.
    member _.Classes = classes

    /// Copies the encoder weights of a pretrained MAE (interpolating pos_embed when its patch grid
    /// differs from this classifier's).
    member _.LoadEncoder(mae: MaskedAutoencoderViT) =
        use _ = torch.no_grad()
        let source = mae.state_dict()
        let names = set mae.EncoderParameterNames
        for struct (name, p) in this.named_parameters() do
            if names.Contains name then
                let src = source.[name]
                if name = "pos_embed" && mae.Config.Grid <> cfg.Grid then
                    let resized = PosEmbed.interpolate2d src mae.Config.Grid cfg.Grid cfg.ClsToken
                    p.copy_(resized) |> ignore
                elif src.shape <> p.shape then
                    Guard.fail "mae" (sprintf "%s of shape %s" name (Guard.shapeOf src)) (sprintf "shape %s" (Guard.shapeOf p))
                else p.copy_(src) |> ignore

    /// [N, C, H, W] -> [N, classes] logits from the mean of the patch tokens.
    override _.forward(imgs: Tensor) =
        Init.checkImages cfg imgs
        let x = patch_embed.forward(imgs) + pos_embed.narrow(1L, extra, int64 cfg.NumPatches)
        let y = Init.prependCls cls_token pos_embed x |> Init.runBlocks blocks
        let pooled = y.narrow(1L, extra, y.shape.[1] - extra).mean([| 1L |])
        head.forward(fc_norm.forward(pooled))

    /// Layer index for layer-wise decay: embeddings 0, block i -> i + 1, the rest depth + 1.
    member _.LayerId(name: string) =
        if name.StartsWith "patch_embed" || name = "cls_token" || name = "pos_embed" then 0
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
                use order = Pretrain.epochOrder o.Seed epoch n
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
