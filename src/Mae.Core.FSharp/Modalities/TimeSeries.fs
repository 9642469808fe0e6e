/// The time-series modality (TSFormer/STEP, Shao et al. 2022; PatchTST, Nie et al. 2023): series
/// [N, C, T] cut into segments of p steps every s steps, either channel-mixed (a token holds all C
/// channels of a segment, TSFormer-style) or channel-independent (each channel its own token
/// sequence through the same weights, PatchTST); optional RevIN instance normalisation.
namespace Mae

open TorchSharp
open TorchSharp.Modules

open type TorchSharp.torch.nn

/// The reconstruction loss of a series model on hidden segments.
type SeriesLoss =
    /// Masked mean squared error (PatchTST).
    | Mse
    /// Masked mean absolute error (TSFormer: BasicTS masked_mae).
    | L1

    member l.Name =
        match l with
        | Mse -> "mse"
        | L1 -> "l1"

/// What a series model reads: channels, window length, the segments and how channels are tokenised.
type SeriesInput =
    { /// Channels (variables) C.
      Channels: int
      /// Steps T per window.
      Length: int
      /// Steps per segment p (PatchTST: 12; TSFormer: 12).
      PatchLength: int
      /// Steps between segment starts s (= p: segments side by side; < p: overlapping, PatchTST's
      /// stride). When (T - p) is not a multiple of s the first (T - p) mod s steps are left out, as
      /// PatchTST's create_patch keeps the last p + s(L - 1) steps.
      PatchStride: int
      /// Each channel its own token sequence (PatchTST) instead of one token per segment holding
      /// every channel (TSFormer-style channel mixing).
      ChannelIndependent: bool
      /// RevIN (Kim et al. 2022): each window normalised per channel by its own mean and standard
      /// deviation, with a learnable affine map, before tokenising; the reconstruction target is the
      /// window normalised by the same statistics without the affine map (so that the learnable
      /// part cannot shrink the target), and forecasts are mapped back through the inverse.
      RevIN: bool
      /// Reconstruction loss on hidden segments.
      Loss: SeriesLoss }

    /// Segments per channel L = (T - p) / s + 1.
    member s.NumPatches = (s.Length - s.PatchLength) / s.PatchStride + 1

    /// Leading steps left out of the segments: (T - p) mod s.
    member s.Offset = (s.Length - s.PatchLength) % s.PatchStride

    /// Token rows per sample: C when channel-independent, else 1.
    member s.RowsPerSample = if s.ChannelIndependent then s.Channels else 1

    /// Width of a token's raw piece and target: p (channel-independent) or p * C.
    member s.PieceWidth = if s.ChannelIndependent then s.PatchLength else s.PatchLength * s.Channels

    /// Every problem of the sizes, each an ArgumentException naming the setting.
    member s.Problems() : (unit -> unit) list =
        [ fun () -> Guard.positive "Channels" s.Channels
          fun () -> Guard.positive "PatchLength" s.PatchLength
          fun () -> Guard.positive "PatchStride" s.PatchStride
          fun () -> if s.PatchStride > 0 && s.PatchLength > 0 && s.PatchStride > s.PatchLength then Guard.fail "PatchStride" s.PatchStride (sprintf "at most PatchLength = %d (segments may overlap, not leave gaps)" s.PatchLength)
          fun () ->
              if s.PatchLength > 0 && s.Length < s.PatchLength then
                  Guard.fail "Length" s.Length (sprintf "at least one segment: Length >= PatchLength = %d" s.PatchLength) ]

/// RevIN (Kim et al. 2022, reference RevIN.py): per window and channel, x -> (x - mean) / stdev *
/// affine_weight + affine_bias with stdev = sqrt(biased variance + eps), eps 1e-5; the inverse maps
/// outputs back. Statistics are taken without gradient, as the reference detaches them.
[<AllowNullLiteral>]
type RevIN(channels: int, eps: float) as this =
    inherit Module("RevIN")
    let affine_weight = Parameter(torch.ones(int64 channels))
    let affine_bias = Parameter(torch.zeros(int64 channels))
    do this.RegisterComponents()

    new(channels) = new RevIN(channels, 1e-5)

    /// x [N, C, T] -> (mean [N, C, 1], stdev [N, C, 1]), without gradient.
    member _.Statistics(x: Tensor) =
        use _ = torch.no_grad()
        let mean = x.mean([| 2L |], keepdim = true)
        let stdev = (x.var(2L, unbiased = false, keepdim = true) + eps).sqrt()
        mean, stdev

    /// (x - mean) / stdev, no affine map: [N, C, T].
    member _.Standardise(x: Tensor, mean: Tensor, stdev: Tensor) = (x - mean) / stdev

    /// The normalised window with the affine map: [N, C, T].
    member this.Normalise(x: Tensor, mean: Tensor, stdev: Tensor) =
        this.Standardise(x, mean, stdev) * affine_weight.reshape(1L, -1L, 1L) + affine_bias.reshape(1L, -1L, 1L)

    /// The inverse of `Normalise` on outputs y [N, C, K] (e.g. a forecast): RevIN.py's _denormalize.
    member _.Denormalise(y: Tensor, mean: Tensor, stdev: Tensor) =
        (y - affine_bias.reshape(1L, -1L, 1L)) / (affine_weight.reshape(1L, -1L, 1L) + eps * eps) * stdev + mean

/// Segment embedding: a linear map of each segment's p (or p*C) values, stored as proj.{weight,bias}.
type SegmentEmbed(width: int, dim: int) as this =
    inherit Module<Tensor, Tensor>("SegmentEmbed")
    let proj = Linear(int64 width, int64 dim)
    do this.RegisterComponents()
    override _.forward(pieces: Tensor) = Precision.linearWith pieces proj.weight proj.bias

/// The series adapter: patch_embed.proj (SegmentEmbed), revin.* when RevIN, 1D sin-cos positions
/// over the L segments (a learned table when the configuration says so), the segments' values as
/// the target (RevIN-standardised when RevIN). Channel-independent: [N, C, T] -> rows N*C.
type SeriesAdapter(input: SeriesInput, dim: int) as this =
    inherit InputAdapter("SeriesAdapter")
    let patch_embed = new SegmentEmbed(input.PieceWidth, dim)
    let revin = if input.RevIN then new RevIN(input.Channels) else null
    do this.RegisterComponents()
    let p, s, l = int64 input.PatchLength, int64 input.PatchStride, int64 input.NumPatches

    /// [N, C, T] -> [N, C, L, p]: segments of the last p + s(L-1) steps.
    let segments (x: Tensor) = x.narrow(2L, int64 input.Offset, x.shape.[2] - int64 input.Offset).unfold(2L, p, s)

    /// [N, C, L, p] -> the token layout: [N*C, L, p] or [N, L, p*C] (channel last within a segment).
    let tokens (seg: Tensor) =
        let n, c = seg.shape.[0], seg.shape.[1]
        if input.ChannelIndependent then seg.reshape(n * c, l, p)
        else seg.permute(0L, 2L, 3L, 1L).reshape(n, l, p * c)

    member _.Input = input

    /// The RevIN part, or null.
    member _.RevIN = revin

    /// The window standardised as the target is (RevIN without the affine map), or the window.
    member _.TargetSeries(x: Tensor) =
        if isNull revin then x
        else
            let mean, stdev = revin.Statistics x
            revin.Standardise(x, mean, stdev)

    override _.Grid = [| input.NumPatches |]
    override _.RowsPerSample = input.RowsPerSample

    /// Series must match the model: [N, C, T] with N >= 1; a series shorter than one segment or of
    /// another length names both.
    override _.Check(argument: string, x: Tensor) =
        Guard.rank argument 3 "[N, C, T]" x
        Guard.nonEmptyBatch argument x
        if x.shape.[1] <> int64 input.Channels || x.shape.[2] <> int64 input.Length then
            Guard.fail argument (Guard.shapeOf x)
                (sprintf "[N, %d, %d] (the model's Channels and Length: %d segments of %d steps every %d)"
                    input.Channels input.Length input.NumPatches input.PatchLength input.PatchStride)

    override _.Pieces(x: Tensor) =
        let normalised =
            if isNull revin then x
            else
                let mean, stdev = revin.Statistics x
                revin.Normalise(x, mean, stdev)
        tokens (segments normalised)

    override _.Embed(pieces: Tensor) = patch_embed.forward pieces
    override this.Target(x: Tensor) = tokens (segments (this.TargetSeries x))
    override _.TargetWidth = input.PieceWidth

    /// Tokens [N*C, L, p] or [N, L, p*C] -> [N, C, T]: each segment put back at its place,
    /// overlapping steps averaged, the leading (T - p) mod s steps (never in a segment) zero.
    override _.Reassemble(t: Tensor) =
        let c = int64 input.Channels
        let seg =
            if input.ChannelIndependent then t.reshape(-1L, c, l, p)
            else t.reshape(-1L, l, p, c).permute(0L, 3L, 1L, 2L) // [N, C, L, p]
        let n = seg.shape.[0]
        let total = int64 input.Length
        let sum = torch.zeros([| n; c; total |], dtype = t.dtype, device = t.device)
        let count = torch.zeros([| total |], dtype = t.dtype, device = t.device)
        for i in 0L .. l - 1L do
            let start = int64 input.Offset + i * s
            sum.narrow(2L, start, p).add_(seg.select(2L, i)) |> ignore
            count.narrow(0L, start, p).add_(1.0.ToScalar()) |> ignore
        sum / count.clamp_min(1.0)

    override _.Positions(dim: int) = PosEmbed.sinCos1d dim input.NumPatches false
