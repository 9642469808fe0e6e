/// `compare`: Mae against the PyTorch reference (../shared/peer/bench_mae.py) on the same machine
/// in one sitting, interleaved A B A B, each side in a fresh process. The reference runs with the
/// tuned allocator (its best here) unless `--peer-malloc default`; Mae runs the way a user starts
/// it, with GLIBC_TUNABLES removed from its environment (it calls mallopt itself).
module Mae.Benchmarks.Compare

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes

let private tuned = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"

/// Runs a process and returns the last stdout line that parses as a JSON object.
let private lastJson (psi: ProcessStartInfo) =
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    use p = Process.Start psi
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    let line =
        out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
        |> Array.filter (fun l -> l.TrimStart().StartsWith "{")
        |> Array.tryLast
    match line with
    | Some l when p.ExitCode = 0 -> JsonNode.Parse l
    | _ -> failwithf "%s %s failed (exit %d): %s" psi.FileName (String.Join(" ", psi.ArgumentList)) p.ExitCode err.Result

let private peerStep (peerDir: string) (case: string) (malloc: string) =
    let psi = ProcessStartInfo "/usr/bin/python3"
    for a in [ Path.Combine(peerDir, "bench_mae.py"); "--case"; case; "--json"; "--threads"; "2" ] do psi.ArgumentList.Add a
    if malloc = "tuned" then psi.Environment.["GLIBC_TUNABLES"] <- tuned else psi.Environment.Remove "GLIBC_TUNABLES" |> ignore
    let j = lastJson psi
    j.["median_ms"].GetValue<float>()

let private maeStep (case: string) =
    let psi = ProcessStartInfo(Environment.ProcessPath)
    // started as `dotnet Mae.Benchmarks.dll`: the child needs the assembly too
    if Path.GetFileNameWithoutExtension(Environment.ProcessPath) = "dotnet" then
        psi.ArgumentList.Add(Reflection.Assembly.GetEntryAssembly().Location)
    for a in [ "steps"; case ] do psi.ArgumentList.Add a
    psi.Environment.Remove "GLIBC_TUNABLES" |> ignore
    psi.WorkingDirectory <- Path.GetTempPath() // results.json of the child goes nowhere near the repo
    let j = lastJson psi
    j.["median_ms"].GetValue<float>()

/// Rounds of (reference, Mae) per case pair; prints one JSON line per measurement and a summary
/// with the median ratio Mae / reference per case; returns all those lines.
let run (peerDir: string) (rounds: int) (peerMalloc: string) =
    if not (File.Exists(Path.Combine(peerDir, "bench_mae.py"))) then
        failwithf "no bench_mae.py in %s (pass --peer DIR)" peerDir
    let pairs = [ "A_mini", "tiny-224"; "C_mini", "small-32"; "Bsim_mini", "tiny-224-all-tokens" ]
    let ratios = Collections.Generic.Dictionary<string, ResizeArray<float>>()
    let lines = ResizeArray<string>()
    let emit (line: string) =
        printfn "%s" line
        lines.Add line
    for round in 1 .. rounds do
        for peerCase, maeCase in pairs do
            let order = if round % 2 = 1 then [ "peer"; "mae" ] else [ "mae"; "peer" ]
            let results =
                [ for side in order ->
                      side, (if side = "peer" then peerStep peerDir peerCase peerMalloc else maeStep maeCase) ]
                |> Map.ofList
            let ratio = results.["mae"] / results.["peer"]
            if not (ratios.ContainsKey maeCase) then ratios.[maeCase] <- ResizeArray()
            ratios.[maeCase].Add ratio
            emit (sprintf "{\"round\":%d,\"case\":\"%s\",\"reference_ms\":%.1f,\"mae_ms\":%.1f,\"ratio\":%.3f,\"reference_malloc\":\"%s\"}"
                    round maeCase results.["peer"] results.["mae"] ratio peerMalloc)
    for KeyValue(case, rs) in ratios do
        let sorted = rs |> Seq.sort |> Array.ofSeq
        let k = sorted.Length
        let median = if k % 2 = 1 then sorted.[k / 2] else (sorted.[k / 2 - 1] + sorted.[k / 2]) / 2.0
        emit (sprintf "{\"case\":\"%s\",\"median_ratio\":%.3f,\"min_ratio\":%.3f,\"max_ratio\":%.3f,\"rounds\":%d,\"reference_malloc\":\"%s\"}"
                case median sorted.[0] sorted.[k - 1] k peerMalloc)
    List.ofSeq lines
