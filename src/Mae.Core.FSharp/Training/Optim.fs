/// Optimizer construction (AdamW with MAE's weight-decay rule) and the learning-rate schedule.
module Mae.Optim

open System
open System.IO
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

/// AdamW (decoupled weight decay, Loshchilov & Hutter) with each group's parameters packed into
/// one contiguous buffer: the parameters become views of that buffer, and a step is a handful of
/// whole-buffer operations per group instead of several small ones per tensor (which on a CPU
/// costs per-op overhead and runs the many small tensors on one thread).
///
/// The update is torch.optim.AdamW's: p <- p (1 - lr wd); m <- b1 m + (1 - b1) g;
/// v <- b2 v + (1 - b2) g^2; p <- p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
/// A parameter without a gradient at a step counts as a zero gradient.
/// Create it after the model is on its final device: moving the model afterwards replaces its
/// parameters, and the optimizer would go on updating the old ones.
type AdamW(groups: Group[], lr: float, betas: float * float, eps: float) =
    let beta1, beta2 = betas
    do
        if isNull (box groups) then nullArg "groups"
        if not (lr >= 0.0) then Guard.fail "lr" lr "a learning rate >= 0"
        if not (beta1 >= 0.0 && beta1 < 1.0) then Guard.fail "betas" betas "beta1 and beta2 in [0, 1)"
        if not (beta2 >= 0.0 && beta2 < 1.0) then Guard.fail "betas" betas "beta1 and beta2 in [0, 1)"
        if not (eps > 0.0) then Guard.fail "eps" eps "a number > 0"
        let seen = Collections.Generic.HashSet<nativeint>()
        for g in groups do
            for p in g.Parameters do
                if not (seen.Add p.Handle) then
                    Guard.fail "groups" "a parameter listed twice" "each parameter in one group only"
    let lrs = groups |> Array.map (fun g -> lr * g.LrScale)
    // one buffer per group (empty for a group without parameters), the moments beside it
    let pack (g: Group) =
        let ps = g.Parameters
        if ps.Length = 0 then torch.empty(0L)
        else
            let first = ps.[0]
            for p in ps do
                if p.dtype <> first.dtype || p.device_type <> first.device_type || p.device_index <> first.device_index then
                    Guard.fail "groups" (sprintf "%A on %O" p.dtype p.device) (sprintf "every parameter of a group with the dtype and device of the first (%A on %O)" first.dtype first.device)
            let sizes = ps |> Array.map (fun p -> p.numel())
            let flat = torch.empty(Array.sum sizes, dtype = first.dtype, device = first.device)
            use _ = torch.no_grad()
            use _ = torch.NewDisposeScope() // the views' wrappers (flat, made before it, stays)
            let mutable offset = 0L
            for p, n in Array.zip ps sizes do
                let view = flat.narrow(0L, offset, n).view(p.shape)
                view.copy_(p) |> ignore
                p.set_(view) |> ignore
                offset <- offset + n
            flat
    let flats = groups |> Array.map pack
    let expAvg = flats |> Array.map (fun flat -> torch.zeros_like(flat))
    let expAvgSq = flats |> Array.map (fun flat -> torch.zeros_like(flat))
    let mutable steps = 0L
    // 1 - beta1 as the 0-dim tensor lerp_ takes (TorchSharp binds only the tensor-weight lerp_),
    // one per group in its dtype and on its device
    let lerpWeights = flats |> Array.map (fun flat -> torch.tensor(1.0 - beta1, dtype = flat.dtype, device = flat.device))

    /// The learning rate of group `i` (lr times its scale until set).
    member _.LearningRate(i: int) = lrs.[i]
    /// Sets the learning rate of group `i`.
    member _.SetLearningRate(i: int, value: float) =
        if not (value >= 0.0) then Guard.fail "value" value "a learning rate >= 0"
        lrs.[i] <- value
    /// Number of groups.
    member _.GroupCount = groups.Length
    /// Steps taken so far.
    member _.Steps = steps

    /// One AdamW step over every group, from the parameters' current gradients.
    member _.Step() =
        use _ = torch.no_grad()
        use _ = torch.NewDisposeScope()
        steps <- steps + 1L
        let bc1 = 1.0 - Math.Pow(beta1, float steps)
        let bc2Sqrt = sqrt (1.0 - Math.Pow(beta2, float steps))
        for k in 0 .. groups.Length - 1 do
            let g = groups.[k]
            if g.Parameters.Length > 0 then
                let flat, lr = flats.[k], lrs.[k]
                let grads =
                    g.Parameters |> Array.map (fun p ->
                        let grad = p.grad
                        if isNull grad then torch.zeros(p.numel(), dtype = p.dtype, device = p.device) else grad.reshape(-1L))
                let grad = torch.cat(grads, 0L)
                // Scalars hold native memory: disposed here, not left to the finalizer (small
                // blocks freed at random times fragment the native heap)
                use decay = (1.0 - lr * g.WeightDecay).ToScalar()
                use b2 = beta2.ToScalar()
                use c2 = (1.0 - beta2).ToScalar()
                use epsScaled = (eps * bc2Sqrt).ToScalar()
                use stepSize = (-(lr / bc1) * bc2Sqrt).ToScalar()
                if g.WeightDecay <> 0.0 then flat.mul_(decay) |> ignore
                let m, v = expAvg.[k], expAvgSq.[k]
                // m <- b1 m + (1 - b1) g as one pass (torch.optim.AdamW's lerp)
                m.lerp_(grad, lerpWeights.[k]) |> ignore
                v.mul_(b2).addcmul_(grad, grad, value = c2) |> ignore
                // m / (sqrt(v) / bc2Sqrt + eps) = bc2Sqrt * m / (sqrt(v) + eps * bc2Sqrt)
                let denom = v.sqrt().add_(epsScaled)
                flat.addcdiv_(m, denom, value = stepSize) |> ignore

    /// Drops every parameter's gradient (the next backward pass writes fresh ones).
    member _.ZeroGrad() =
        for g in groups do
            for p in g.Parameters do
                p.grad <- null

    /// Whether every parameter buffer and moment holds finite values (a few whole-buffer checks).
    member _.IsFinite() =
        use _ = torch.no_grad()
        Array.append flats (Array.append expAvg expAvgSq)
        |> Array.forall (fun t -> t.numel() = 0L || (use ok = t.isfinite().all() in ok.item<bool>()))

    /// The moment buffers, named "exp_avg.K" / "exp_avg_sq.K" for group K (for checks such as
    /// Weights.nonFinite; not copies).
    member _.State() : (string * Tensor)[] =
        [| for k in 0 .. groups.Length - 1 do
               yield sprintf "exp_avg.%d" k, expAvg.[k]
               yield sprintf "exp_avg_sq.%d" k, expAvgSq.[k] |]

    /// Writes the step count and moment buffers.
    member _.Save(w: BinaryWriter) =
        w.Write "Mae.AdamW/1"
        w.Write steps
        w.Write groups.Length
        for k in 0 .. groups.Length - 1 do
            w.Write(expAvg.[k].numel())
            expAvg.[k].Save(w) |> ignore
            expAvgSq.[k].Save(w) |> ignore

    /// Reads what Save wrote; the groups must have the same sizes.
    member _.Load(r: BinaryReader) =
        let bad what = raise (InvalidDataException(sprintf "optimizer state does not match this optimizer: %s" what))
        let tag = try r.ReadString() with :? IOException | :? FormatException -> ""
        if tag <> "Mae.AdamW/1" then bad "not a Mae AdamW state (a checkpoint from before Mae's packed AdamW?)"
        let s = r.ReadInt64()
        if r.ReadInt32() <> groups.Length then bad "different number of parameter groups"
        for k in 0 .. groups.Length - 1 do
            if r.ReadInt64() <> expAvg.[k].numel() then bad (sprintf "group %d has a different size" k)
            use _ = torch.no_grad()
            expAvg.[k].Load(r) |> ignore
            expAvgSq.[k].Load(r) |> ignore
        steps <- s

    interface IDisposable with
        member _.Dispose() =
            for t in lerpWeights do t.Dispose()
            for t in expAvg do t.Dispose()
            for t in expAvgSq do t.Dispose()
            for flat in flats do flat.Dispose()

/// AdamW over the groups (betas as MAE: 0.9, 0.95; eps 1e-8).
let adamW (lr: float) (beta1: float, beta2: float) (groups: Group[]) =
    new AdamW(groups, lr, (beta1, beta2), 1e-8)

/// Sets every group's learning rate to `lr` times that group's scale.
let setLr (opt: AdamW) (groups: Group[]) (lr: float) =
    for i in 0 .. groups.Length - 1 do
        opt.SetLearningRate(i, lr * groups.[i].LrScale)
