/// The encoder: a ViT stack over the tokens of a masked sample, with an optional cls token.
namespace Mae

open TorchSharp
open TorchSharp.Modules

open type TorchSharp.torch.nn

/// How the encoder reads a masked sample.
type EncoderInput =
    /// The visible tokens only (MAE, Audio-MAE, VideoMAE): the encoder's cost grows with the
    /// visible share (1 - r) L, not L.
    | VisibleOnly
    /// All L tokens, the hidden ones replaced by a learned mask token `enc_mask_token` (BERT,
    /// SimMIM, GraphMAE, PatchTST); MAE's paper (Table 1) calls this "w/ [M]".
    | AllWithMaskToken

/// The encoder's output on a masked input.
type EncoderOutput =
    { /// `[N, (1)+K, D]` encoded tokens, cls first when the model has one: the K = Lkeep visible
      /// tokens in `Masking.IdsKeep` order (VisibleOnly), or all K = L in the original order.
      Latent: Tensor
      /// The masking that was applied.
      Masking: MaskResult
      /// True when `Latent` holds every token (AllWithMaskToken).
      AllTokens: bool }

/// Pre-norm ViT encoder. Parameters: cls_token (when `clsToken`), pos_embed [1, (1)+L, D],
/// enc_mask_token (AllWithMaskToken only; GraphMAE's name), blocks.N.*, norm.*.
/// `positions` is the adapter's table [L, D]; the cls row is zeros (MAE's layout).
type TransformerEncoder
    (dim: int, depth: int, heads: int, mlpRatio: float, kernel: AttentionKernel, positions: Tensor, clsToken: bool,
     learnedPositions: bool, input: EncoderInput) as this =
    inherit Part("TransformerEncoder")
    let tokens = positions.shape.[0]
    let cls_token = if clsToken then Parameter(torch.zeros(1L, 1L, int64 dim)) else null
    let pos_embed = Init.positions learnedPositions (Init.withClsRow clsToken positions)
    let enc_mask_token = if input = AllWithMaskToken then Parameter(torch.zeros(1L, 1L, int64 dim)) else null
    let blocks = ModuleList<Block>([| for _ in 1 .. depth -> Block.Standard(dim, heads, mlpRatio, kernel) |])
    let norm = LayerNorm(int64 dim, eps = 1e-6)
    let extra = if clsToken then 1L else 0L
    do this.RegisterComponents()

    override _.Initialize() =
        Init.token cls_token
        Init.token enc_mask_token

    /// How the encoder reads a masked sample.
    member _.Input = input

    /// 1 with a cls token, else 0: where the patch tokens start in `Latent`.
    member _.Extra = extra

    /// The positional rows of the L tokens, [1, L, D].
    member _.TokenPositions = pos_embed.narrow(1L, extra, tokens)

    /// Tokens with positions [N, K, D] -> cls in front, blocks, final norm: [N, (1)+K, D].
    member _.Run(x: Tensor) =
        let x =
            if isNull cls_token then x
            else
                let cls = (cls_token + pos_embed.narrow(1L, 0L, 1L)).expand(x.shape.[0], -1L, -1L)
                torch.cat([| cls; x |], 1L)
        let mutable x = x
        for b in blocks do
            x <- b.forward(x)
        norm.forward(x)

    /// Embedded visible tokens [N, Lkeep, D] (no positions), in `masking.IdsKeep` order ->
    /// [N, (1)+Lkeep, D]; each token gets the position its id gives.
    member this.Visible(embedded: Tensor, masking: MaskResult) : EncoderOutput =
        let n, keep = masking.IdsKeep.shape.[0], masking.IdsKeep.shape.[1]
        let pos = this.TokenPositions.squeeze(0L).index_select(0L, masking.IdsKeep.reshape(-1L)).view(n, keep, -1L)
        { Latent = this.Run(embedded + pos); Masking = masking; AllTokens = false }

    /// Every embedded token [N, L, D] (no positions) -> [N, (1)+L, D], without masking.
    member this.All(embedded: Tensor) = this.Run(embedded + this.TokenPositions)

    /// Every embedded token [N, L, D], those hidden by `masking` replaced by `enc_mask_token`
    /// (AllWithMaskToken) -> [N, (1)+L, D] in the original order.
    member this.WithMaskTokens(embedded: Tensor, masking: MaskResult) : EncoderOutput =
        if isNull enc_mask_token then
            Guard.fail "input" input "AllWithMaskToken for an encoder that reads mask tokens"
        let m = masking.Mask.unsqueeze(-1L).to_type(embedded.dtype)
        let x = embedded * (1.0 - m) + enc_mask_token * m
        { Latent = this.All(x); Masking = masking; AllTokens = true }
