/// Seeds: the same generator seed gives the same masks, and the same model seed, data and mask
/// seed give a bit-identical training trajectory.
module Mae.Tests.Properties.DeterminismProps

open Expecto
open FsCheck.FSharp
open TorchSharp
open Mae
open Mae.Tests.Properties.Generators

/// Two runs of a masking kind from fresh generators with the same seed agree exactly.
let sameSeedSameMask (c: MaskCase) =
    use _ = torch.NewDisposeScope()
    let x = tokensFor c
    let a, b = applyMask c x, applyMask c x
    expectEqual a.Mask b.Mask "Mask"
    expectEqual a.IdsKeep b.IdsKeep "IdsKeep"
    expectEqual a.IdsRestore b.IdsRestore "IdsRestore"
    expectEqual a.Visible b.Visible "Visible"

/// The tiny MAE made smaller still: width 32, one block each side, two heads.
let smallConfig =
    { MaeConfig.tiny with
        EmbedDim = 32
        Depth = 1
        Heads = 2
        DecoderEmbedDim = 32
        DecoderDepth = 1
        DecoderHeads = 2 }

type TrainCase =
    { Masking: MaskingStrategy
      NormPixLoss: bool
      ModelSeed: int64
      DataSeed: int64
      MaskSeed: int64 }

let trainCases =
    gen {
        let! masking =
            Gen.elements [ RandomPerSample 0.75; RandomShared 0.75; BlockWise 0.5 ]
        let! normPix = Gen.elements [ true; false ]
        let! modelSeed = seeds
        let! dataSeed = seeds
        let! maskSeed = seeds
        return { Masking = masking; NormPixLoss = normPix; ModelSeed = modelSeed; DataSeed = dataSeed; MaskSeed = maskSeed }
    }

/// Parameters by name, copied out as float32 arrays.
let private snapshot (model: MaskedAutoencoder) =
    [ for struct (name, p) in model.named_parameters() -> name, p.detach().contiguous().data<float32>().ToArray() ]

/// Builds the model from the seed and trains it 3 AdamW steps on one random batch; returns
/// the initial parameters, the losses and the final parameters.
let private train (c: TrainCase) =
    use _ = torch.NewDisposeScope()
    let cfg = { smallConfig with Masking = c.Masking; NormPixLoss = c.NormPixLoss }
    use model = MaskedAutoencoder.Create(cfg, c.ModelSeed)
    let initial = snapshot model
    let h, w = cfg.Image.ImageSize
    let imgs = randn c.DataSeed [| 2L; int64 cfg.Image.Channels; int64 h; int64 w |]
    use optimizer = torch.optim.AdamW(model.parameters(), lr = 1e-3)
    use g = generator c.MaskSeed
    let losses =
        [ for _ in 1..3 ->
              optimizer.zero_grad()
              let out = model.Forward(imgs, g)
              out.Loss.backward()
              optimizer.step() |> ignore
              out.Loss.item<float32>() ]
    initial, losses, snapshot model

let sameSeedSameTraining (c: TrainCase) =
    let initialA, lossesA, finalA = train c
    let initialB, lossesB, finalB = train c
    Expect.sequenceEqual (List.map fst initialA) (List.map fst initialB) "parameter names"
    for (name, a), (_, b) in List.zip initialA initialB do
        Expect.sequenceEqual a b (sprintf "initial %s" name)
    Expect.isTrue (lossesA |> List.forall System.Single.IsFinite) "finite losses"
    Expect.sequenceEqual lossesA lossesB "losses of the 3 steps"
    for (name, a), (_, b) in List.zip finalA finalB do
        Expect.sequenceEqual a b (sprintf "trained %s" name)
    // training moved the weights, so the comparison above is about a real trajectory
    let moved = List.exists2 (fun (_, a) (_, b) -> a <> b) initialA finalA
    Expect.isTrue moved "3 AdamW steps change some parameter"

let tests =
    testList "determinism" [
        testList "same seed, same mask" [ for k in kindNames -> property k (maskCasesOf k) sameSeedSameMask ]
        propertyN 3 "same seeds, bit-identical 3-step training of the tiny MAE" trainCases sameSeedSameTraining
    ]
