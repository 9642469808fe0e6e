module Mae.Benchmarks.Program

open System
open System.Diagnostics
open TorchSharp
open Mae

let time (label: string) (reps: int) (f: unit -> unit) =
    for _ in 1 .. 3 do f ()
    let sw = Stopwatch.StartNew()
    for _ in 1 .. reps do f ()
    eprintfn "%-28s %8.2f ms" label (sw.Elapsed.TotalMilliseconds / float reps)

let profile (kernel: AttentionKernel) =
    let cfg = { MaeConfig.tiny with Attention = kernel }
    use model = MaskedAutoencoderViT.Create(cfg, 0L)
    let x = torch.randn(256L, 1L, 28L, 28L)
    use g = new Generator(0UL, torch.CPU)
    let opt = Optim.adamW 1e-3 (0.9, 0.95) (Optim.decayGroups 0.05 model)
    eprintfn "attention %A" kernel
    time "patch_embed fwd" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Embed(x) |> ignore)
    time "mask" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Mask(model.Embed(x), g) |> ignore)
    time "forward" 10 (fun () -> use _ = torch.NewDisposeScope() in model.Forward(x, g) |> ignore)
    time "forward+backward" 10 (fun () ->
        use _ = torch.NewDisposeScope()
        model.Forward(x, g).Loss.backward())
    model.Forward(x, g).Loss.backward()
    time "adamw step" 10 (fun () -> use _ = torch.NewDisposeScope() in opt.step() |> ignore)
    opt.zero_grad()
    time "full step" 10 (fun () ->
        use _ = torch.NewDisposeScope()
        model.Forward(x, g).Loss.backward()
        opt.step() |> ignore
        opt.zero_grad())

[<EntryPoint>]
let main argv =
    torch.set_num_threads 2
    Runtime.tuneAllocator ()
    eprintfn "threads %d" (torch.get_num_threads ())
    match argv with
    | [| "profile" |] ->
        profile Sdpa
        profile Math
        0
    | _ ->
        eprintfn "usage: profile"
        2
