/// Optimizer construction (AdamW with MAE's weight-decay rule) and the learning-rate schedule.
module Mae.Optim

open System
open TorchSharp
open TorchSharp.Modules

/// The decay rule, stated once: tensors of rank >= 2 decay; biases, norms, tokens
/// (cls_token, mask_token) and positional tables do not.
let decays (name: string) (p: Tensor) =
    p.ndim >= 2L && not (name.EndsWith ".bias" || name.Contains "token" || name.Contains "pos_embed")

/// Per-iteration schedule: linear warmup from 0 to `lr` over `warmup` iterations, then a
/// half-cycle cosine down to `minLr` at `total`.
let scheduledLr (lr: float) (minLr: float) (warmup: int) (total: int) (it: int) =
    if it < warmup then lr * float it / float warmup
    else
        let span = max 1 (total - warmup)
        let progress = min 1.0 (float (it - warmup) / float span)
        minLr + (lr - minLr) * 0.5 * (1.0 + cos (Math.PI * progress))

/// MAE's linear scaling: lr = baseLr * effectiveBatch / 256.
let scaledLr (baseLr: float) (effectiveBatch: int) = baseLr * float effectiveBatch / 256.0

/// A parameter group: its parameters, weight decay and learning-rate multiplier.
type Group =
    { Parameters: Parameter[]
      WeightDecay: float
      LrScale: float }

/// Two groups (decay / no decay) of the trainable parameters of `m`.
let decayGroups (weightDecay: float) (m: torch.nn.Module) =
    let trainable = m.named_parameters() |> Seq.filter (fun struct (_, p) -> p.requires_grad) |> Array.ofSeq
    let pick keep =
        trainable |> Array.filter (fun struct (n, p) -> decays n p = keep) |> Array.map (fun struct (_, p) -> p)
    [| { Parameters = pick true; WeightDecay = weightDecay; LrScale = 1.0 }
       { Parameters = pick false; WeightDecay = 0.0; LrScale = 1.0 } |]
    |> Array.filter (fun g -> g.Parameters.Length > 0)

/// AdamW over the groups (betas as MAE: 0.9, 0.95).
let adamW (lr: float) (beta1: float, beta2: float) (groups: Group[]) =
    let pgs =
        groups
        |> Array.map (fun g ->
            AdamW.ParamGroup(g.Parameters, lr = lr * g.LrScale, beta1 = beta1, beta2 = beta2, eps = 1e-8, weight_decay = g.WeightDecay, amsgrad = false, maximize = false))
    torch.optim.AdamW(pgs, lr = lr, beta1 = beta1, beta2 = beta2)

/// Sets every group's learning rate to `lr` times that group's scale.
let setLr (opt: torch.optim.Optimizer) (groups: Group[]) (lr: float) =
    Seq.iteri (fun i (pg: torch.optim.ILearningRateController) -> pg.LearningRate <- lr * groups.[i].LrScale) opt.ParamGroups
