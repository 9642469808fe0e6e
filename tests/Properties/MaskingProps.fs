/// Masking invariants for every masking kind: exact kept counts, order restoration, structure.
module Mae.Tests.Properties.MaskingProps

open Expecto
open FsCheck.FSharp
open TorchSharp
open Mae
open Mae.Tests.Properties.Generators

/// Kept count: IdsKeep [N, keep], Visible [N, keep, D], Mask [N, L] of 0/1 with L - keep ones per row.
let keptCount (c: MaskCase) =
    use _ = torch.NewDisposeScope()
    let x = tokensFor c
    let m = applyMask c x
    let n, l, keep = int64 c.N, int64 c.L, int64 c.ExpectedKeep
    expectShape m.IdsKeep [ n; keep ] "IdsKeep"
    expectShape m.Visible [ n; keep; int64 c.D ] "Visible"
    expectShape m.Mask [ n; l ] "Mask"
    expectShape m.IdsRestore [ n; l ] "IdsRestore"
    Expect.isTrue ((eqScalar m.Mask 0.0).logical_or(eqScalar m.Mask 1.0).all().item<bool>()) "Mask holds only 0 and 1"
    let hiddenPerRow = m.Mask.sum(dim = 1L).to_type(ScalarType.Int64)
    expectEqual hiddenPerRow (constI64 [| n |] (l - keep)) "hidden tokens per row"

/// Order restoration: IdsRestore is a permutation whose inverse starts with IdsKeep, the visible
/// tokens are x at IdsKeep, Mask is 0 exactly there, and restoring [Visible; hidden] gives x back.
let restoresOrder (c: MaskCase) =
    use _ = torch.NewDisposeScope()
    let x = tokensFor c
    let m = applyMask c x
    let n, l, d, keep = int64 c.N, int64 c.L, int64 c.D, int64 c.ExpectedKeep
    let arange = torch.arange(l).unsqueeze(0L).expand(n, l)
    // IdsRestore is a permutation of 0 .. L-1 in every row
    let struct (sorted, _) = m.IdsRestore.sort(dim = 1L)
    expectEqual sorted arange "IdsRestore sorted (a permutation)"
    // the kept tokens sit first in the shuffled order, in IdsKeep's order: IdsRestore[IdsKeep[j]] = j
    expectEqual (m.IdsRestore.gather(1L, m.IdsKeep)) (torch.arange(keep).unsqueeze(0L).expand(n, keep)) "IdsRestore at IdsKeep"
    // the shuffle as the inverse permutation of IdsRestore, checked both ways
    let idsShuffle = m.IdsRestore.argsort(dim = 1L)
    expectEqual (idsShuffle.gather(1L, m.IdsRestore)) arange "shuffle after IdsRestore is the identity"
    expectEqual (m.IdsRestore.gather(1L, idsShuffle)) arange "IdsRestore after shuffle is the identity"
    let gatherTokens (ids: Tensor) = x.gather(1L, ids.unsqueeze(-1L).expand(n, ids.shape.[1], d))
    expectEqual m.Visible (gatherTokens m.IdsKeep) "Visible = x at IdsKeep"
    expectEqual (m.Mask.gather(1L, m.IdsKeep)) (torch.zeros(n, keep)) "Mask at IdsKeep"
    // [visible; hidden in shuffled order] restored by IdsRestore is x
    let hidden = gatherTokens (idsShuffle.narrow(1L, keep, l - keep))
    expectEqual (Masking.restore m.IdsRestore (torch.cat([| m.Visible; hidden |], 1L))) x "restore [Visible; hidden]"
    // what the decoder does: fillers appended after the visible tokens land exactly where Mask = 1
    let filler = constF32 [| n; l - keep; d |] 1000.0f
    let restored = Masking.restore m.IdsRestore (torch.cat([| m.Visible; filler |], 1L))
    let hiddenAt = m.Mask.unsqueeze(-1L).expand(n, l, d).to_type(ScalarType.Bool)
    expectEqual restored (torch.where(hiddenAt, constF32 [| n; l; d |] 1000.0f, x)) "restore [Visible; fillers]"

let private maskOf (c: MaskCase) =
    let m = applyMask c (tokensFor c)
    m.Mask

let tubeConstantOverTime (c: MaskCase) =
    use _ = torch.NewDisposeScope()
    match c.Kind with
    | Tube slots ->
        let s = int64 (c.L / slots)
        let mask = (maskOf c).reshape(int64 c.N, int64 slots, s)
        expectEqual mask (mask.narrow(1L, 0L, 1L).expand(int64 c.N, int64 slots, s)) "every time slot hides the same tokens"
    | _ -> failwith "not a tube case"

/// The visible set is (kept rows) x (kept columns): hidden = whole rows U whole columns.
let timeFrequencyWholeRowsAndColumns (c: MaskCase) =
    use _ = torch.NewDisposeScope()
    match c.Kind with
    | TimeFrequency(f, t, rf) ->
        let visible = (eqScalar (maskOf c) 0.0).reshape(int64 c.N, int64 f, int64 t)
        let rowVisible = visible.any(2L) // [N, F]
        let colVisible = visible.any(1L) // [N, T]
        let product = rowVisible.unsqueeze(2L).logical_and(colVisible.unsqueeze(1L))
        expectEqual visible product "visible = kept rows x kept columns"
        let keepF, keepT = rf.Keep f, c.Ratio.Keep t
        if keepF * keepT > 0 then
            expectEqual (rowVisible.sum(dim = 1L)) (constI64 [| int64 c.N |] (int64 keepF)) "kept frequency rows"
            expectEqual (colVisible.sum(dim = 1L)) (constI64 [| int64 c.N |] (int64 keepT)) "kept time columns"
    | _ -> failwith "not a time-frequency case"

let sharedAcrossBatch (c: MaskCase) =
    use _ = torch.NewDisposeScope()
    let m = applyMask c (tokensFor c)
    let n, l = int64 c.N, int64 c.L
    expectEqual m.Mask (m.Mask.narrow(0L, 0L, 1L).expand(n, l)) "the same mask for every sample"

/// Masking.given hides exactly the tokens it was given.
let givenKeepsTheGivenMask (c: MaskCase) =
    use _ = torch.NewDisposeScope()
    match c.Kind with
    | Given hidden -> expectEqual (maskOf c) ((givenHidden c hidden).to_type(ScalarType.Float32)) "Mask = given"
    | _ -> failwith "not a given case"

/// Block masks on larger grids with the ratios BEiT uses: exact hidden count per sample.
let blockCases =
    gen {
        let! n = Gen.choose (1, 3)
        let! h = Gen.choose (1, 14)
        let! w = Gen.choose (1, 14)
        let! num = Gen.choose (1, 19)
        let! seed = seeds
        return { Kind = Block(h, w); N = n; L = h * w; D = 1; Ratio = { Num = num; Den = 20 }; Seed = seed }
    }
    |> Gen.filter (fun c -> c.KeepsSome)

let tests =
    testList "masking" [
        testList "kept count = int(L(1-r)), tube slots * (S - int(rS))" [ for k in kindNames -> property k (maskCasesOf k) keptCount ]
        testList "order restoration" [ for k in kindNames -> property k (maskCasesOf k) restoresOrder ]
        testList "structure" [
            property "tube mask constant over time slots" (maskCasesOf "tube") tubeConstantOverTime
            property "timeFrequency hides whole rows and columns" (maskCasesOf "timeFrequency") timeFrequencyWholeRowsAndColumns
            property "randomShared mask equal across the batch" (maskCasesOf "randomShared") sharedAcrossBatch
            property "given mask kept as given" (maskCasesOf "given") givenKeepsTheGivenMask
            property "block hidden count exact on larger grids" blockCases keptCount
        ]
    ]
