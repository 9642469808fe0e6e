/// The configuration of a masked autoencoder: what it reads (the modality and its input sizes),
/// the encoder and decoder shapes, the masking and the objective; and the presets.
namespace Mae

open System

/// What a model reads. Each modality adds a case, its adapter (Build.adapter) and its presets.
type Modality =
    /// Images [N, C, H, W] in patches (MAE).
    | Image of ImageInput
    /// Video clips [N, C, T, H, W] in tubelets (VideoMAE).
    | Video of VideoInput
    /// Multivariate series [N, C, T] in segments (TSFormer, PatchTST).
    | TimeSeries of SeriesInput

    /// The modality's name as checkpoints, `mae info` and the CLI spell it.
    member m.Name =
        match m with
        | Image _ -> "image"
        | Video _ -> "video"
        | TimeSeries _ -> "timeseries"

    /// The token grid, slowest axis first.
    member m.Grid =
        match m with
        | Image i -> let gh, gw = i.Grid in [| gh; gw |]
        | Video v -> let s, h, w = v.Grid in [| s; h; w |]
        | TimeSeries s -> [| s.NumPatches |]

    /// Tokens per sample L.
    member m.NumTokens = Array.fold (*) 1 m.Grid

    /// Every problem of the input sizes (each check raises an ArgumentException naming the setting).
    member m.Problems() =
        match m with
        | Image i -> i.Problems()
        | Video v -> v.Problems()
        | TimeSeries s -> s.Problems()

    /// The names `Name` gives, one per case.
    static member Names = [| "image"; "video"; "timeseries" |]

type MaeConfig =
    { /// What the model reads and how it is cut into tokens.
      Input: Modality
      /// Encoder width D.
      EmbedDim: int
      /// Encoder blocks.
      Depth: int
      /// Encoder attention heads.
      Heads: int
      /// Decoder width (ignored by the linear head).
      DecoderEmbedDim: int
      /// Decoder blocks; 0 = a linear head on the encoder's tokens instead of a transformer decoder.
      DecoderDepth: int
      /// Decoder attention heads (ignored by the linear head).
      DecoderHeads: int
      /// MLP hidden width as a multiple of the block width.
      MlpRatio: float
      /// How tokens are hidden during pretraining (MAE: 75% random per sample).
      Masking: MaskingStrategy
      /// Predict per-patch normalised targets (MAE's better default).
      NormPixLoss: bool
      /// Prepend a learnable cls token to the encoder's sequence.
      ClsToken: bool
      /// Learned positional tables instead of fixed sin-cos ones.
      LearnedPosEmbed: bool
      /// Attention kernel used by every block.
      Attention: AttentionKernel
      /// Whether the encoder reads the visible tokens only (MAE) or all tokens with mask tokens.
      EncoderInput: EncoderInput }

    member c.MaskRatio = c.Masking.Ratio

    /// The modality's name ("image", ...).
    member c.Modality = c.Input.Name

    /// Tokens per sample L.
    member c.NumTokens = c.Input.NumTokens

    /// The image input sizes; ArgumentException naming Input for a model of another modality.
    member c.Image =
        match c.Input with
        | Image i -> i
        | other -> Guard.fail "Input" other.Name "an image model"

    /// The series input; ArgumentException naming Input for a model of another modality.
    member c.Series =
        match c.Input with
        | TimeSeries s -> s
        | other -> Guard.fail "Input" other.Name "a time-series model"

    /// The video input sizes; ArgumentException naming Input for a model of another modality.
    member c.Video =
        match c.Input with
        | Video v -> v
        | other -> Guard.fail "Input" other.Name "a video model"

module MaeConfig =

    /// A preset: the input, the encoder and decoder shapes (width, blocks, heads), the masking, and
    /// MAE's other defaults (MLP ratio 4, norm-pix loss, cls token, fixed positions, math attention,
    /// the encoder on visible tokens) for the modality to change.
    let private preset (input: Modality) (d, depth, heads) (dd, ddepth, dheads) (masking: MaskingStrategy) =
        { Input = input
          EmbedDim = d
          Depth = depth
          Heads = heads
          DecoderEmbedDim = dd
          DecoderDepth = ddepth
          DecoderHeads = dheads
          MlpRatio = 4.0
          Masking = masking
          NormPixLoss = true
          ClsToken = true
          LearnedPosEmbed = false
          Attention = AttentionKernel.Math
          EncoderInput = VisibleOnly }

    let private vit (imageSize: int) (patch: int) (channels: int) encoder decoder =
        preset (Image { ImageSize = imageSize, imageSize; PatchSize = patch, patch; Channels = channels }) encoder decoder (RandomPerSample 0.75)

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

    let private videoMae (frames: int) (frameSize: int) (channels: int) (tubelet: int) (patch: int) encoder decoder =
        let input =
            Video
                { Frames = frames; FrameSize = frameSize, frameSize; TubeletSize = tubelet; PatchSize = patch, patch
                  Channels = channels; Positions = Sinusoid }
        { preset input encoder decoder (Tube 0.9) with ClsToken = false }

    /// Trains on 2 CPU cores: 8 grey 48x48 frames (Moving-MNIST), tubelet 2x8x8 (4 x 6 x 6 = 144
    /// tokens), width 128 x 4 blocks, decoder 128 x 1; tube masking 90% keeps 4 tubes of 36.
    let videoTiny = videoMae 8 48 1 2 8 (128, 4, 4) (128, 1, 4)

    /// VideoMAE ViT-S/16: 16 RGB frames of 224x224, tubelet 2x16x16, decoder 192 x 4 (3 heads).
    let videoSmall = videoMae 16 224 3 2 16 (384, 12, 6) (192, 4, 3)

    /// VideoMAE ViT-B/16 (decoder 384 x 4, 6 heads).
    let videoBase = videoMae 16 224 3 2 16 (768, 12, 12) (384, 4, 6)

    /// VideoMAE ViT-L/16 (decoder 512 x 4, 8 heads).
    let videoLarge = videoMae 16 224 3 2 16 (1024, 24, 16) (512, 4, 8)

    /// VideoMAE ViT-H/16 (decoder 640 x 4, 8 heads).
    let videoHuge = videoMae 16 224 3 2 16 (1280, 32, 16) (640, 4, 8)

    let private series (channels: int) (length: int) (patch: int) (ci: bool) (revin: bool) (loss: SeriesLoss) masking encoderInput learned encoder decoder =
        let input =
            TimeSeries
                { Channels = channels; Length = length; PatchLength = patch; PatchStride = patch
                  ChannelIndependent = ci; RevIN = revin; Loss = loss }
        { preset input encoder decoder masking with
            NormPixLoss = false; ClsToken = false; LearnedPosEmbed = learned; EncoderInput = encoderInput }

    /// Trains on 2 CPU cores: 4 channels x 32 steps, segments of 8 (4 tokens per channel),
    /// channel-independent, no RevIN (a window's level is what its label depends on in the demo
    /// data; --revin on or patchTst's preset for RevIN), width 64 x 2 blocks, decoder 64 x 1, 50%
    /// random masking per sample (the same segments of every channel), masked MSE. The data set the
    /// channels and length.
    let seriesTiny =
        series 4 32 8 true false Mse (RandomPerSample 0.5) VisibleOnly false (64, 2, 4) (64, 1, 4)

    /// TSFormer's shape (STEP, TSFormer_METR-LA.py): segments of 12, width 96 x 4 blocks (4 heads),
    /// a 1-block decoder, 75% masking shared by the batch, learned positions, masked L1, no target
    /// normalisation; channel-mixed tokens here (TSFormer runs per node). Mae's blocks are pre-LN,
    /// TSFormer's post-LN.
    let tsformer =
        series 1 2016 12 false false L1 (RandomShared 0.75) VisibleOnly true (96, 4, 4) (96, 1, 4)

    /// PatchTST's self-supervised shape (PatchTST_self_supervised): context 512, segments of 12 side
    /// by side, channel-independent with RevIN, width 128 x 3 blocks (16 heads), 40% masking per
    /// sample and channel, the encoder sees every position (hidden ones as a mask token where
    /// PatchTST zero-fills them), a linear head, masked MSE.
    let patchTst =
        series 7 512 12 true true Mse (RandomPerChannel 0.4) AllWithMaskToken false (128, 3, 16) (128, 0, 16)

    /// The preset names of each modality: image tiny/base/large/huge, video
    /// tiny/small/base/large/huge, timeseries tiny/tsformer/patchtst.
    let namesFor (modality: string) =
        match (if isNull modality then "" else modality.ToLowerInvariant()) with
        | "image" -> names
        | "video" -> [| "tiny"; "small"; "base"; "large"; "huge" |]
        | "timeseries" -> [| "tiny"; "tsformer"; "patchtst" |]
        | _ -> Guard.fail "modality" (sprintf "\"%s\"" modality) ("one of " + String.Join(", ", Modality.Names))

    /// The preset of that name (case-insensitive); ArgumentException for an unknown name.
    let ofName (preset: string) =
        match (if isNull preset then "" else preset.ToLowerInvariant()) with
        | "tiny" -> tiny
        | "base" -> ``base``
        | "large" -> large
        | "huge" -> huge
        | _ -> Guard.fail "preset" (sprintf "\"%s\"" preset) ("one of " + String.Join(", ", names))

    /// The preset `preset` of `modality` (both case-insensitive): `ofName` for images, and
    /// videoTiny/Small/Base/Large/Huge for video. ArgumentException naming the unknown one.
    let ofModality (modality: string) (preset: string) =
        let known = namesFor modality
        let p = if isNull preset then "" else preset.ToLowerInvariant()
        if not (Array.contains p known) then
            Guard.fail "preset" (sprintf "\"%s\"" preset) (sprintf "one of %s for %s" (String.Join(", ", known)) (modality.ToLowerInvariant()))
        match modality.ToLowerInvariant(), p with
        | "timeseries", "tiny" -> seriesTiny
        | "timeseries", "tsformer" -> tsformer
        | "timeseries", _ -> patchTst
        | "video", "tiny" -> videoTiny
        | "video", "small" -> videoSmall
        | "video", "base" -> videoBase
        | "video", "large" -> videoLarge
        | "video", _ -> videoHuge
        | _ -> ofName p

    /// The configuration with other clip sizes (same modality: video; the positions kept).
    let withVideo (frames: int) (frameSize: int * int) (tubelet: int) (patchSize: int * int) (channels: int) (c: MaeConfig) =
        let positions = match c.Input with Video v -> v.Positions | _ -> Sinusoid
        { c with
            Input =
                Video
                    { Frames = frames; FrameSize = frameSize; TubeletSize = tubelet; PatchSize = patchSize
                      Channels = channels; Positions = positions } }

    /// The configuration reading `channels` series of `length` steps (its segments, tokenisation,
    /// RevIN and loss kept; a configuration of another modality gets seriesTiny's).
    let withSeries (channels: int) (length: int) (c: MaeConfig) =
        let s = match c.Input with TimeSeries s -> s | _ -> seriesTiny.Series
        { c with Input = TimeSeries { s with Channels = channels; Length = length } }

    /// The configuration with other image sizes (same modality: image).
    let withImage (imageSize: int * int) (patchSize: int * int) (channels: int) (c: MaeConfig) =
        { c with Input = Image { ImageSize = imageSize; PatchSize = patchSize; Channels = channels } }

    /// Every problem of the configuration, each an ArgumentException naming the setting, its value
    /// and the allowed range (empty when the configuration is valid).
    let problems (c: MaeConfig) : ArgumentException[] =
        let width (name: string) (value: int) =
            if value <= 0 || value % 4 <> 0 then Guard.fail name value "a positive multiple of 4"
        let heads (name: string) (value: int) (widthName: string) (w: int) =
            Guard.positive name value
            if w % value <> 0 then Guard.fail name value (sprintf "a divisor of %s %d" widthName w)
        let transformerDecoder = c.DecoderDepth > 0
        let checks: (unit -> unit) list =
            [ yield! (if isNull (box c.Input) then [ fun () -> Guard.notNull "Input" c.Input ] else c.Input.Problems())
              fun () -> Guard.positive "Depth" c.Depth
              fun () -> if c.DecoderDepth < 0 then Guard.fail "DecoderDepth" c.DecoderDepth "0 (a linear head) or a positive number of blocks"
              fun () -> width "EmbedDim" c.EmbedDim
              fun () -> if c.EmbedDim > 0 then heads "Heads" c.Heads "EmbedDim" c.EmbedDim
              if transformerDecoder then
                  fun () -> width "DecoderEmbedDim" c.DecoderEmbedDim
                  fun () -> if c.DecoderEmbedDim > 0 then heads "DecoderHeads" c.DecoderHeads "DecoderEmbedDim" c.DecoderEmbedDim
              fun () -> if not (c.MlpRatio > 0.0) then Guard.fail "MlpRatio" c.MlpRatio "a positive number"
              fun () -> Guard.notNull "Masking" c.Masking
              fun () ->
                  if not (isNull (box c.Masking)) && not (isNull (box c.Input)) then
                      let grid = c.Input.Grid
                      let l = Array.fold (*) 1 grid
                      let gridText = "[" + String.Join("; ", grid) + "]"
                      match c.Masking with
                      | Tube _ when grid.Length < 2 ->
                          Guard.fail "Masking" "tube" (sprintf "a masking that fits a token grid of %s (tube masking needs time slots and a spatial grid: video)" gridText)
                      | BlockWise _ | TimeFrequency _ when grid.Length <> 2 ->
                          Guard.fail "Masking" c.Masking.Name (sprintf "a masking that fits a token grid of %s (%s masking needs a 2D grid)" gridText c.Masking.Name)
                      | RandomPerSample r | RandomPerChannel r | RandomShared r when l > 0 && r >= 0.0 && r < 1.0 && int (float l * (1.0 - r)) < 1 ->
                          Guard.fail "MaskRatio" r (sprintf "a ratio that leaves at least one of the %d tokens visible (more tokens: a longer input or smaller patches)" l)
                      | _ -> ()
              fun () ->
                  match c.Masking, c.Input with
                  | RandomPerChannel _, TimeSeries s when s.ChannelIndependent -> ()
                  | RandomPerChannel _, _ -> Guard.fail "Masking" "random-per-channel" "a channel-independent series model for masking per channel (PatchTST); use random"
                  | _ -> ()
              fun () -> if not (isNull (box c.Masking)) then Guard.maskRatio "MaskRatio" c.MaskRatio ]
        [| for check in checks do
               try check () with :? ArgumentException as e -> yield e |]

    /// Checks every setting; raises ArgumentException naming the first bad one.
    let validate (c: MaeConfig) =
        match problems c with
        | [||] -> c
        | ps -> raise ps.[0]
