/// Time series: segmenting round trips (channel-independent and channel-mixed, side by side and
/// overlapping), RevIN's inverse, the masking kinds' kept counts and structure on a sample's
/// channel rows, and a series objective that ignores predictions at visible segments.
module Mae.Tests.Properties.SeriesProps

open System
open Expecto
open FsCheck.FSharp
open TorchSharp
open Mae
open Mae.Tests.Properties.Generators

/// A series model's input: N windows of C channels and T steps, segments of P every S.
type SeriesCase =
    { N: int
      C: int
      P: int
      S: int
      Segments: int
      Offset: int
      Independent: bool
      Seed: int64 }
    member c.T = c.Offset + c.P + (c.Segments - 1) * c.S
    member c.Input =
        { Channels = c.C; Length = c.T; PatchLength = c.P; PatchStride = c.S; ChannelIndependent = c.Independent; RevIN = false; Loss = Mse }

let seriesCases =
    gen {
        let! n = Gen.choose (1, 3)
        let! c = Gen.choose (1, 4)
        let! p = Gen.choose (1, 6)
        let! s = Gen.choose (1, p)
        let! segments = Gen.choose (1, 6)
        let! offset = Gen.choose (0, s - 1)
        let! independent = Gen.elements [ true; false ]
        let! seed = seeds
        return { N = n; C = c; P = p; S = s; Segments = segments; Offset = offset; Independent = independent; Seed = seed }
    }

let private adapter (c: SeriesCase) = new SeriesAdapter(c.Input, 8)

/// Reassembling the target gives the window back (overlapping steps averaged; the first
/// (T - P) mod S steps, in no segment, are zero), and the target has the documented layout.
let segmentRoundTrip (c: SeriesCase) =
    use _ = torch.NewDisposeScope()
    use a = adapter c
    let x = randn c.Seed [| int64 c.N; int64 c.C; int64 c.T |]
    let target = a.Target x
    let rows, width = (if c.Independent then c.N * c.C, c.P else c.N, c.P * c.C)
    expectShape target [ int64 rows; int64 c.Segments; int64 width ] "target [rows, L, width]"
    // segment l of channel k starts at Offset + l*S
    let expected (n: int) (k: int) (l: int) (j: int) = x.[int64 n, int64 k, int64 (c.Offset + l * c.S + j)].item<float32>()
    let n, k, l, j = c.N - 1, c.C - 1, c.Segments - 1, c.P - 1
    let actual = if c.Independent then target.[int64 (n * c.C + k), int64 l, int64 j] else target.[int64 n, int64 l, int64 (j * c.C + k)]
    Expect.equal (actual.item<float32>()) (expected n k l j) "last step of the last segment of the last channel"
    let back = a.Reassemble target
    expectShape back [ int64 c.N; int64 c.C; int64 c.T ] "reassembled [N, C, T]"
    let covered = x.narrow(2L, int64 c.Offset, int64 (c.T - c.Offset))
    Expect.isLessThan ((back.narrow(2L, int64 c.Offset, int64 (c.T - c.Offset)) - covered).abs().max().item<float32>()) 1e-5f "covered steps come back"
    if c.Offset > 0 then
        Expect.isTrue (eqScalar (back.narrow(2L, 0L, int64 c.Offset)) 0.0 |> fun t -> t.all().item<bool>()) "uncovered steps are zero"

/// RevIN: denormalising the normalised window gives it back, whatever the affine map.
let revinIdentity (c: SeriesCase) =
    use _ = torch.NewDisposeScope()
    use revin = new RevIN(c.C)
    use _ = torch.no_grad()
    for struct (_, p) in revin.named_parameters() do
        p.copy_(randn (c.Seed + 5L) p.shape * 0.5 + 1.5) |> ignore
    let x = randn c.Seed [| int64 c.N; int64 c.C; int64 c.T |] * 7.0 + 3.0
    let mean, stdev = revin.Statistics x
    let back = revin.Denormalise(revin.Normalise(x, mean, stdev), mean, stdev)
    Expect.isLessThan ((back - x).abs().max().item<float32>()) 1e-3f "Denormalise (Normalise x) = x"
    let z = revin.Standardise(x, mean, stdev).to_type(ScalarType.Float64)
    if c.T > 1 then
        Expect.isLessThan (z.mean([| 2L |]).abs().max().item<float>()) 1e-4 "standardised: per-channel mean 0"

/// The masking kinds on a channel-independent batch of N*C rows: exact kept count per row;
/// random: the C rows of a sample share their mask; shared: one mask for every row;
/// random-per-channel: rows differ (for some seed) but each keeps the count.
let maskingOnRows (c: SeriesCase, ratio: float, kind: string) =
    use _ = torch.NewDisposeScope()
    let l = c.Segments * 4
    let x = torch.zeros(int64 (c.N * c.C), int64 l, 3L)
    use g = generator c.Seed
    let strategy = MaskingStrategy.ofName kind ratio
    let m = MaskingStrategy.applyRows strategy [| l |] c.C g x
    let keep = Masking.keepCount l ratio
    let hidden = m.Mask.sum([| 1L |])
    Expect.isTrue (eqScalar hidden (float (l - keep)) |> fun t -> t.all().item<bool>()) (sprintf "%s: %d hidden per row" kind (l - keep))
    expectShape m.Visible [ int64 (c.N * c.C); int64 keep; 3L ] "visible tokens"
    let perSample = m.Mask.reshape(int64 c.N, int64 c.C, int64 l)
    match kind with
    | "random" ->
        Expect.isTrue (perSample.eq(perSample.narrow(1L, 0L, 1L)).all().item<bool>()) "the channels of a sample share their mask"
    | "random-shared" ->
        Expect.isTrue (m.Mask.eq(m.Mask.narrow(0L, 0L, 1L)).all().item<bool>()) "one mask for every row"
    | _ -> ()

/// A series objective (MSE or L1, from Build.objective) gives zero gradient to predictions at
/// visible segments and does not change when they change.
let seriesObjectiveIgnoresVisible (c: SeriesCase, l1: bool) =
    use _ = torch.NewDisposeScope()
    let config = { MaeConfig.withSeries c.C c.T MaeConfig.seriesTiny with Input = TimeSeries { c.Input with Loss = (if l1 then L1 else Mse) } }
    let objective = Build.objective config
    let rows, width = (if c.Independent then c.N * c.C, c.P else c.N, c.P * c.C)
    let shape = [| int64 rows; int64 c.Segments; int64 width |]
    let target = randn c.Seed shape
    use g = generator (c.Seed + 1L)
    let mask = torch.rand([| int64 rows; int64 c.Segments |], generator = g).lt((0.5).ToScalar()).to_type(ScalarType.Float32)
    let pred = (randn (c.Seed + 2L) shape).requires_grad_(true)
    let input = { Batch = null; Target = target; Pred = pred; Mask = mask; Latent = null }
    (Objective.loss objective input).backward()
    let hidden = mask.to_type(ScalarType.Bool).unsqueeze(-1L).expand(shape)
    Expect.isTrue (eqScalar (pred.grad.masked_select(hidden.logical_not())) 0.0 |> fun t -> t.all().item<bool>()) "zero gradient at visible segments"
    use _ = torch.no_grad()
    let changed = torch.where(hidden, pred, randn (c.Seed + 3L) shape * 10.0)
    expectEqual (Objective.loss objective { input with Pred = changed }) (Objective.loss objective { input with Pred = pred }) "loss after changing visible predictions"

let tests =
    testList "time series" [
        property "segments: target layout, and reassembling gives the window back (channel-independent and mixed, overlapping or not)" seriesCases segmentRoundTrip
        property "RevIN: denormalise (normalise x) = x; standardised mean 0" seriesCases revinIdentity
        property "masking on channel rows: exact kept count; random shared by a sample's channels; random-shared by all"
            (Gen.zip3 seriesCases (Gen.elements [ 0.25; 0.5; 0.75 ]) (Gen.elements [ "random"; "random-per-channel"; "random-shared" ])) maskingOnRows
        property "the series objective (MSE and L1) ignores predictions at visible segments" (Gen.zip seriesCases (Gen.elements [ true; false ])) seriesObjectiveIgnoresVisible
    ]
