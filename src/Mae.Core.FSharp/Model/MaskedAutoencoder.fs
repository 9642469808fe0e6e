/// The masked autoencoder, one recipe for every modality (MAE, He et al. 2021, §3): cut a
/// sample into tokens (input adapter), hide a share of them (masking strategy), encode the
/// visible ones (encoder), insert mask tokens and restore the order, predict every token
/// (decoder), score the hidden ones (objective). Downstream, the encoder alone runs without
/// masking. A modality chooses the adapter; the configuration chooses the rest.
namespace Mae

open TorchSharp

/// What the model's forward pass returns.
type MaeOutput =
    { /// Scalar loss: reconstruction on hidden tokens plus the objective's extra terms.
      Loss: Tensor
      /// [N, L, P] predicted tokens (normalised per token when NormPixLoss).
      Pred: Tensor
      /// [N, L] 1 = hidden, 0 = visible.
      Mask: Tensor }

/// The parts a configuration chooses.
module Build =
    /// The modality's input adapter at encoder width `dim`.
    let adapter (cfg: MaeConfig) : InputAdapter =
        match cfg.Input with
        | Image i -> new ImageAdapter(i, cfg.EmbedDim)
        | Video v -> new VideoAdapter(v, cfg.EmbedDim)
        | TimeSeries s -> new SeriesAdapter(s, cfg.EmbedDim)

    /// The modality's default objective: masked MSE on the target normalised as its reference
    /// does when NormPixLoss — per token (MAE: eps inside the square root) for images, per token
    /// and channel (VideoMAE: eps on the standard deviation) for video — else on the raw target.
    let objective (cfg: MaeConfig) : Objective =
        match cfg.Input with
        | Video v when cfg.NormPixLoss ->
            { Reconstruction = Losses.withPerChannelNorm v.Channels Losses.perChannelNormEps Losses.maskedMse; Extra = [] }
        | TimeSeries s ->
            let loss = match s.Loss with L1 -> Losses.maskedL1 | Mse -> Losses.maskedMse
            { Reconstruction = (if cfg.NormPixLoss then Losses.withNormPix Losses.normPixEps loss else loss); Extra = [] }
        | _ -> Objective.mse cfg.NormPixLoss

    /// The ViT encoder over the adapter's tokens.
    let encoder (cfg: MaeConfig) (adapter: InputAdapter) =
        new TransformerEncoder(cfg.EmbedDim, cfg.Depth, cfg.Heads, cfg.MlpRatio, cfg.Attention, adapter.Positions cfg.EmbedDim,
                               cfg.ClsToken, cfg.LearnedPosEmbed, cfg.EncoderInput)

    /// A transformer decoder, or a linear head when DecoderDepth = 0.
    let decoder (cfg: MaeConfig) (adapter: InputAdapter) : Decoder =
        if cfg.DecoderDepth > 0 then
            new TransformerDecoder(cfg.EmbedDim, cfg.DecoderEmbedDim, cfg.DecoderDepth, cfg.DecoderHeads, cfg.MlpRatio, cfg.Attention,
                                   adapter.Positions cfg.DecoderEmbedDim, cfg.ClsToken, cfg.LearnedPosEmbed, adapter.TargetWidth,
                                   (match cfg.Input with Video _ -> false | _ -> true)) // VideoMAE: encoder_to_decoder has no bias
        else
            new LinearDecoder(cfg.EmbedDim, adapter.NumTokens, cfg.ClsToken, adapter.TargetWidth, (cfg.EncoderInput = VisibleOnly))

/// A masked autoencoder of any modality. Its parameters carry the parts' names: for images the
/// reference MAE checkpoint's keys (patch_embed.*, cls_token, pos_embed, blocks.N.*, norm.*,
/// decoder_embed.*, mask_token, decoder_pos_embed, decoder_blocks.N.*, decoder_norm.*,
/// decoder_pred.*). `objective` defaults to MAE's (masked MSE, norm-pix when NormPixLoss).
type MaskedAutoencoder(config: MaeConfig, objective: Objective) as this =
    inherit PartsModule("MaskedAutoencoder")
    let cfg = MaeConfig.validate config
    let adapter = Build.adapter cfg
    let encoder = Build.encoder cfg adapter
    let decoder = Build.decoder cfg adapter
    do
        if isNull (box objective) then Guard.notNull "objective" objective
        for part in [ adapter :> Part; encoder; decoder ] do
            this.Adopt part
        // MAE's init order: the shared rule over every module, then each part's own tensors
        Init.weights this
        for part in this.Parts do
            part.Initialize()

    new(config: MaeConfig) = new MaskedAutoencoder(config, Build.objective config)

    member _.Config = cfg

    /// The modality's name ("image", ...).
    member _.Modality = cfg.Modality

    member _.Adapter = adapter
    member _.Encoder = encoder
    member _.Decoder = decoder
    member _.Objective = objective

    /// The token grid, slowest axis first.
    member _.Grid = adapter.Grid

    /// batch -> the reconstruction target [N, L, P] (images: patchify).
    member _.Target(batch: Tensor) = adapter.Target batch

    /// [N, L, P] -> the batch layout (images: unpatchify).
    member _.Reassemble(tokens: Tensor) = adapter.Reassemble tokens

    /// Applies the configured masking strategy to tokens [N, L, D] (its grid from the adapter).
    member _.Mask(x: Tensor, generator: Generator) : MaskResult =
        MaskingStrategy.applyRows cfg.Masking adapter.Grid adapter.RowsPerSample generator x

    /// Embedding plus positions, before masking: batch -> [N, L, D].
    member _.Embed(batch: Tensor) =
        adapter.Check("batch", batch)
        adapter.Embed(adapter.Pieces batch) + encoder.TokenPositions

    /// The encoder over a masking of the raw pieces [N, L, Pin].
    member private _.EncodeMasked(pieces: Tensor, masking: MaskResult) : EncoderOutput =
        match cfg.EncoderInput with
        | VisibleOnly -> encoder.Visible(adapter.Embed masking.Visible, masking)
        | AllWithMaskToken -> encoder.WithMaskTokens(adapter.Embed pieces, masking)

    /// Encoder under a masking computed by `masking` from the raw per-token pieces [N, L, Pin]
    /// (the embedding is per token, so masking the pieces and embedding the visible ones equals
    /// embedding all and masking after).
    member this.ForwardEncoder(batch: Tensor, masking: Tensor -> MaskResult) : EncoderOutput =
        adapter.Check("batch", batch)
        let pieces = adapter.Pieces batch
        this.EncodeMasked(pieces, masking pieces)

    /// Encoder with the configured masking drawn from `generator`.
    member this.ForwardEncoder(batch: Tensor, generator: Generator) : EncoderOutput =
        this.ForwardEncoder(batch, fun pieces -> this.Mask(pieces, generator))

    /// Encoder with a given mask `hidden` [N, L] (true or 1 = hidden; the same count in every row).
    member this.ForwardEncoder(batch: Tensor, hidden: Tensor) : EncoderOutput =
        this.ForwardEncoder(batch, fun pieces -> Masking.given hidden pieces)

    /// Decoder: predictions [N, L, P] in the original token order.
    member _.ForwardDecoder(enc: EncoderOutput) = decoder.Forward enc

    /// The objective on hidden tokens: batch, pred [N, L, P], mask [N, L] -> scalar.
    member _.ForwardLoss(batch: Tensor, pred: Tensor, mask: Tensor) =
        Objective.loss objective { Batch = batch; Target = adapter.Target batch; Pred = pred; Mask = mask; Latent = null }

    member private _.Complete(batch: Tensor, enc: EncoderOutput) : MaeOutput =
        let pred = decoder.Forward enc
        let input = { Batch = batch; Target = adapter.Target batch; Pred = pred; Mask = enc.Masking.Mask; Latent = enc.Latent }
        { Loss = Objective.loss objective input; Pred = pred; Mask = enc.Masking.Mask }

    /// The whole pretraining pass, masking given as a function of the raw pieces [N, L, Pin].
    member this.Forward(batch: Tensor, masking: Tensor -> MaskResult) : MaeOutput =
        this.Complete(batch, this.ForwardEncoder(batch, masking))

    /// The whole pretraining pass with the configured masking drawn from `generator`.
    member this.Forward(batch: Tensor, generator: Generator) : MaeOutput =
        this.Complete(batch, this.ForwardEncoder(batch, generator))

    /// The whole pretraining pass with a given mask `hidden` [N, L] (true or 1 = hidden).
    member this.Forward(batch: Tensor, hidden: Tensor) : MaeOutput =
        this.Complete(batch, this.ForwardEncoder(batch, hidden))

    /// Encoder without masking: batch -> [N, (1)+L, D] (after the final norm).
    member this.Encode(batch: Tensor) = encoder.Run(this.Embed batch)

    /// One feature vector per sample: the cls token's output, or the mean of the patch tokens
    /// when `meanPool` (or when the model has no cls token). A series gives its L segment codes
    /// side by side instead of their mean (where in the window a pattern sits matters for a series,
    /// as PatchTST's flatten head reads them), and a channel-independent series its channels' vectors
    /// side by side. batch -> [N, FeatureSize]
    member this.Features(batch: Tensor, meanPool: bool) =
        let z = this.Encode batch
        let extra = encoder.Extra
        let tokens = z.narrow(1L, extra, z.shape.[1] - extra)
        let pooled =
            match cfg.Input with
            | TimeSeries _ -> tokens.flatten(1L)
            | _ when cfg.ClsToken && not meanPool -> z.select(1L, 0L)
            | _ -> tokens.mean([| 1L |])
        let rows = int64 adapter.RowsPerSample
        if rows = 1L then pooled else pooled.reshape(pooled.shape.[0] / rows, rows * pooled.shape.[1])

    /// Width of `Features`: D (images, video), L*D for a series, times C when channel-independent.
    member _.FeatureSize =
        match cfg.Input with
        | TimeSeries s -> s.NumPatches * cfg.EmbedDim * adapter.RowsPerSample
        | _ -> cfg.EmbedDim

    /// Names of the encoder side's parameters (adapter and encoder: what an encoder-only export keeps).
    member _.EncoderParameterNames =
        [| for part in [ adapter :> Part; encoder ] do
               for struct (name, _) in part.named_parameters() do
                   if name <> "enc_mask_token" then yield name |]

    /// Creates the model with its weights drawn from `seed`, on `device` (CPU when null).
    static member Create(config: MaeConfig, seed: int64, ?device: Device) =
        torch.manual_seed(seed) |> ignore
        let m = new MaskedAutoencoder(config)
        match device with
        | Some dev when not (isNull dev) -> m.``to``(dev) |> ignore
        | _ -> ()
        m
