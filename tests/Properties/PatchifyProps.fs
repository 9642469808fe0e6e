/// Patchify / unpatchify: exact round trips in 1D, 2D, 3D and the token layout (channel last).
module Mae.Tests.Properties.PatchifyProps

open Expecto
open FsCheck.FSharp
open TorchSharp
open Mae
open Mae.Tests.Properties.Generators

/// 1D: x [N, C, L*p] with patch p.
type Case1d = { N: int; C: int; L: int; P: int; Seed: int64 }

/// 2D: x [N, C, h*ph, w*pw], a grid of h rows by w columns of ph x pw patches.
type Case2d = { N: int; C: int; H: int; W: int; Ph: int; Pw: int; Seed: int64 }

/// 3D: x [N, C, s*t, h*ph, w*pw], s time slots of t frames.
type Case3d = { N: int; C: int; S: int; H: int; W: int; T: int; Ph: int; Pw: int; Seed: int64 }

let cases1d =
    gen {
        let! n = Gen.choose (1, 4)
        let! c = Gen.choose (1, 4)
        let! l = Gen.choose (1, 8)
        let! p = Gen.choose (1, 6)
        let! seed = seeds
        return { Case1d.N = n; C = c; L = l; P = p; Seed = seed }
    }

let cases2d =
    gen {
        let! n = Gen.choose (1, 4)
        let! c = Gen.choose (1, 4)
        let! h = Gen.choose (1, 5)
        let! w = Gen.choose (1, 5)
        let! ph = Gen.choose (1, 5)
        let! pw = Gen.choose (1, 5)
        let! seed = seeds
        return { Case2d.N = n; C = c; H = h; W = w; Ph = ph; Pw = pw; Seed = seed }
    }

let cases3d =
    gen {
        let! n = Gen.choose (1, 2)
        let! c = Gen.choose (1, 3)
        let! s = Gen.choose (1, 3)
        let! h = Gen.choose (1, 3)
        let! w = Gen.choose (1, 3)
        let! t = Gen.choose (1, 3)
        let! ph = Gen.choose (1, 3)
        let! pw = Gen.choose (1, 3)
        let! seed = seeds
        return { Case3d.N = n; C = c; S = s; H = h; W = w; T = t; Ph = ph; Pw = pw; Seed = seed }
    }

let private i64 (x: int) = int64 x

let roundTrip1d (c: Case1d) =
    use _ = torch.NewDisposeScope()
    let x = randn c.Seed [| i64 c.N; i64 c.C; i64 (c.L * c.P) |]
    let tokens = Patchify.patchify1d c.P x
    expectShape tokens [ i64 c.N; i64 c.L; i64 (c.P * c.C) ] "patchify1d"
    expectEqual (Patchify.unpatchify1d c.P c.C tokens) x "unpatchify1d (patchify1d x)"
    let other = randn (c.Seed + 1L) tokens.shape
    expectEqual (Patchify.patchify1d c.P (Patchify.unpatchify1d c.P c.C other)) other "patchify1d (unpatchify1d y)"

/// Token i is the segment x[:, :, i*p .. (i+1)*p) laid out (p, C).
let layout1d (c: Case1d) =
    use _ = torch.NewDisposeScope()
    let x = randn c.Seed [| i64 c.N; i64 c.C; i64 (c.L * c.P) |]
    let tokens = Patchify.patchify1d c.P x
    for i in 0 .. c.L - 1 do
        let segment = x.narrow(2L, i64 (i * c.P), i64 c.P).permute(0L, 2L, 1L).reshape(i64 c.N, -1L)
        expectEqual (tokens.select(1L, i64 i)) segment (sprintf "token %d" i)

let roundTrip2d (c: Case2d) =
    use _ = torch.NewDisposeScope()
    let x = randn c.Seed [| i64 c.N; i64 c.C; i64 (c.H * c.Ph); i64 (c.W * c.Pw) |]
    let tokens = Patchify.patchify2d (c.Ph, c.Pw) x
    expectShape tokens [ i64 c.N; i64 (c.H * c.W); i64 (c.Ph * c.Pw * c.C) ] "patchify2d"
    expectEqual (Patchify.unpatchify2d (c.Ph, c.Pw) (c.H, c.W) c.C tokens) x "unpatchify2d (patchify2d x)"
    let other = randn (c.Seed + 1L) tokens.shape
    let back = Patchify.patchify2d (c.Ph, c.Pw) (Patchify.unpatchify2d (c.Ph, c.Pw) (c.H, c.W) c.C other)
    expectEqual back other "patchify2d (unpatchify2d y)"

/// Token i*w + j is the patch at grid row i, column j, laid out (ph, pw, C).
let layout2d (c: Case2d) =
    use _ = torch.NewDisposeScope()
    let x = randn c.Seed [| i64 c.N; i64 c.C; i64 (c.H * c.Ph); i64 (c.W * c.Pw) |]
    let tokens = Patchify.patchify2d (c.Ph, c.Pw) x
    for i in 0 .. c.H - 1 do
        for j in 0 .. c.W - 1 do
            let patch =
                x.narrow(2L, i64 (i * c.Ph), i64 c.Ph).narrow(3L, i64 (j * c.Pw), i64 c.Pw)
                    .permute(0L, 2L, 3L, 1L) // [N, ph, pw, C]
                    .reshape(i64 c.N, -1L)
            expectEqual (tokens.select(1L, i64 (i * c.W + j))) patch (sprintf "token of patch (%d, %d)" i j)

/// The first token of a hand-written image: pixel (y, x) of channel ch is 100*ch + 10*y + x.
let firstTokenByHand =
    testCase "patchify2d first token is the top-left patch in (p, q, C) order" <| fun () ->
        use _ = torch.NewDisposeScope()
        let c, hh, ww, ph, pw = 2, 4, 6, 2, 3
        let pixels = Array.init (c * hh * ww) (fun k -> float32 (100 * (k / (hh * ww)) + 10 * (k / ww % hh) + k % ww))
        let x = torch.tensor(pixels).reshape(1L, i64 c, i64 hh, i64 ww)
        let expected = [| for y in 0 .. ph - 1 do for xx in 0 .. pw - 1 do for ch in 0 .. c - 1 -> float32 (100 * ch + 10 * y + xx) |]
        let first = (Patchify.patchify2d (ph, pw) x).select(0L, 0L).select(0L, 0L)
        Expect.sequenceEqual (first.data<float32>().ToArray()) expected "first token"

let roundTrip3d (c: Case3d) =
    use _ = torch.NewDisposeScope()
    let x = randn c.Seed [| i64 c.N; i64 c.C; i64 (c.S * c.T); i64 (c.H * c.Ph); i64 (c.W * c.Pw) |]
    let patch, grid = (c.T, c.Ph, c.Pw), (c.S, c.H, c.W)
    let tokens = Patchify.patchify3d patch x
    expectShape tokens [ i64 c.N; i64 (c.S * c.H * c.W); i64 (c.T * c.Ph * c.Pw * c.C) ] "patchify3d"
    expectEqual (Patchify.unpatchify3d patch grid c.C tokens) x "unpatchify3d (patchify3d x)"
    let other = randn (c.Seed + 1L) tokens.shape
    expectEqual (Patchify.patchify3d patch (Patchify.unpatchify3d patch grid c.C other)) other "patchify3d (unpatchify3d y)"

/// Token slot*(h*w) + i*w + j is the tubelet at that slot, row and column, laid out (t, ph, pw, C).
let layout3d (c: Case3d) =
    use _ = torch.NewDisposeScope()
    let x = randn c.Seed [| i64 c.N; i64 c.C; i64 (c.S * c.T); i64 (c.H * c.Ph); i64 (c.W * c.Pw) |]
    let tokens = Patchify.patchify3d (c.T, c.Ph, c.Pw) x
    for s in 0 .. c.S - 1 do
        for i in 0 .. c.H - 1 do
            for j in 0 .. c.W - 1 do
                let tubelet =
                    x.narrow(2L, i64 (s * c.T), i64 c.T).narrow(3L, i64 (i * c.Ph), i64 c.Ph)
                        .narrow(4L, i64 (j * c.Pw), i64 c.Pw)
                        .permute(0L, 2L, 3L, 4L, 1L) // [N, t, ph, pw, C]
                        .reshape(i64 c.N, -1L)
                let k = s * c.H * c.W + i * c.W + j
                expectEqual (tokens.select(1L, i64 k)) tubelet (sprintf "token of tubelet (%d, %d, %d)" s i j)

let tests =
    testList "patchify" [
        property "1D round trip" cases1d roundTrip1d
        property "1D token layout (p, C)" cases1d layout1d
        property "2D round trip (any C, non-square, rectangular patches)" cases2d roundTrip2d
        property "2D token layout (ph, pw, C), row-major grid" cases2d layout2d
        firstTokenByHand
        property "3D round trip" cases3d roundTrip3d
        property "3D token layout (t, ph, pw, C), slot-major grid" cases3d layout3d
    ]
