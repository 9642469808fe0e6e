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
