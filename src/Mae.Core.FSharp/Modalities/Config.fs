/// The image MAE's configuration record and its presets.
namespace Mae

open System

type MaeConfig =
    { /// Input height and width in pixels.
      ImageSize: int * int
      /// Patch height and width in pixels (rectangular patches allowed).
      PatchSize: int * int
      /// Input channels C.
      Channels: int
      /// Encoder width D.
      EmbedDim: int
      /// Encoder blocks.
      Depth: int
      /// Encoder attention heads.
      Heads: int
      /// Decoder width.
      DecoderEmbedDim: int
      /// Decoder blocks.
      DecoderDepth: int
      /// Decoder attention heads.
      DecoderHeads: int
      /// MLP hidden width as a multiple of the block width.
      MlpRatio: float
      /// How tokens are hidden during pretraining (MAE: 75% random per sample).
      Masking: MaskingStrategy
      /// Predict per-patch normalised pixels (MAE's better default).
      NormPixLoss: bool
      /// Prepend a learnable cls token to the encoder's sequence.
      ClsToken: bool
      /// Learned positional tables instead of fixed sin-cos ones.
      LearnedPosEmbed: bool
      /// Attention kernel used by every block.
      Attention: AttentionKernel }

    /// Patch grid (rows, columns).
    member c.Grid =
        let (h, w), (ph, pw) = c.ImageSize, c.PatchSize
        h / ph, w / pw

    /// Tokens per image L.
    member c.NumPatches =
        let gh, gw = c.Grid
        gh * gw

    /// Width of a token's target vector: ph * pw * C.
    member c.PatchDim =
        let ph, pw = c.PatchSize
        ph * pw * c.Channels

    member c.MaskRatio = c.Masking.Ratio

module MaeConfig =

    let private vit (imageSize: int) (patch: int) (channels: int) (d, depth, heads) (dd, ddepth, dheads) =
        { ImageSize = imageSize, imageSize
          PatchSize = patch, patch
          Channels = channels
          EmbedDim = d
          Depth = depth
          Heads = heads
          DecoderEmbedDim = dd
          DecoderDepth = ddepth
          DecoderHeads = dheads
          MlpRatio = 4.0
          Masking = RandomPerSample 0.75
          NormPixLoss = true
          ClsToken = true
          LearnedPosEmbed = false
          Attention = AttentionKernel.Math }

    /// Trains on 2 CPU cores: 28x28 grey images, patch 7, width 128 x 4 blocks, decoder 128 x 1.
    let tiny = vit 28 7 1 (128, 4, 4) (128, 1, 4)

    /// MAE ViT-Base/16 on 224x224 RGB (decoder 512 x 8).
    let ``base`` = vit 224 16 3 (768, 12, 12) (512, 8, 16)

    /// MAE ViT-Large/16.
    let large = vit 224 16 3 (1024, 24, 16) (512, 8, 16)

    /// MAE ViT-Huge/14.
    let huge = vit 224 14 3 (1280, 32, 16) (512, 8, 16)

    /// The preset names `ofName` knows.
    let names = [| "tiny"; "base"; "large"; "huge" |]

    /// The preset of that name (case-insensitive); ArgumentException for an unknown name.
    let ofName (preset: string) =
        match (if isNull preset then "" else preset.ToLowerInvariant()) with
        | "tiny" -> tiny
        | "base" -> ``base``
        | "large" -> large
        | "huge" -> huge
        | _ -> Guard.fail "preset" (sprintf "\"%s\"" preset) ("one of " + String.Join(", ", names))

    /// Every problem of the configuration, each an ArgumentException naming the setting, its value
    /// and the allowed range (empty when the configuration is valid).
    let problems (c: MaeConfig) : ArgumentException[] =
        let h, w = c.ImageSize
        let ph, pw = c.PatchSize
        let checks: (unit -> unit) list =
            [ fun () -> Guard.positive "ImageSize height" h
              fun () -> Guard.positive "ImageSize width" w
              fun () -> Guard.positive "PatchSize height" ph
              fun () -> Guard.positive "PatchSize width" pw
              fun () -> if h > 0 && ph > 0 then Guard.divisible "ImageSize height" (int64 h) ph "height"
              fun () -> if w > 0 && pw > 0 then Guard.divisible "ImageSize width" (int64 w) pw "width"
              fun () -> Guard.positive "Channels" c.Channels
              fun () -> Guard.positive "Depth" c.Depth
              fun () -> Guard.positive "DecoderDepth" c.DecoderDepth
              fun () -> Guard.positive "Heads" c.Heads
              fun () -> Guard.positive "DecoderHeads" c.DecoderHeads
              fun () -> if c.EmbedDim <= 0 || c.EmbedDim % 4 <> 0 then Guard.fail "EmbedDim" c.EmbedDim "a positive multiple of 4"
              fun () ->
                  if c.DecoderEmbedDim <= 0 || c.DecoderEmbedDim % 4 <> 0 then
                      Guard.fail "DecoderEmbedDim" c.DecoderEmbedDim "a positive multiple of 4"
              fun () ->
                  if c.Heads > 0 && c.EmbedDim % c.Heads <> 0 then
                      Guard.fail "Heads" c.Heads (sprintf "a divisor of EmbedDim %d" c.EmbedDim)
              fun () ->
                  if c.DecoderHeads > 0 && c.DecoderEmbedDim % c.DecoderHeads <> 0 then
                      Guard.fail "DecoderHeads" c.DecoderHeads (sprintf "a divisor of DecoderEmbedDim %d" c.DecoderEmbedDim)
              fun () -> if not (c.MlpRatio > 0.0) then Guard.fail "MlpRatio" c.MlpRatio "a positive number"
              fun () -> Guard.maskRatio "MaskRatio" c.MaskRatio ]
        [| for check in checks do
               try check () with :? ArgumentException as e -> yield e |]

    /// Checks every setting; raises ArgumentException naming the first bad one.
    let validate (c: MaeConfig) =
        match problems c with
        | [||] -> c
        | ps -> raise ps.[0]
