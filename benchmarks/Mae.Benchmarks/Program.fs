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
    use opt = Optim.adamW 1e-3 (0.9, 0.95) (Optim.decayGroups 0.05 model)
    eprintfn "attention %A" kernel
    time "patch_embed fwd" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Embed(x) |> ignore)
    time "mask" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Mask(model.Embed(x), g) |> ignore)
    time "forward" 10 (fun () -> use _ = torch.NewDisposeScope() in model.Forward(x, g) |> ignore)
    time "forward+backward" 10 (fun () ->
        use _ = torch.NewDisposeScope()
        model.Forward(x, g).Loss.backward())
    model.Forward(x, g).Loss.backward()
    time "adamw step" 10 (fun () -> use _ = torch.NewDisposeScope() in opt.Step())
    opt.ZeroGrad()
    time "full step" 10 (fun () ->
        use _ = torch.NewDisposeScope()
        model.Forward(x, g).Loss.backward()
        opt.Step()
        opt.ZeroGrad())

/// Where a training step's time goes for one case: forward (to the loss value), backward,
/// AdamW step, zero grad; medians over `steps` steps after warm-up.
let breakdown (name: string) (steps: int) =
    let c = Steps.cases |> List.find (fun c -> c.Name = name)
    use model = MaskedAutoencoderViT.Create(c.Config, 0L)
    let h, w = c.Config.ImageSize
    use images = torch.randn(int64 c.Batch, 3L, int64 h, int64 w)
    use gen = new Generator(0UL, torch.CPU)
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
    let c = Steps.cases |> List.find (fun c -> c.Name = name)
    use model = MaskedAutoencoderViT.Create(c.Config, 0L)
    let h, w = c.Config.ImageSize
    use images = torch.randn(int64 c.Batch, 3L, int64 h, int64 w)
    use gen = new Generator(0UL, torch.CPU)
    eprintfn "%s" name
    time "embed" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Embed(images) |> ignore)
    let x = model.Embed(images).detach()
    time "mask" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Mask(x, gen) |> ignore)
    time "encoder" 20 (fun () -> use _ = torch.NewDisposeScope() in model.ForwardEncoder(images, gen) |> ignore)
    let enc = model.ForwardEncoder(images, gen)
    let latent = enc.Latent.detach().requires_grad_(true)
    time "decoder" 20 (fun () -> use _ = torch.NewDisposeScope() in model.ForwardDecoder(latent, enc.Masking.IdsRestore) |> ignore)
    let pred = model.ForwardDecoder(latent, enc.Masking.IdsRestore).detach().requires_grad_(true)
    time "loss" 20 (fun () -> use _ = torch.NewDisposeScope() in model.ForwardLoss(images, pred, enc.Masking.Mask) |> ignore)
    time "forward" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Forward(images, gen) |> ignore)
    time "patchify" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Patchify(images) |> ignore)
    let t = model.Patchify(images)
    time "mean" 20 (fun () -> use _ = torch.NewDisposeScope() in t.mean([| -1L |], keepdim = true) |> ignore)
    time "var" 20 (fun () -> use _ = torch.NewDisposeScope() in t.var(-1L, unbiased = true, keepdim = true) |> ignore)
    time "normpix" 20 (fun () -> use _ = torch.NewDisposeScope() in Losses.normPixTarget 1e-6 t |> ignore)
    time "mse" 20 (fun () -> use _ = torch.NewDisposeScope() in Losses.maskedMse pred t enc.Masking.Mask |> ignore)

/// Single kernels at the shapes of tiny-224's encoder (batch 8, 50 tokens, width 192).
let kernels () =
    let linear (m: int64) (k: int64) (nOut: int64) =
        let a = torch.randn(m, k)
        let w = torch.randn(nOut, k)
        let b = torch.randn(nOut)
        time (sprintf "linear %dx%dx%d" m k nOut) 200 (fun () -> use _ = torch.NewDisposeScope() in torch.nn.functional.linear(a, w, b) |> ignore)
    linear 400L 192L 576L
    linear 400L 768L 192L
    linear 400L 192L 768L
    let blk = Block.Standard(192, 3, 4.0, Math)
    let h = torch.randn(8L, 50L, 192L).requires_grad_(true)
    let one = torch.ones(1L)
    time "1000 tiny adds" 20 (fun () -> use _ = torch.NewDisposeScope() in (for _ in 1 .. 1000 do (one + one) |> ignore))
    time "1000 tiny adds no scope" 20 (fun () -> for _ in 1 .. 1000 do (use t = one + one in ()))
    time "1000 shape" 20 (fun () -> for _ in 1 .. 1000 do h.shape |> ignore)
    let hn = torch.randn(8L, 50L, 192L)
    let ln = torch.nn.LayerNorm(192L, eps = 1e-6)
    time "layernorm" 200 (fun () -> use _ = torch.NewDisposeScope() in ln.forward(hn) |> ignore)
    let g = torch.randn(8L, 50L, 768L)
    time "gelu" 200 (fun () -> use _ = torch.NewDisposeScope() in torch.nn.functional.gelu(g) |> ignore)
    let q = torch.randn(8L, 3L, 50L, 64L)
    time "attn math" 200 (fun () -> use _ = torch.NewDisposeScope() in (q.matmul(q.transpose(-2L, -1L)) * 0.125).softmax(-1L).matmul(q) |> ignore)
    time "add 8x50x192" 200 (fun () -> use _ = torch.NewDisposeScope() in (hn + hn) |> ignore)
    let attn = new Attention(192, 3, true, Math)
    let mlp = new Mlp(192, 768)
    time "attn fwd" 100 (fun () -> use _ = torch.NewDisposeScope() in attn.forward(h) |> ignore)
    time "mlp fwd" 100 (fun () -> use _ = torch.NewDisposeScope() in mlp.forward(h) |> ignore)
    time "attn fwd+bwd" 100 (fun () -> use _ = torch.NewDisposeScope() in attn.forward(h).sum().backward())
    time "mlp fwd+bwd" 100 (fun () -> use _ = torch.NewDisposeScope() in mlp.forward(h).sum().backward())
    let hd = torch.randn(8L, 197L, 128L).requires_grad_(true)
    for k in [ Math; Sdpa ] do
        let bd = Block.Standard(128, 4, 4.0, k)
        time (sprintf "dec block %A fwd+bwd" k) 50 (fun () -> use _ = torch.NewDisposeScope() in bd.forward(hd).sum().backward())
        let be = Block.Standard(192, 3, 4.0, k)
        time (sprintf "enc block %A fwd+bwd" k) 50 (fun () -> use _ = torch.NewDisposeScope() in be.forward(h).sum().backward())
    time "block fwd" 100 (fun () -> use _ = torch.NewDisposeScope() in blk.forward(h) |> ignore)
    time "block fwd+bwd" 100 (fun () -> use _ = torch.NewDisposeScope() in blk.forward(h).sum().backward())

let rssMiB = Steps.rssMiB

/// Trains the tiny preset for `steps` optimizer steps on synthetic images and reports resident
/// memory at given steps: it must stay flat after warm-up (one dispose scope per step).
let soak (steps: int) (batch: int) (marks: int list) =
    let cfg = MaeConfig.tiny
    use model = MaskedAutoencoderViT.Create(cfg, 0L)
    let n = batch * 16
    use images = torch.randn(int64 n, 1L, 28L, 28L)
    let epochs = (steps + 15) / 16
    let options =
        { PretrainOptions.defaults with
            Epochs = epochs; BatchSize = batch; BaseLr = 1e-3; MaxIterations = steps }
    let seen = Collections.Generic.Dictionary<int, float>()
    let report (p: PretrainProgress) =
        if List.contains p.Step marks then
            let rss = rssMiB ()
            seen.[p.Step] <- rss
            eprintfn "step %5d  rss %.1f MiB  loss %.4f" p.Step rss p.Loss
    let r = Pretrain.run model images options null report Threading.CancellationToken.None
    let parts = marks |> List.map (fun m -> sprintf "\"rss_mib_step_%d\":%.1f" m seen.[m]) |> String.concat ","
    let first, last = seen.[List.head marks], seen.[List.last marks]
    printfn "{\"case\":\"soak-tiny\",\"steps\":%d,\"batch\":%d,%s,\"growth_percent\":%.2f,\"seconds\":%.0f}"
        r.Steps batch parts ((last - first) / first * 100.0) r.Seconds

/// Step timings of every case (or those named), the matmul peaks first; one JSON line each, and
/// all of them in benchmarks/results.json (when run from the repository root) or ./benchmark-results.json.
let steps (only: string list) =
    let fp32 = Steps.matmulPeak ScalarType.Float32
    let bf16 = Steps.matmulPeak ScalarType.BFloat16
    let peak = sprintf "{\"case\":\"matmul-peak-2048\",\"fp32_gflops\":%.1f,\"bf16_gflops\":%.1f,\"threads\":%d}" fp32 bf16 (torch.get_num_threads ())
    printfn "%s" peak
    let lines =
        [ for c in Steps.cases do
              if List.isEmpty only || List.contains c.Name only then
                  let line = Steps.run c 10 20 fp32
                  printfn "%s" line
                  yield line ]
    let path =
        if IO.Directory.Exists "benchmarks" then IO.Path.GetFullPath "benchmarks/results.json"
        else IO.Path.GetFullPath "benchmark-results.json"
    Checkpoint.writeAtomically path (fun s ->
        let text = "[\n  " + String.Join(",\n  ", peak :: lines) + "\n]\n"
        let bytes = Text.Encoding.UTF8.GetBytes text
        s.Write(bytes, 0, bytes.Length))
    eprintfn "results: %s" path

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
    | [| "soak" |] ->
        soak 2000 128 [ 200; 500; 1000; 1500; 2000 ]
        0
    | [| "soak"; n |] ->
        let n = int n
        soak n 128 [ n / 10; n / 2; n ]
        0
    | a when a.Length >= 2 && a.[0] = "breakdown" ->
        for n in a.[1..] do breakdown n 20
        0
    | a when a.Length >= 2 && a.[0] = "forward" ->
        for n in a.[1..] do forwardParts n
        0
    | [| "kernels" |] ->
        kernels ()
        0
    | a when a.Length >= 1 && a.[0] = "steps" ->
        steps (List.ofArray a.[1..])
        0
    | a when a.Length >= 1 && a.[0] = "compare" ->
        // compare [--peer DIR] [--rounds N] [--peer-malloc tuned|default]
        let rec opt name def (xs: string list) =
            match xs with
            | n :: v :: _ when n = name -> v
            | _ :: rest -> opt name def rest
            | [] -> def
        let rest = List.ofArray a.[1..]
        Compare.run (opt "--peer" "../shared/peer" rest) (int (opt "--rounds" "2" rest)) (opt "--peer-malloc" "tuned" rest)
        0
    | [||] ->
        steps []
        soak 2000 128 [ 200; 500; 1000; 1500; 2000 ]
        0
    | _ ->
        eprintfn "usage: Mae.Benchmarks [profile | soak [STEPS] | steps [CASE ...] | compare [--peer DIR] [--rounds N] [--peer-malloc tuned|default]]"
        2
