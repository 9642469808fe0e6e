/// Where a step's time goes: the training step split into forward / backward / AdamW / zero grad,
/// and the forward pass cut into its stages, for the step cases of Steps.
module Mae.Benchmarks.Breakdowns

open System
open System.Diagnostics
open TorchSharp
open Mae

/// Where a training step's time goes for one case: forward (to the loss value), backward,
/// AdamW step, zero grad; medians over `steps` steps after warm-up.
let breakdown (name: string) (steps: int) =
    let c = Steps.find name
    let model, images, gen = Steps.inputs c
    use model = model
    use images = images
    use gen = gen
    use opt = Optim.adamW 1.5e-4 (0.9, 0.95) (Optim.decayGroups 0.05 model)
    let parts = Array.init 4 (fun _ -> Collections.Generic.List<float>())
    let sw = Stopwatch()
    let lap i = parts.[i].Add sw.Elapsed.TotalMilliseconds; sw.Restart()
    for s in 1 .. steps + 10 do
        use _ = torch.NewDisposeScope()
        sw.Restart()
        let out = (use _ = Precision.scope c.Precision in model.Forward(images, gen))
        out.Loss.item<float32>() |> ignore
        lap 0
        out.Loss.backward()
        lap 1
        opt.Step()
        lap 2
        opt.ZeroGrad()
        lap 3
        if s = 10 then for p in parts do p.Clear()
    let med (xs: Collections.Generic.List<float>) = (Seq.sort xs |> Array.ofSeq).[xs.Count / 2]
    eprintfn "%s: forward %.1f  backward %.1f  adamw %.1f  zero_grad %.1f ms" name (med parts.[0]) (med parts.[1]) (med parts.[2]) (med parts.[3])

/// The forward pass of one case cut into its stages (no gradients kept between stages' timings).
let forwardParts (name: string) =
    let model, images, gen = Steps.inputs (Steps.find name)
    use model = model
    use images = images
    use gen = gen
    eprintfn "%s" name
    Steps.time "embed" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Embed(images) |> ignore)
    let x = model.Embed(images).detach()
    Steps.time "mask" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Mask(x, gen) |> ignore)
    Steps.time "encoder" 20 (fun () -> use _ = torch.NewDisposeScope() in model.ForwardEncoder(images, gen) |> ignore)
    let enc = model.ForwardEncoder(images, gen)
    let latent = enc.Latent.detach().requires_grad_(true)
    Steps.time "decoder" 20 (fun () -> use _ = torch.NewDisposeScope() in model.ForwardDecoder({ enc with Latent = latent }) |> ignore)
    let pred = model.ForwardDecoder({ enc with Latent = latent }).detach().requires_grad_(true)
    Steps.time "loss" 20 (fun () -> use _ = torch.NewDisposeScope() in model.ForwardLoss(images, pred, enc.Masking.Mask) |> ignore)
    Steps.time "forward" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Forward(images, gen) |> ignore)
    Steps.time "patchify" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Target(images) |> ignore)
    let t = model.Target(images)
    Steps.time "mean" 20 (fun () -> use _ = torch.NewDisposeScope() in t.mean([| -1L |], keepdim = true) |> ignore)
    Steps.time "var" 20 (fun () -> use _ = torch.NewDisposeScope() in t.var(-1L, unbiased = true, keepdim = true) |> ignore)
    Steps.time "normpix" 20 (fun () -> use _ = torch.NewDisposeScope() in Losses.normPixTarget 1e-6 t |> ignore)
    Steps.time "mse" 20 (fun () -> use _ = torch.NewDisposeScope() in Losses.maskedMse pred t enc.Masking.Mask |> ignore)
