/// The masked autoencoder for images (MAE, He et al. 2021), one method per stage of the paper:
/// patchify, masking, encoder, decoder, loss. Parameter names follow the reference checkpoint.
namespace Mae

open TorchSharp
open TorchSharp.Modules

open type TorchSharp.torch.nn

/// Linear patch embedding, stored as the reference's strided convolution (proj.{weight,bias},
/// weight [D, C, ph, pw]) and computed as one matrix product on the patches' pixels, which also
/// lets the MAE embed only the patches that stay visible.
type PatchEmbed(channels: int, dim: int, patchSize: int * int) as this =
    inherit Module<Tensor, Tensor>("PatchEmbed")
    let ph, pw = patchSize
    let proj = Conv2d(int64 channels, int64 dim, struct (int64 ph, int64 pw), stride = struct (int64 ph, int64 pw))
    do this.RegisterComponents()

    /// [N, C, H, W] -> [N, L, C*ph*pw]: each patch's pixels in the convolution weight's order
    /// (channel, row, column), tokens in row-major order of the patch grid.
    member _.Pixels(x: Tensor) =
        let n, c, hh, ww = x.shape.[0], x.shape.[1], x.shape.[2], x.shape.[3]
        let h, w = hh / int64 ph, ww / int64 pw
        x.reshape(n, c, h, int64 ph, w, int64 pw).permute(0L, 2L, 4L, 1L, 3L, 5L).reshape(n, h * w, c * int64 (ph * pw))

    /// Patch pixels [N, L', C*ph*pw] (as from Pixels) -> tokens [N, L', D].
    member _.Project(pixels: Tensor) =
        Precision.linearWith pixels (proj.weight.flatten(1L)) proj.bias

    /// [N, C, H, W] -> [N, L, D], tokens in row-major order of the patch grid.
    override this.forward(x: Tensor) = this.Project(this.Pixels x)

    /// The convolution's weight [D, C, ph, pw].
    member _.Weight = proj.weight

/// What the model's forward pass returns.
type MaeOutput =
    { /// Scalar reconstruction loss on hidden patches.
      Loss: Tensor
      /// [N, L, ph*pw*C] predicted patches (normalised per patch when NormPixLoss).
      Pred: Tensor
      /// [N, L] 1 = hidden, 0 = visible.
      Mask: Tensor }

/// The encoder's output on a masked input.
type EncoderOutput =
    { /// [N, (1)+Lkeep, D] encoded visible tokens (cls first when the model has one).
      Latent: Tensor
      /// The masking that was applied.
      Masking: MaskResult }

/// Pieces shared by the MAE and the classifier built on its encoder.
module internal Init =
    /// MAE's initialisation: xavier-uniform linear weights, zero biases, unit layer norms.
    let weights (m: Module) =
        use _ = torch.no_grad()
        for (_, child) in m.named_modules() do
            match child with
            | :? Linear as l ->
                init.xavier_uniform_(l.weight) |> ignore
                if not (isNull l.bias) then init.zeros_(l.bias) |> ignore
            | :? LayerNorm as n ->
                init.ones_(n.weight) |> ignore
                init.zeros_(n.bias) |> ignore
            | _ -> ()

    /// Xavier-uniform on the conv weight seen as a [D, C*ph*pw] matrix, as MAE does.
    let patchEmbed (p: PatchEmbed) =
        use _ = torch.no_grad()
        let w = p.Weight
        let fanOut, fanIn = float w.shape.[0], float (w.numel() / w.shape.[0])
        let bound = sqrt (6.0 / (fanIn + fanOut))
        init.uniform_(w, -bound, bound) |> ignore

    let posTable (cfg: MaeConfig) (dim: int) =
        let table = (PosEmbed.sinCos2d dim cfg.Grid cfg.ClsToken).unsqueeze(0L)
        if cfg.LearnedPosEmbed then
            use _ = torch.no_grad()
            Parameter(table.normal_(0.0, 0.02), requires_grad = true)
        else Parameter(table, requires_grad = false)

    let blocks (dim: int) (depth: int) (heads: int) (cfg: MaeConfig) =
        ModuleList<Block>([| for _ in 1 .. depth -> Block.Standard(dim, heads, cfg.MlpRatio, cfg.Attention) |])

    /// Images must match the model's channels and size: [N, C, H, W] with N >= 1.
    let checkImages (cfg: MaeConfig) (imgs: Tensor) =
        Guard.rank "imgs" 4 "[N, C, H, W]" imgs
        Guard.nonEmptyBatch "imgs" imgs
        let h, w = cfg.ImageSize
        if imgs.shape.[1] <> int64 cfg.Channels || imgs.shape.[2] <> int64 h || imgs.shape.[3] <> int64 w then
            Guard.fail "imgs" (Guard.shapeOf imgs) (sprintf "[N, %d, %d, %d] (the model's Channels and ImageSize)" cfg.Channels h w)

    /// The blocks in order: [N, L, D] -> [N, L, D]
    let runBlocks (bs: ModuleList<Block>) (x: Tensor) =
        let mutable x = x
        for b in bs do
            x <- b.forward(x)
        x

    /// [N, L, D] -> [N, 1+L, D] with the cls token plus its position (row 0 of `posEmbed`) in
    /// front; unchanged when `clsToken` is null (a model without one).
    let prependCls (clsToken: Tensor) (posEmbed: Tensor) (x: Tensor) =
        if isNull clsToken then x
        else
            let cls = (clsToken + posEmbed.narrow(1L, 0L, 1L)).expand(x.shape.[0], -1L, -1L)
            torch.cat([| cls; x |], 1L)

/// MAE with a ViT encoder and a small ViT decoder.
/// Parameters: patch_embed.*, cls_token, pos_embed, blocks.N.*, norm.*, decoder_embed.*, mask_token,
/// decoder_pos_embed, decoder_blocks.N.*, decoder_norm.*, decoder_pred.*.
type MaskedAutoencoderViT(config: MaeConfig) as this =
    inherit Module("MaskedAutoencoderViT")
    let cfg = MaeConfig.validate config
    let d, dd = cfg.EmbedDim, cfg.DecoderEmbedDim
    // encoder
    let patch_embed = new PatchEmbed(cfg.Channels, d, cfg.PatchSize)
    let cls_token = if cfg.ClsToken then Parameter(torch.zeros(1L, 1L, int64 d)) else null
    let pos_embed = Init.posTable cfg d
    let blocks = Init.blocks d cfg.Depth cfg.Heads cfg
    let norm = LayerNorm(int64 d, eps = 1e-6)
    // decoder
    let decoder_embed = Linear(int64 d, int64 dd)
    let mask_token = Parameter(torch.zeros(1L, 1L, int64 dd))
    let decoder_pos_embed = Init.posTable cfg dd
    let decoder_blocks = Init.blocks dd cfg.DecoderDepth cfg.DecoderHeads cfg
    let decoder_norm = LayerNorm(int64 dd, eps = 1e-6)
    let decoder_pred = Linear(int64 dd, int64 cfg.PatchDim)
    let extra = if cfg.ClsToken then 1L else 0L

    let lossFn =
        if cfg.NormPixLoss then Losses.withNormPix Losses.normPixEps Losses.maskedMse else Losses.maskedMse

    do
        this.RegisterComponents()
        Init.weights this
        Init.patchEmbed patch_embed
        use _ = torch.no_grad()
        if cfg.ClsToken then init.normal_(cls_token, 0.0, 0.02) |> ignore
        init.normal_(mask_token, 0.0, 0.02) |> ignore

    member _.Config = cfg

    /// [N, C, H, W] -> [N, L, ph*pw*C]
    member _.Patchify(imgs: Tensor) = Patchify.patchify2d cfg.PatchSize imgs

    /// [N, L, ph*pw*C] -> [N, C, H, W]
    member _.Unpatchify(x: Tensor) = Patchify.unpatchify2d cfg.PatchSize cfg.Grid cfg.Channels x

    /// Applies the configured masking to tokens [N, L, D].
    member _.Mask(x: Tensor, generator: Generator) : MaskResult =
        match cfg.Masking with
        | RandomPerSample r -> Masking.random generator r x
        | RandomShared r -> Masking.randomShared generator r x
        | BlockWise r -> Masking.block generator r cfg.Grid x

    /// Patch embedding plus positions, before masking: [N, C, H, W] -> [N, L, D]
    member _.Embed(imgs: Tensor) =
        Init.checkImages cfg imgs
        patch_embed.forward(imgs) + pos_embed.narrow(1L, extra, int64 cfg.NumPatches)

    /// The encoder's blocks on a masking's visible (embedded) tokens.
    member private _.EncodeVisible(m: MaskResult) : EncoderOutput =
        let x = Init.prependCls cls_token pos_embed m.Visible |> Init.runBlocks blocks
        { Latent = norm.forward(x); Masking = m }

    /// Decoder and loss after the encoder.
    member private _.Complete(imgs: Tensor, enc: EncoderOutput) : MaeOutput =
        let pred = this.ForwardDecoder(enc.Latent, enc.Masking.IdsRestore)
        { Loss = this.ForwardLoss(imgs, pred, enc.Masking.Mask); Pred = pred; Mask = enc.Masking.Mask }

    /// Encoder over the visible tokens left by `masking` (a function of the embedded tokens).
    member _.ForwardEncoder(imgs: Tensor, masking: Tensor -> MaskResult) : EncoderOutput =
        this.EncodeVisible(masking (this.Embed imgs))

    /// Encoder with the configured random masking drawn from `generator`. The mask is drawn on
    /// the patches' pixels and only the visible patches are embedded (the embedding is per
    /// patch, so this equals embedding all and masking after, at a quarter of the cost for 75%).
    member _.ForwardEncoder(imgs: Tensor, generator: Generator) : EncoderOutput =
        Init.checkImages cfg imgs
        let m = this.Mask(patch_embed.Pixels imgs, generator)
        let n, keep = m.IdsKeep.shape.[0], m.IdsKeep.shape.[1]
        let pos = pos_embed.narrow(1L, extra, int64 cfg.NumPatches).squeeze(0L)
        let visible = patch_embed.Project(m.Visible) + pos.index_select(0L, m.IdsKeep.reshape(-1L)).view(n, keep, -1L)
        this.EncodeVisible { m with Visible = visible }

    /// Decoder: embed, append mask tokens, restore the order, add positions, predict patches.
    /// latent [N, (1)+Lkeep, D], idsRestore [N, L] -> [N, L, ph*pw*C]
    member _.ForwardDecoder(latent: Tensor, idsRestore: Tensor) =
        let x = Precision.linear decoder_embed latent
        let n, l = x.shape.[0], int64 cfg.NumPatches
        let visible = x.narrow(1L, extra, x.shape.[1] - extra)
        let masked = mask_token.expand(n, l - visible.shape.[1], -1L)
        let tokens = Masking.restore idsRestore (torch.cat([| visible; masked |], 1L))
        let tokens = if cfg.ClsToken then torch.cat([| x.narrow(1L, 0L, 1L); tokens |], 1L) else tokens
        let y = (tokens + decoder_pos_embed) |> Init.runBlocks decoder_blocks
        // norm and prediction are per token: the cls token's output is dropped before them
        Precision.linear decoder_pred (decoder_norm.forward(y.narrow(1L, extra, l)))

    /// Loss on hidden patches: imgs [N, C, H, W], pred [N, L, P], mask [N, L] -> scalar.
    member _.ForwardLoss(imgs: Tensor, pred: Tensor, mask: Tensor) =
        lossFn pred (this.Patchify imgs) mask

    /// The whole pretraining pass with masking given as a function of the embedded tokens.
    member _.Forward(imgs: Tensor, masking: Tensor -> MaskResult) : MaeOutput =
        this.Complete(imgs, this.ForwardEncoder(imgs, masking))

    /// The whole pretraining pass with the configured masking drawn from `generator`.
    member _.Forward(imgs: Tensor, generator: Generator) : MaeOutput =
        this.Complete(imgs, this.ForwardEncoder(imgs, generator))

    /// Encoder without masking: [N, C, H, W] -> [N, (1)+L, D] (after the final norm).
    member _.Encode(imgs: Tensor) =
        let x = Init.prependCls cls_token pos_embed (this.Embed imgs) |> Init.runBlocks blocks
        norm.forward(x)

    /// One feature vector per image: the cls token's output, or the mean of the patch tokens
    /// when `meanPool` (or when the model has no cls token). [N, C, H, W] -> [N, D]
    member _.Features(imgs: Tensor, meanPool: bool) =
        let z = this.Encode imgs
        if cfg.ClsToken && not meanPool then z.select(1L, 0L)
        else z.narrow(1L, extra, z.shape.[1] - extra).mean([| 1L |])

    /// Names of the encoder's parameters (what an encoder-only export keeps).
    member _.EncoderParameterNames =
        this.named_parameters()
        |> Seq.map (fun struct (name, _) -> name)
        |> Seq.filter (fun name -> not (name.StartsWith "decoder_" || name = "mask_token"))
        |> Array.ofSeq

    /// Creates the model with its weights drawn from `seed`, on `device` (CPU when null).
    static member Create(config: MaeConfig, seed: int64, ?device: Device) =
        torch.manual_seed(seed) |> ignore
        let m = new MaskedAutoencoderViT(config)
        match device with
        | Some dev when not (isNull dev) -> m.``to``(dev) |> ignore
        | _ -> ()
        m
