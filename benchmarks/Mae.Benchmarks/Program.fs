/// The benchmark commands (benchmarks/README.md): step cases, the memory soak, the comparison with
/// the PyTorch reference, A/B runs of a setting, and the probes of Memory, Breakdowns and
/// KernelProbes.
module Mae.Benchmarks.Program

open System
open TorchSharp
open Mae

/// Writes JSON lines as one array to benchmarks/results.json (from the repository root) or
/// ./benchmark-results.json elsewhere, atomically.
let writeResults (lines: string list) =
    let path =
        if IO.Directory.Exists "benchmarks" then IO.Path.GetFullPath "benchmarks/results.json"
        else IO.Path.GetFullPath "benchmark-results.json"
    Checkpoint.writeAtomically path (fun s ->
        let text = "[\n  " + String.Join(",\n  ", lines) + "\n]\n"
        let bytes = Text.Encoding.UTF8.GetBytes text
        s.Write(bytes, 0, bytes.Length))
    eprintfn "results: %s" path

/// Step timings of every case (or those named), the matmul peaks first; one JSON line each.
let steps (only: string list) =
    let fp32 = Steps.matmulPeak ScalarType.Float32
    let bf16, _ = Steps.matmulPeak ScalarType.BFloat16
    let peak =
        sprintf "{\"case\":\"matmul-peak-2048\",\"fp32_gflops\":%.1f,\"fp32_onednn_gflops\":%.1f,\"bf16_gflops\":%.1f,\"threads\":%d}"
            (fst fp32) (snd fp32) bf16 (torch.get_num_threads ())
    printfn "%s" peak
    let lines =
        [ for c in Steps.cases do
              if List.isEmpty only || List.contains c.Name only then
                  let line = Steps.run c 10 20 fp32
                  printfn "%s" line
                  yield line ]
    peak :: lines

[<EntryPoint>]
let main argv =
    // MAE_BENCH_WAIT=spin keeps OpenMP's default (spinning) wait policy, for comparisons
    if Environment.GetEnvironmentVariable "MAE_BENCH_WAIT" <> "spin" then Runtime.preferPassiveWaiting () |> ignore
    torch.set_num_threads (match Environment.GetEnvironmentVariable "MAE_BENCH_THREADS" with null | "" -> 2 | s -> int s)
    Runtime.tuneAllocator ()
    // MAE_BENCH_MALLOPT="param=value ...": glibc mallopt settings after Mae's own (experiments)
    match Environment.GetEnvironmentVariable "MAE_BENCH_MALLOPT" with
    | null | "" -> ()
    | s -> Memory.applyMallopt s
    if Environment.GetEnvironmentVariable "MAE_BENCH_ONEDNN" = "0" then Kernels.OneDnnLinear <- false
    eprintfn "threads %d, oneDNN linear %b" (torch.get_num_threads ()) Kernels.OneDnnLinear
    match argv with
    | a when a.Length >= 2 && a.[0] = "breakdown" ->
        for n in a.[1..] do Breakdowns.breakdown n 20
        0
    | a when a.Length >= 2 && a.[0] = "forward" ->
        for n in a.[1..] do Breakdowns.forwardParts n
        0
    | a when a.Length >= 3 && a.[0] = "ab" ->
        // ab SETTING CASE [ROUNDS]: SETTING fusedmlp (Kernels.FusedMlp) or onednn (Kernels.OneDnnLinear)
        let set (v: bool) () =
            match a.[1] with
            | "fusedmlp" -> Kernels.FusedMlp <- v
            | "onednn" -> Kernels.OneDnnLinear <- v
            | s -> failwithf "unknown setting %s" s
        let rounds = if a.Length > 3 then int a.[3] else 8
        let on, off = Steps.ab (Steps.find a.[2]) rounds (set true) (set false)
        printfn "{\"case\":\"%s\",\"setting\":\"%s\",\"on_ms\":%.1f,\"off_ms\":%.1f,\"ratio\":%.3f}" a.[2] a.[1] on off (on / off)
        0
    | [| "finalized" |] ->
        Memory.finalized ()
        0
    | [| "scriptrepeat" |] ->
        KernelProbes.scriptRepeat ()
        0
    | [| "dnnl" |] ->
        KernelProbes.dnnl ()
        0
    | [| "dnnlcheck" |] ->
        KernelProbes.dnnlCheck ()
        0
    | [| "soak" |] ->
        Memory.soak 5000 128 [ 500; 2500; 5000 ] |> ignore
        0
    | [| "soak"; n |] ->
        let n = int n
        Memory.soak n 128 [ n / 10; n / 2; n ] |> ignore
        0
    | a when a.Length >= 1 && a.[0] = "steps" ->
        // steps alone (from the repository root) keeps its figures; `compare` children run elsewhere
        let lines = steps (List.ofArray a.[1..])
        if a.Length = 1 then writeResults lines
        0
    | a when a.Length >= 1 && (a.[0] = "compare" || a.[0] = "--compare-peer") ->
        // compare [--peer DIR] [--rounds N] [--peer-malloc tuned|default]
        let rec opt name def (xs: string list) =
            match xs with
            | n :: v :: _ when n = name -> v
            | _ :: rest -> opt name def rest
            | [] -> def
        let rest = List.ofArray a.[1..]
        Compare.run (opt "--peer" "../shared/peer" rest) (int (opt "--rounds" "5" rest)) (opt "--peer-malloc" "tuned" rest) |> ignore
        0
    | [||] ->
        // everything: the 5,000-step soak (first, so that its resident memory is the training
        // run's own), the step cases, and the reference comparison when present
        let soakLine = Memory.soak 5000 128 [ 500; 2500; 5000 ]
        let stepLines = steps []
        let compareLines =
            if IO.File.Exists "../shared/peer/bench_mae.py" && IO.File.Exists "/usr/bin/python3" then
                Compare.run "../shared/peer" 5 "tuned"
            else
                eprintfn "no ../shared/peer/bench_mae.py (or /usr/bin/python3): comparison skipped"
                []
        writeResults (stepLines @ [ soakLine ] @ compareLines)
        0
    | _ ->
        eprintfn "usage: Mae.Benchmarks [steps [CASE ...] | soak [STEPS] | compare|--compare-peer [--peer DIR] [--rounds N] [--peer-malloc tuned|default] | ab fusedmlp|onednn CASE [ROUNDS] | breakdown CASE ... | forward CASE ... | finalized | dnnl | dnnlcheck | scriptrepeat]"
        2
