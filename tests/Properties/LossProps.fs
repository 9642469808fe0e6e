/// Reconstruction losses: only hidden tokens count (zero gradient and no effect at visible
/// positions), zero at the target, positive when a hidden token is off; norm-pix targets.
module Mae.Tests.Properties.LossProps

open System
open Expecto
open FsCheck.FSharp
open TorchSharp
open Mae
open Mae.Tests.Properties.Generators

/// pred/target [N, L, P], mask [N, L] hiding each token with probability HiddenShare, and always
/// hiding token (0, Forced) when ForceHidden.
type LossCase =
    { N: int
      L: int
      P: int
      HiddenShare: float
      ForceHidden: bool
      Forced: int
      Seed: int64 }

let lossCases =
    gen {
        let! n = Gen.choose (1, 3)
        let! l = Gen.choose (1, 12)
        let! p = Gen.choose (2, 8)
        let! share = Gen.elements [ 0.0; 0.25; 0.5; 0.75; 1.0 ]
        let! force = Gen.frequency [ 4, Gen.constant true; 1, Gen.constant false ]
        let! forced = Gen.choose (0, l - 1)
        let! seed = seeds
        return { N = n; L = l; P = p; HiddenShare = share; ForceHidden = force; Forced = forced; Seed = seed }
    }

/// How a loss under test normalises the target: not at all, per token (MAE: eps inside the
/// square root), or per token and channel with one channel (VideoMAE: eps on the std).
type TargetNorm =
    | Raw
    | NormPix
    | PerChannel

/// A loss under test and how it normalises the target.
type LossUnderTest = { Name: string; Loss: Losses.ReconstructionLoss; Norm: TargetNorm }

let losses =
    [ { Name = "maskedMse"; Loss = Losses.maskedMse; Norm = Raw }
      { Name = "maskedL1"; Loss = Losses.maskedL1; Norm = Raw }
      { Name = "withNormPix maskedMse"; Loss = Losses.withNormPix Losses.normPixEps Losses.maskedMse; Norm = NormPix }
      { Name = "withNormPix maskedL1"; Loss = Losses.withNormPix Losses.normPixEps Losses.maskedL1; Norm = NormPix }
      { Name = "withPerChannelNorm maskedMse"
        Loss = Losses.withPerChannelNorm 1 Losses.perChannelNormEps Losses.maskedMse
        Norm = PerChannel } ]

let private shape (c: LossCase) = [| int64 c.N; int64 c.L; int64 c.P |]

/// The case's target (values of a few units, offset from zero) and mask [N, L] float32.
let private targetAndMask (c: LossCase) =
    let target = randn c.Seed (shape c) * 3.0 + 1.5
    use g = generator (c.Seed + 11L)
    let mask = torch.rand([| int64 c.N; int64 c.L |], generator = g).lt(c.HiddenShare.ToScalar()).to_type(ScalarType.Float32)
    if c.ForceHidden then mask.[0L, int64 c.Forced] <- torch.tensor(1.0f)
    target, mask

/// What a perfect prediction is: the target, or its norm-pix version.
let private perfect (lut: LossUnderTest) (target: Tensor) =
    match lut.Norm with
    | Raw -> target
    | NormPix -> Losses.normPixTarget Losses.normPixEps target
    | PerChannel -> Losses.perChannelNormTarget 1 Losses.perChannelNormEps target

let private hiddenTokens (mask: Tensor) (c: LossCase) =
    mask.to_type(ScalarType.Bool).unsqueeze(-1L).expand(shape c)

let private value (t: Tensor) = t.to_type(ScalarType.Float64).item<float>()

/// d loss / d pred is exactly 0 at every visible token, and not 0 everywhere when a token is hidden.
let gradientZeroAtVisible (lut: LossUnderTest) (c: LossCase) =
    use _ = torch.NewDisposeScope()
    let target, mask = targetAndMask c
    let pred = (randn (c.Seed + 1L) (shape c)).requires_grad_(true)
    let loss = lut.Loss pred target mask
    loss.backward()
    let grad = pred.grad
    let hidden = hiddenTokens mask c
    let atVisible = grad.masked_select(hidden.logical_not())
    Expect.isTrue ((eqScalar atVisible 0.0).all().item<bool>()) "gradient at visible tokens is exactly 0"
    if value (mask.sum()) > 0.0 then
        Expect.isTrue ((eqScalar (grad.masked_select(hidden)) 0.0).logical_not().any().item<bool>()) "some gradient at hidden tokens"

/// Replacing the prediction at visible tokens leaves the loss bit-for-bit unchanged.
let visibleDoNotCount (lut: LossUnderTest) (c: LossCase) =
    use _ = torch.NewDisposeScope()
    let target, mask = targetAndMask c
    let pred = randn (c.Seed + 1L) (shape c)
    let other = randn (c.Seed + 2L) (shape c) * 10.0
    let changed = torch.where(hiddenTokens mask c, pred, other)
    expectEqual (lut.Loss changed target mask) (lut.Loss pred target mask) "loss after changing visible predictions"

/// Zero for a perfect prediction, whatever is predicted at visible tokens.
let zeroAtTarget (lut: LossUnderTest) (c: LossCase) =
    use _ = torch.NewDisposeScope()
    let target, mask = targetAndMask c
    let best = perfect lut target
    Expect.equal (value (lut.Loss (best.clone()) target mask)) 0.0 "loss at pred = target"
    let visibleJunk = torch.where(hiddenTokens mask c, best, randn (c.Seed + 3L) (shape c))
    Expect.equal (value (lut.Loss visibleJunk target mask)) 0.0 "loss at pred = target on hidden tokens"

/// Positive as soon as one hidden token's prediction is off by 1 in one component.
let positiveWhenHiddenDiffers (lut: LossUnderTest) (c: LossCase) =
    use _ = torch.NewDisposeScope()
    let c = { c with ForceHidden = true }
    let target, mask = targetAndMask c
    let pred = (perfect lut target).clone()
    let k = int64 (c.Seed % int64 c.P)
    pred.[0L, int64 c.Forced, k] <- pred.[0L, int64 c.Forced, k] + 1.0
    Expect.isGreaterThan (value (lut.Loss pred target mask)) 0.0 "loss with one hidden token off"

/// The loss written out with loops in float64: mean over hidden tokens of the per-token mean
/// error against the (optionally norm-pix) target.
let matchesDefinition (lut: LossUnderTest) (c: LossCase) =
    use _ = torch.NewDisposeScope()
    let target, mask = targetAndMask c
    let pred = randn (c.Seed + 1L) (shape c)
    let toArray (t: Tensor) = t.to_type(ScalarType.Float64).contiguous().data<float>().ToArray()
    let p, t, m = toArray pred, toArray target, toArray mask
    let err = if lut.Name.EndsWith "L1" then fun (d: float) -> abs d else fun d -> d * d
    let mutable total, count = 0.0, 0.0
    for i in 0 .. c.N * c.L - 1 do
        if m.[i] = 1.0 then
            let tok = t.[i * c.P .. i * c.P + c.P - 1]
            let mean = Array.average tok
            let var = (tok |> Array.sumBy (fun v -> (v - mean) ** 2.0)) / float (c.P - 1)
            let tok =
                match lut.Norm with
                | Raw -> tok
                | NormPix -> tok |> Array.map (fun v -> (v - mean) / sqrt (var + Losses.normPixEps))
                | PerChannel -> tok |> Array.map (fun v -> (v - mean) / (sqrt var + Losses.perChannelNormEps))
            total <- total + (Array.init c.P (fun k -> err (p.[i * c.P + k] - tok.[k])) |> Array.average)
            count <- count + 1.0
    let expected = if count = 0.0 then 0.0 else total / count
    let actual = value (lut.Loss pred target mask)
    // float32 against float64: a normalised token of two close values divides by a small standard
    // deviation, which scales float32's rounding up (seen: 2e-5 relative at P = 2)
    Expect.floatClose { absolute = 1e-5; relative = 1e-4 } actual expected "loss vs. its definition"

/// Token vectors with a chosen scale and offset, some of them constant.
type NormCase = { N: int; L: int; P: int; Scale: float; Offset: float; Seed: int64 }

let normCases =
    gen {
        let! n = Gen.choose (1, 3)
        let! l = Gen.choose (1, 10)
        let! p = Gen.choose (2, 48)
        let! scale = Gen.elements [ 0.5; 1.0; 7.0; 255.0 ]
        let! offset = Gen.elements [ 0.0; -3.0; 0.5; 100.0 ]
        let! seed = seeds
        return { NormCase.N = n; L = l; P = p; Scale = scale; Offset = offset; Seed = seed }
    }

/// Norm-pix target: per-token mean ~ 0 and unbiased variance ~ 1 (tokens of non-trivial variance);
/// a constant token gives finite values.
let normPixStatistics (c: NormCase) =
    use _ = torch.NewDisposeScope()
    let x = randn c.Seed [| int64 c.N; int64 c.L; int64 c.P |] * c.Scale + c.Offset
    x.[0L, 0L] <- torch.tensor(float32 c.Offset) // one constant token
    let y = (Losses.normPixTarget Losses.normPixEps x).to_type(ScalarType.Float64)
    expectShape y [ int64 c.N; int64 c.L; int64 c.P ] "norm-pix target"
    Expect.isTrue (y.isfinite().all().item<bool>()) "finite values"
    let inputVar = x.to_type(ScalarType.Float64).var(-1L, unbiased = true, keepdim = false)
    let nonTrivial = inputVar.gt((1e-2).ToScalar())
    let mean = y.mean([| -1L |]).masked_select(nonTrivial)
    let var = y.var(-1L, unbiased = true, keepdim = false).masked_select(nonTrivial)
    if mean.numel() > 0L then
        Expect.isLessThan (value (mean.abs().max())) 1e-3 "largest |per-token mean|"
        Expect.isLessThan (value ((var - 1.0).abs().max())) 1e-3 "largest |per-token variance - 1|"

/// Per-channel target (VideoMAE): for each token and each channel c of a channel-last vector
/// (Q values per channel), mean ~ 0 and unbiased std ~ 1; a constant token gives finite values.
let perChannelStatistics (c: NormCase, channels: int) =
    use _ = torch.NewDisposeScope()
    let q = max 2 (c.P / channels)
    let p = q * channels
    let x = randn c.Seed [| int64 c.N; int64 c.L; int64 p |] * c.Scale + c.Offset
    // channels on their own scales, so that one set of statistics per token would not do
    let x = x * torch.arange(1L, int64 channels + 1L, dtype = ScalarType.Float32).repeat(int64 q) * 3.0
    x.[0L, 0L] <- torch.tensor(float32 c.Offset)
    let y = (Losses.perChannelNormTarget channels Losses.perChannelNormEps x).to_type(ScalarType.Float64)
    expectShape y [ int64 c.N; int64 c.L; int64 p ] "per-channel target"
    Expect.isTrue (y.isfinite().all().item<bool>()) "finite values"
    let split (t: Tensor) = t.reshape(int64 c.N, int64 c.L, int64 q, int64 channels)
    let inputVar = (split (x.to_type(ScalarType.Float64))).var(2L, unbiased = true, keepdim = false)
    let nonTrivial = inputVar.gt((1e-2).ToScalar())
    let mean = (split y).mean([| 2L |]).masked_select(nonTrivial)
    let std = (split y).std(2L, unbiased = true, keepdim = false).masked_select(nonTrivial)
    if mean.numel() > 0L then
        Expect.isLessThan (value (mean.abs().max())) 1e-3 "largest |per-token, per-channel mean|"
        Expect.isLessThan (value ((std - 1.0).abs().max())) 1e-3 "largest |per-token, per-channel std - 1|"

/// The video model's objective (Build.objective of a video configuration: per-channel norm-pix
/// MSE over C = 3 channels) ignores the predictions at visible tokens: same loss, zero gradient.
let videoObjectiveIgnoresVisible (c: LossCase) =
    use _ = torch.NewDisposeScope()
    let config = MaeConfig.withVideo 4 (8, 8) 2 (4, 4) 3 MaeConfig.videoTiny
    let objective = Build.objective config
    let p = int64 config.Video.TubeletDim
    let c = { c with P = int p }
    let target, mask = targetAndMask c
    let pred = (randn (c.Seed + 1L) (shape c)).requires_grad_(true)
    let input = { Batch = null; Target = target; Pred = pred; Mask = mask; Latent = null }
    let loss = Objective.loss objective input
    loss.backward()
    let hidden = hiddenTokens mask c
    Expect.isTrue ((eqScalar (pred.grad.masked_select(hidden.logical_not())) 0.0).all().item<bool>()) "gradient at visible tokens is exactly 0"
    use _ = torch.no_grad()
    let changed = torch.where(hidden, pred, randn (c.Seed + 2L) (shape c) * 10.0)
    expectEqual (Objective.loss objective { input with Pred = changed }) (Objective.loss objective { input with Pred = pred }) "loss after changing visible predictions"

/// One value per token has no unbiased variance: the norm-pix target refuses it (instead of NaN).
let normPixNeedsTwoValues (n: int, l: int) =
    use _ = torch.NewDisposeScope()
    let x = torch.ones(int64 n, int64 l, 1L)
    let ex = Expect.throwsC (fun () -> Losses.normPixTarget Losses.normPixEps x |> ignore) id
    match ex with
    | :? ArgumentException as ae -> Expect.equal ae.ParamName "target" "ParamName"
    | other -> failtestf "expected an ArgumentException, got %s" (other.GetType().Name)

let tests =
    testList "losses" [
        for lut in losses do
            yield testList lut.Name [
                property "gradient at visible positions is exactly 0" lossCases (gradientZeroAtVisible lut)
                property "visible predictions do not change the loss" lossCases (visibleDoNotCount lut)
                property "zero when pred = target" lossCases (zeroAtTarget lut)
                property "positive when a hidden token differs" lossCases (positiveWhenHiddenDiffers lut)
                property "matches its definition" lossCases (matchesDefinition lut)
            ]
        yield property "norm-pix target: per-token mean 0, variance 1" normCases normPixStatistics
        yield property "per-channel target (VideoMAE): per-token, per-channel mean 0, std 1" (Gen.zip normCases (Gen.choose (1, 3))) perChannelStatistics
        yield property "the video objective ignores predictions at visible tokens" lossCases videoObjectiveIgnoresVisible
        yield propertyN 10 "norm-pix target refuses tokens of one value" (Gen.zip (Gen.choose (1, 3)) (Gen.choose (1, 5))) normPixNeedsTwoValues
    ]
