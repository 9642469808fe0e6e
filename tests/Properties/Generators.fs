/// FsCheck generators for the property tests: small random shapes, exact mask ratios and seeds,
/// plus the helpers every property file uses (config, generators, tensor comparisons).
module Mae.Tests.Properties.Generators

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Mae

/// Few cases per property, so the whole project runs in seconds on two cores.
let config = { FsCheckConfig.defaultConfig with maxTest = 50 }

/// A property over the cases drawn by `cases`, with `config`.
let property name (cases: Gen<'a>) (check: 'a -> unit) =
    testPropertyWithConfig config name (Prop.forAll (Arb.fromGen cases) check)

/// Like `property` with its own number of cases.
let propertyN maxTest name (cases: Gen<'a>) (check: 'a -> unit) =
    testPropertyWithConfig { config with maxTest = maxTest } name (Prop.forAll (Arb.fromGen cases) check)

/// An explicit CPU generator (the caller disposes it).
let generator (seed: int64) = new torch.Generator(uint64 seed, torch.CPU)

/// Standard normal values of the given shape drawn from `seed`: [shape] float32.
let randn (seed: int64) (shape: int64[]) =
    use g = generator seed
    torch.randn(shape, generator = g)

let seeds = Gen.choose (0, Int32.MaxValue) |> Gen.map int64

/// Exact bitwise equality of two tensors (shape, dtype and every value).
let expectEqual (actual: Tensor) (expected: Tensor) (what: string) =
    Expect.sequenceEqual actual.shape expected.shape (what + ": shape")
    Expect.equal actual.dtype expected.dtype (what + ": dtype")
    Expect.isTrue (actual.eq(expected).all().item<bool>()) (what + ": values")

/// A tensor of `shape` filled with `v`: int64.
let constI64 (shape: int64[]) (v: int64) =
    torch.tensor(Array.create (int (Array.fold (*) 1L shape)) v).reshape(shape)

/// A tensor of `shape` filled with `v`: float32.
let constF32 (shape: int64[]) (v: float32) =
    torch.tensor(Array.create (int (Array.fold (*) 1L shape)) v).reshape(shape)

/// Elementwise `t = v` as a bool tensor.
let eqScalar (t: Tensor) (v: float) = t.eq(v.ToScalar())

let expectShape (t: Tensor) (shape: int64 list) (what: string) =
    Expect.sequenceEqual t.shape (Array.ofList shape) (what + ": shape")

/// A mask ratio Num/Den. `Value` is the double the masking functions get; the kept counts follow
/// the references' double arithmetic on it, so decimal ratios that are not exact doubles count as
/// the references count them (10 tokens at 9/10 keep int(10 * (1 - 0.9)) = int(0.99...98) = 0).
type Ratio =
    { Num: int
      Den: int }
    member r.Value = float r.Num / float r.Den
    /// MAE's kept count int(count * (1 - r)) in double precision (models_mae.py random_masking).
    member r.Keep(count: int) = int (float count * (1.0 - r.Value))
    /// VideoMAE's kept count per time slot: count - int(r * count) (TubeMaskingGenerator).
    member r.TubeKeep(count: int) = count - int (r.Value * float count)

let ratios =
    gen {
        let! den = Gen.elements [ 2; 3; 4; 5; 8; 10; 20; 100 ]
        let! num = Gen.frequency [ 1, Gen.constant 0; 6, Gen.choose (0, den - 1) ]
        return { Num = num; Den = den }
    }

/// The reference ratios the papers use, decimal doubles included.
let paperRatios =
    Gen.elements [ { Num = 75; Den = 100 }; { Num = 9; Den = 10 }; { Num = 8; Den = 10 }; { Num = 15; Den = 100 }
                   { Num = 6; Den = 10 }; { Num = 7; Den = 10 }; { Num = 1; Den = 2 }; { Num = 3; Den = 10 } ]

let anyRatio = Gen.frequency [ 3, ratios; 1, paperRatios ]

// ---- masking cases ----

/// Which masking function a case exercises, with its grid.
type MaskKind =
    | PerSample
    | BatchShared
    | Tube of slots: int
    /// F frequency rows x T time columns; the case's Ratio is the time ratio.
    | TimeFrequency of freqRows: int * timeCols: int * freqRatio: Ratio
    | Block of h: int * w: int
    /// `hidden` tokens per row chosen at random, passed to Masking.given.
    | Given of hidden: int

type MaskCase =
    { Kind: MaskKind
      N: int
      L: int
      D: int
      Ratio: Ratio
      Seed: int64 }

    /// The kept (visible) count per sample the design promises.
    member c.ExpectedKeep =
        match c.Kind with
        | PerSample
        | BatchShared
        | Block _ -> c.Ratio.Keep c.L
        | Tube slots -> slots * c.Ratio.TubeKeep(c.L / slots)
        | TimeFrequency(f, t, rf) -> rf.Keep f * c.Ratio.Keep t
        | Given hidden -> c.L - hidden

    /// Every masked axis keeps at least one token (ratios that would hide all are rejected by
    /// the library, which a separate property checks).
    member c.KeepsSome =
        match c.Kind with
        | TimeFrequency(f, t, rf) -> rf.Keep f >= 1 && c.Ratio.Keep t >= 1
        | Tube slots -> c.Ratio.TubeKeep(c.L / slots) >= 1
        | _ -> c.ExpectedKeep >= 1

let kindNames = [ "random"; "randomShared"; "tube"; "timeFrequency"; "block"; "given" ]

/// Cases of one kind (by name, see `kindNames`), with small shapes.
let maskCasesOf (kind: string) =
    gen {
        let! n = Gen.choose (1, 4)
        let! d = Gen.choose (1, 4)
        let! ratio = anyRatio
        let! seed = seeds
        let! kind, l =
            match kind with
            | "random" -> Gen.choose (1, 40) |> Gen.map (fun l -> PerSample, l)
            | "randomShared" -> Gen.choose (1, 40) |> Gen.map (fun l -> BatchShared, l)
            | "tube" ->
                Gen.zip (Gen.choose (1, 4)) (Gen.choose (1, 12)) |> Gen.map (fun (slots, s) -> Tube slots, slots * s)
            | "timeFrequency" ->
                gen {
                    let! f = Gen.choose (1, 8)
                    let! t = Gen.choose (1, 8)
                    let! rf = anyRatio
                    return TimeFrequency(f, t, rf), f * t
                }
            | "block" ->
                Gen.zip (Gen.choose (1, 8)) (Gen.choose (1, 8)) |> Gen.map (fun (h, w) -> Block(h, w), h * w)
            | "given" ->
                gen {
                    let! l = Gen.choose (1, 30)
                    let! hidden = Gen.choose (0, l - 1)
                    return Given hidden, l
                }
            | other -> failwithf "unknown masking kind %s" other
        return { Kind = kind; N = n; L = l; D = d; Ratio = ratio; Seed = seed }
    }
    |> Gen.filter (fun c -> c.KeepsSome)

/// Cases whose ratio would hide every token of some axis (never `Given`, never tube: VideoMAE's
/// rule keeps S - int(r * S) >= 1 tokens per slot for every r in [0, 1)).
let hideAllCasesOf (kind: string) =
    gen {
        let! c = Gen.filter (fun (c: MaskCase) -> not c.KeepsSome) (gen {
            let! n = Gen.choose (1, 3)
            let! ratio = anyRatio
            let! seed = seeds
            let! l = Gen.choose (1, 6)
            return { Kind = PerSample; N = n; L = l; D = 2; Ratio = ratio; Seed = seed } })
        return
            match kind with
            | "randomShared" -> { c with Kind = BatchShared }
            | "block" -> { c with Kind = Block(1, c.L) }
            | _ -> c
    }

/// Distinct random tokens for a case: [N, L, D] float32.
let tokensFor (c: MaskCase) =
    randn (c.Seed ^^^ 0x5eedL) [| int64 c.N; int64 c.L; int64 c.D |]

/// For `Given`: `hidden` random positions per row, [N, L] bool (true = hidden).
let givenHidden (c: MaskCase) (hidden: int) =
    use g = generator (c.Seed + 7L)
    let rank = torch.rand([| int64 c.N; int64 c.L |], generator = g).argsort(dim = 1L).argsort(dim = 1L)
    rank.lt(torch.tensor(int64 hidden))

/// Runs the case's masking on `x` with a fresh generator seeded from the case.
let applyMask (c: MaskCase) (x: Tensor) : MaskResult =
    use g = generator c.Seed
    let r = c.Ratio.Value
    match c.Kind with
    | PerSample -> Masking.random g r x
    | BatchShared -> Masking.randomShared g r x
    | Tube slots -> Masking.tube g r slots x
    | TimeFrequency(f, t, rf) -> Masking.timeFrequency g r rf.Value (f, t) x
    | Block(h, w) -> Masking.block g r (h, w) x
    | Given hidden -> Masking.given (givenHidden c hidden) x
