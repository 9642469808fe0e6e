/// Decoders: from the encoder's output back to one prediction per token, in the original order.
namespace Mae

open TorchSharp
open TorchSharp.Modules

open type TorchSharp.torch.nn

/// Encoder output -> predictions `[N, L, P]` in the original token order.
[<AbstractClass>]
type Decoder(name: string) =
    inherit Part(name)

    /// `enc.Latent` [N, (1)+K, D] -> [N, L, P].
    abstract Forward: enc: EncoderOutput -> Tensor

module internal DecoderInput =
    /// The encoder's patch tokens projected to the decoder's width, with mask tokens appended
    /// after the visible ones and the order restored (MAE's forward_decoder); tokens that are
    /// already all there (AllWithMaskToken) are only sliced. x [N, (1)+K, Dd] -> [N, L, Dd].
    let restored (maskToken: Tensor) (extra: int64) (tokens: int64) (enc: EncoderOutput) (x: Tensor) =
        let patches = x.narrow(1L, extra, x.shape.[1] - extra)
        if enc.AllTokens then patches
        else
            let n = x.shape.[0]
            let masked = maskToken.expand(n, tokens - patches.shape.[1], -1L)
            Masking.restoreTrusted enc.Masking.IdsRestore (torch.cat([| patches; masked |], 1L))

/// MAE's decoder: a small pre-norm ViT over the restored sequence. Parameters: decoder_embed.*,
/// mask_token, decoder_pos_embed [1, (1)+L, Dd], decoder_blocks.N.*, decoder_norm.*,
/// decoder_pred.* (the reference checkpoint's names). `positions` is the adapter's table [L, Dd].
/// `embedBias`: decoder_embed has a bias (MAE) or not (VideoMAE's encoder_to_decoder).
type TransformerDecoder
    (encoderDim: int, dim: int, depth: int, heads: int, mlpRatio: float, kernel: AttentionKernel, positions: Tensor,
     clsToken: bool, learnedPositions: bool, targetWidth: int, embedBias: bool) as this =
    inherit Decoder("TransformerDecoder")
    let tokens = positions.shape.[0]
    let decoder_embed = Linear(int64 encoderDim, int64 dim, hasBias = embedBias)
    let mask_token = Parameter(torch.zeros(1L, 1L, int64 dim))
    let decoder_pos_embed = Init.positions learnedPositions (Init.withClsRow clsToken positions)
    let decoder_blocks = ModuleList<Block>([| for _ in 1 .. depth -> Block.Standard(dim, heads, mlpRatio, kernel) |])
    let decoder_norm = LayerNorm(int64 dim, eps = 1e-6)
    let decoder_pred = Linear(int64 dim, int64 targetWidth)
    let extra = if clsToken then 1L else 0L
    do this.RegisterComponents()

    override _.Initialize() = Init.token mask_token

    override _.Forward(enc: EncoderOutput) =
        let x = Precision.linear decoder_embed enc.Latent
        let restored = DecoderInput.restored mask_token extra tokens enc x
        let restored = if extra = 1L then torch.cat([| x.narrow(1L, 0L, 1L); restored |], 1L) else restored
        let mutable y = restored + decoder_pos_embed
        for b in decoder_blocks do
            y <- b.forward(y)
        // norm and prediction are per token: the cls token's output is dropped before them
        Precision.linear decoder_pred (decoder_norm.forward(y.narrow(1L, extra, tokens)))

/// A linear head on the encoder's tokens (PatchTST's pretraining head, SimMIM's one-layer
/// prediction): decoder_pred.* maps each token's code to its target. With an encoder that reads
/// the visible tokens only, the hidden ones are a learned `mask_token` of the encoder's width
/// (they carry no information but their position in the order).
type LinearDecoder(encoderDim: int, tokens: int, clsToken: bool, targetWidth: int, needsMaskToken: bool) as this =
    inherit Decoder("LinearDecoder")
    let mask_token = if needsMaskToken then Parameter(torch.zeros(1L, 1L, int64 encoderDim)) else null
    let decoder_pred = Linear(int64 encoderDim, int64 targetWidth)
    let extra = if clsToken then 1L else 0L
    do this.RegisterComponents()

    override _.Initialize() = Init.token mask_token

    override _.Forward(enc: EncoderOutput) =
        if not enc.AllTokens && isNull mask_token then
            Guard.fail "enc" "an output of the visible tokens only" "all tokens (this head has no mask token)"
        Precision.linear decoder_pred (DecoderInput.restored mask_token extra (int64 tokens) enc enc.Latent)
