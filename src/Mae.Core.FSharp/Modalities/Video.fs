/// The video modality (VideoMAE, Tong et al. 2022): clips [N, C, T, H, W] cut into tubelets of
/// t frames x ph x pw pixels, ordered time slot first, then patch rows, then columns; each
/// tubelet embedded by a linear map and reconstructed as its pixels.
namespace Mae

open TorchSharp

open type TorchSharp.torch.nn

/// Which fixed positional table a video model uses.
type VideoPositions =
    /// VideoMAE's: the transformer's 1D sinusoid table over all s*h*w tokens in their order
    /// (modeling_pretrain.py get_sinusoid_encoding_table; sin on even, cos on odd widths).
    | Sinusoid
    /// A 3D sin-cos table: the width split between the time slot, the column and the row
    /// (`PosEmbed.sinCos3d`).
    | SinCos3d

    member p.Name =
        match p with
        | Sinusoid -> "sinusoid"
        | SinCos3d -> "sincos3d"

    static member Names = [| "sinusoid"; "sincos3d" |]

    /// The table of that name; ArgumentException naming `positions` otherwise.
    static member OfName(name: string) =
        match (if isNull name then "" else name.ToLowerInvariant()) with
        | "sinusoid" -> Sinusoid
        | "sincos3d" -> SinCos3d
        | _ -> Guard.fail "positions" (sprintf "\"%s\"" name) "sinusoid or sincos3d"

/// What a video model reads: frame count and size, the tubelet, the channels and the positions.
type VideoInput =
    { /// Frames T per clip.
      Frames: int
      /// Frame height and width in pixels.
      FrameSize: int * int
      /// Frames per tubelet t (VideoMAE: 2).
      TubeletSize: int
      /// Tubelet height and width in pixels (VideoMAE: 16 x 16).
      PatchSize: int * int
      /// Input channels C.
      Channels: int
      /// The fixed positional table (VideoMAE: Sinusoid).
      Positions: VideoPositions }

    /// Token grid (time slots T/t, rows H/ph, columns W/pw).
    member v.Grid =
        let (h, w), (ph, pw) = v.FrameSize, v.PatchSize
        v.Frames / v.TubeletSize, h / ph, w / pw

    /// Tokens per clip L = slots * rows * columns.
    member v.NumTokens =
        let s, h, w = v.Grid
        s * h * w

    /// Width of a token's target vector: t * ph * pw * C.
    member v.TubeletDim =
        let ph, pw = v.PatchSize
        v.TubeletSize * ph * pw * v.Channels

    /// Every problem of the sizes, each an ArgumentException naming the setting.
    member v.Problems() : (unit -> unit) list =
        let h, w = v.FrameSize
        let ph, pw = v.PatchSize
        [ fun () -> Guard.positive "Frames" v.Frames
          fun () -> Guard.positive "TubeletSize" v.TubeletSize
          fun () ->
              if v.Frames > 0 && v.TubeletSize > 0 && v.Frames % v.TubeletSize <> 0 then
                  Guard.fail "Frames" v.Frames (sprintf "a multiple of the tubelet length TubeletSize = %d" v.TubeletSize)
          fun () -> Guard.positive "FrameSize height" h
          fun () -> Guard.positive "FrameSize width" w
          fun () -> Guard.positive "PatchSize height" ph
          fun () -> Guard.positive "PatchSize width" pw
          fun () -> if h > 0 && ph > 0 then Guard.divisible "FrameSize height" (int64 h) ph "height"
          fun () -> if w > 0 && pw > 0 then Guard.divisible "FrameSize width" (int64 w) pw "width"
          fun () -> Guard.positive "Channels" v.Channels ]

/// The video adapter: patch_embed.* (a PatchEmbed of t x ph x pw tubelets, stored as VideoMAE's
/// Conv3d and left at PyTorch's default init as VideoMAE leaves it), the fixed table chosen by `Positions`, the tubelets' pixels as the target
/// in VideoMAE's layout (`b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2 c)`, channel last).
type VideoAdapter(input: VideoInput, dim: int) as this =
    inherit InputAdapter("VideoAdapter")
    let patch_embed = new PatchEmbed(input.Channels, dim, [| input.TubeletSize; fst input.PatchSize; snd input.PatchSize |])
    do this.RegisterComponents()

    member _.Input = input

    override _.Grid =
        let s, h, w = input.Grid
        [| s; h; w |]

    /// Clips must match the model: [N, C, T, H, W] with N >= 1; a frame count that is not the
    /// model's (and so maybe not a multiple of the tubelet length) names both.
    override _.Check(argument: string, clips: Tensor) =
        Guard.rank argument 5 "[N, C, T, H, W]" clips
        Guard.nonEmptyBatch argument clips
        let h, w = input.FrameSize
        if clips.shape.[1] <> int64 input.Channels || clips.shape.[2] <> int64 input.Frames
           || clips.shape.[3] <> int64 h || clips.shape.[4] <> int64 w then
            Guard.fail argument (Guard.shapeOf clips)
                (sprintf "[N, %d, %d, %d, %d] (the model's Channels, Frames (%d tubelets of %d) and FrameSize)"
                    input.Channels input.Frames h w (input.Frames / input.TubeletSize) input.TubeletSize)

    override _.Pieces(clips: Tensor) = patch_embed.Pixels clips
    override _.Embed(pixels: Tensor) = patch_embed.Project pixels
    override _.Target(clips: Tensor) = Patchify.patchify3d (input.TubeletSize, fst input.PatchSize, snd input.PatchSize) clips
    override _.TargetWidth = input.TubeletDim
    override _.Reassemble(tokens: Tensor) =
        Patchify.unpatchify3d (input.TubeletSize, fst input.PatchSize, snd input.PatchSize) input.Grid input.Channels tokens
    override _.Positions(dim: int) =
        match input.Positions with
        | Sinusoid -> PosEmbed.sinusoid dim input.NumTokens
        | SinCos3d -> PosEmbed.sinCos3d dim input.Grid false
