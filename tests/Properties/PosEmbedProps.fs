/// Fixed sin-cos positional tables, and the mask-ratio argument checks.
module Mae.Tests.Properties.PosEmbedProps

open System
open Expecto
open FsCheck.FSharp
open TorchSharp
open Mae
open Mae.Tests.Properties.Generators

/// A 2D table of width D for a grid of H rows by W columns, with or without the cls row.
type TableCase = { D: int; H: int; W: int; Cls: bool }

let tableCases =
    gen {
        let! d = Gen.choose (1, 16) |> Gen.map ((*) 4)
        let! h = Gen.choose (1, 8)
        let! w = Gen.choose (1, 8)
        let! cls = Gen.elements [ true; false ]
        return { D = d; H = h; W = w; Cls = cls }
    }

/// MAE's 1D embedding of position `pos` at width `dim`, in float64: sin then cos of pos * omega_i,
/// omega_i = 1 / 10000^(i / (dim/2)).
let reference1d (dim: int) (pos: int) =
    let half = dim / 2
    let angle i = float pos / Math.Pow(10000.0, float i / float half)
    Array.append (Array.init half (angle >> sin)) (Array.init half (angle >> cos))

/// The table's token rows (cls row dropped) against `expected` rows, largest difference < 1e-6.
let private expectCloseToFormula (table: Tensor) (extra: int) (expected: float[][]) (what: string) =
    let d = int64 table.shape.[1]
    let reference = torch.tensor(Array.concat expected).reshape(-1L, d)
    let tokens = table.narrow(0L, int64 extra, table.shape.[0] - int64 extra).to_type(ScalarType.Float64)
    expectShape reference (List.ofArray tokens.shape) (what + ": formula rows")
    Expect.isLessThan ((tokens - reference).abs().max().item<float>()) 1e-6 (what + ": largest difference from the formula")

let sinCos2dLayout (c: TableCase) =
    use _ = torch.NewDisposeScope()
    let table = PosEmbed.sinCos2d c.D (c.H, c.W) c.Cls
    let extra = if c.Cls then 1 else 0
    let m = extra + c.H * c.W
    expectShape table [ int64 m; int64 c.D ] "table"
    Expect.equal table.dtype ScalarType.Float32 "dtype"
    Expect.isTrue (table.abs().le((1.0).ToScalar()).all().item<bool>()) "values in [-1, 1]"
    if c.Cls then expectEqual (table.select(0L, 0L)) (torch.zeros(int64 c.D)) "cls row"
    // distinct rows are distinct (cls row included)
    let same = table.unsqueeze(0L).eq(table.unsqueeze(1L)).all(-1L)
    expectEqual same (torch.eye(int64 m, dtype = ScalarType.Bool)) "rows equal only to themselves"
    // first half: the column's 1D embedding; second half: the row's
    let half = c.D / 2
    let expected = [| for i in 0 .. c.H - 1 do for j in 0 .. c.W - 1 -> Array.append (reference1d half j) (reference1d half i) |]
    expectCloseToFormula table extra expected "sinCos2d"
    // exactly: the first half is the same down a column, the second half the same along a row
    let grid = table.narrow(0L, int64 extra, int64 (c.H * c.W)).reshape(int64 c.H, int64 c.W, int64 c.D)
    let firstHalf, secondHalf = grid.narrow(2L, 0L, int64 half), grid.narrow(2L, int64 half, int64 half)
    expectEqual firstHalf (firstHalf.narrow(0L, 0L, 1L).expand_as(firstHalf)) "first half depends only on the column"
    expectEqual secondHalf (secondHalf.narrow(1L, 0L, 1L).expand_as(secondHalf)) "second half depends only on the row"

/// A 3D table: (time, column, row) parts depend only on the slot, the column and the row.
type Table3dCase = { D: int; S: int; H: int; W: int; Cls: bool }

let table3dCases =
    gen {
        let! d = Gen.choose (2, 16) |> Gen.map ((*) 4)
        let! s = Gen.choose (1, 4)
        let! h = Gen.choose (1, 4)
        let! w = Gen.choose (1, 4)
        let! cls = Gen.elements [ true; false ]
        return { Table3dCase.D = d; S = s; H = h; W = w; Cls = cls }
    }

let sinCos3dLayout (c: Table3dCase) =
    use _ = torch.NewDisposeScope()
    let table = PosEmbed.sinCos3d c.D (c.S, c.H, c.W) c.Cls
    let extra = if c.Cls then 1 else 0
    expectShape table [ int64 (extra + c.S * c.H * c.W); int64 c.D ] "table"
    if c.Cls then expectEqual (table.select(0L, 0L)) (torch.zeros(int64 c.D)) "cls row"
    let dt, dx, dy = PosEmbed.split3d c.D
    Expect.equal (dt + dx + dy) c.D "split3d covers the width"
    let expected =
        [| for s in 0 .. c.S - 1 do
             for i in 0 .. c.H - 1 do
                 for j in 0 .. c.W - 1 -> Array.concat [ reference1d dt s; reference1d dx j; reference1d dy i ] |]
    expectCloseToFormula table extra expected "sinCos3d"

/// A ratio outside [0, 1) and the masking call it is passed to.
type BadRatioCase = { Ratio: float; Call: string }

let badRatioCases =
    gen {
        let! ratio =
            Gen.frequency [ 2, Gen.choose (1, 1_000_000) |> Gen.map (fun k -> -float k / 1000.0)
                            2, Gen.choose (0, 1_000_000) |> Gen.map (fun k -> 1.0 + float k / 1000.0)
                            2, Gen.constant 1.0 // the first ratio out of range
                            3, Gen.elements [ -1e-12; Double.NaN; Double.PositiveInfinity; Double.NegativeInfinity ] ]
        let! call = Gen.elements [ "keepCount"; "random"; "randomShared"; "tube"; "block"; "timeRatio"; "freqRatio" ]
        return { Ratio = ratio; Call = call }
    }

/// ArgumentException whose ParamName is the argument and whose message names it and its value.
let badRatioRaises (c: BadRatioCase) =
    use _ = torch.NewDisposeScope()
    let x = torch.zeros(2L, 4L, 3L)
    use g = generator 1L
    let call, name =
        match c.Call with
        | "keepCount" -> (fun () -> Masking.keepCount 4 c.Ratio |> ignore), "maskRatio"
        | "random" -> (fun () -> Masking.random g c.Ratio x |> ignore), "maskRatio"
        | "randomShared" -> (fun () -> Masking.randomShared g c.Ratio x |> ignore), "maskRatio"
        | "tube" -> (fun () -> Masking.tube g c.Ratio 2 x |> ignore), "maskRatio"
        | "block" -> (fun () -> Masking.block g c.Ratio (2, 2) x |> ignore), "maskRatio"
        | "timeRatio" -> (fun () -> Masking.timeFrequency g c.Ratio 0.5 (2, 2) x |> ignore), "timeRatio"
        | _ -> (fun () -> Masking.timeFrequency g 0.5 c.Ratio (2, 2) x |> ignore), "freqRatio"
    let ex = Expect.throwsC call id
    match ex with
    | :? ArgumentException as ae ->
        Expect.equal ae.ParamName name "ParamName"
        Expect.stringStarts ae.Message (sprintf "%s was %O" name c.Ratio) "message names the argument and its value"
    | other -> failtestf "expected an ArgumentException, got %s" (other.GetType().Name)

/// A ratio that would hide every token of an axis raises ArgumentException naming the ratio.
let hideAllRaises (kind: string) (c: MaskCase) =
    use _ = torch.NewDisposeScope()
    let ex = Expect.throwsC (fun () -> applyMask c (tokensFor c) |> ignore) id
    match ex with
    | :? ArgumentException as ae -> Expect.equal ae.ParamName "maskRatio" (sprintf "%s: ParamName" kind)
    | other -> failtestf "expected an ArgumentException, got %s" (other.GetType().Name)

/// Tube cases at ratios just below 1: (slots, S, ratio, seed).
let tubeNearOneCases =
    gen {
        let! slots = Gen.choose (1, 3)
        let! s = Gen.choose (1, 40)
        let! ratio = Gen.elements [ 0.9; 0.99; 39.0 / 40.0; 1.0 - 1e-12; Math.BitDecrement 1.0 ]
        let! seed = seeds
        return slots, s, ratio, seed
    }

/// VideoMAE's tube rule hides int(r * S) per slot and r * S < S, so every slot keeps a token.
let tubeKeepsOnePerSlot (slots: int, s: int, ratio: float, seed: int64) =
    use _ = torch.NewDisposeScope()
    use g = generator seed
    let m = Masking.tube g ratio slots (torch.zeros(1L, int64 (slots * s), 2L))
    let keepS = s - int (ratio * float s)
    Expect.isGreaterThanOrEqual keepS 1 "S - int(r * S) keeps at least one token per slot"
    Expect.equal m.IdsKeep.shape.[1] (int64 (slots * keepS)) "kept tokens: slots * (S - int(r * S))"

/// VideoMAE's sinusoid table (get_sinusoid_encoding_table) written out: angle = pos /
/// 10000^(2*(j/2)/D), sin on even columns, cos on odd ones.
let sinusoidMatchesVideoMae (d: int, length: int) =
    use _ = torch.NewDisposeScope()
    let table = PosEmbed.sinusoid d length
    let expected =
        [| for pos in 0 .. length - 1 ->
               Array.init d (fun j ->
                   let angle = float pos / Math.Pow(10000.0, float (2 * (j / 2)) / float d)
                   if j % 2 = 0 then sin angle else cos angle) |]
    expectShape table [ int64 length; int64 d ] "sinusoid table"
    Expect.equal table.dtype ScalarType.Float32 "dtype"
    expectCloseToFormula table 0 expected "sinusoid"

let tests =
    testList "positions and guards" [
        property "sinusoid: VideoMAE's interleaved sin/cos table" (Gen.zip (Gen.choose (1, 40)) (Gen.choose (1, 30))) sinusoidMatchesVideoMae
        property "tube: a ratio just below 1 still keeps S - int(r * S) >= 1 per slot" tubeNearOneCases tubeKeepsOnePerSlot
        for kind in [ "random"; "randomShared"; "block" ] do
            property (sprintf "%s: a ratio hiding every token raises ArgumentException naming maskRatio" kind)
                (hideAllCasesOf kind) (hideAllRaises kind)
        property "sinCos2d: cls row 0, values in [-1,1], distinct rows, column/row halves" tableCases sinCos2dLayout
        property "sinCos3d: (time, column, row) parts follow the formula" table3dCases sinCos3dLayout
        property "mask ratio outside [0, 1) raises ArgumentException naming it" badRatioCases badRatioRaises
    ]
