/// The `mae` command line, run as a child process (the build of tests/Unit builds it first)
/// on the committed fixture tests/fixtures/mnist-small: nothing is downloaded. The children train
/// on one thread: as fast as two for the tiny preset, and not slowed down by oversubscription when
/// other processes share the cores.
module Mae.Tests.Unit.CliTests

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

let private fixture () = fixturePath "mnist-small"

/// The built command (program, leading arguments): the apphost of this test binary's
/// configuration first (bin/CONFIG/net10.0/[linux-x64/]mae), else `dotnet mae.dll`.
let private mae =
    lazy
        (let config = if AppContext.BaseDirectory.Contains $"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}" then "Debug" else "Release"
         let bin = Path.Combine(repoRoot.Value, "src", "Mae.Cli", "bin")
         let folders =
             [ for c in [ config; (if config = "Release" then "Debug" else "Release") ] do
                   for rid in [ RuntimeInformation.RuntimeIdentifier; "linux-x64"; "" ] -> Path.Combine(bin, c, "net10.0", rid) ]
         let apphost = if OperatingSystem.IsWindows() then "mae.exe" else "mae"
         match folders |> List.tryFind (fun f -> File.Exists(Path.Combine(f, apphost))) with
         | Some f -> Path.Combine(f, apphost), []
         | None ->
             match folders |> List.tryFind (fun f -> File.Exists(Path.Combine(f, "mae.dll"))) with
             | Some f -> "dotnet", [ Path.Combine(f, "mae.dll") ]
             | None -> failwithf "the mae command is not built under %s (build tests/Unit, which builds src/Mae.Cli)" bin)

/// A running `mae`: its stderr lines as they come, its stdout gathered.
type private Child(args: string list, env: (string * string) list) =
    let program, lead = mae.Value
    let psi = ProcessStartInfo(program, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    do
        for a in lead @ args do
            psi.ArgumentList.Add a
        for k, v in env do
            if isNull v then psi.Environment.Remove k |> ignore else psi.Environment.[k] <- v
    let stdout = Text.StringBuilder()
    let stderr = Text.StringBuilder()
    let lines = new BlockingCollection<string>()
    let p = new Process(StartInfo = psi)
    do
        p.OutputDataReceived.Add(fun e -> if not (isNull e.Data) then lock stdout (fun () -> stdout.AppendLine e.Data |> ignore))
        p.ErrorDataReceived.Add(fun e ->
            if not (isNull e.Data) then
                lock stderr (fun () -> stderr.AppendLine e.Data |> ignore)
                lines.Add e.Data)
        p.Start() |> ignore
        p.BeginOutputReadLine()
        p.BeginErrorReadLine()
    member _.Pid = p.Id
    /// Waits (at most `timeout`) for a stderr line containing `text`.
    member _.WaitForLine(text: string, timeout: TimeSpan) =
        let clock = Stopwatch.StartNew()
        let rec loop () =
            let left = max TimeSpan.Zero (timeout - clock.Elapsed)
            let mutable line = null
            if lines.TryTake(&line, left) then
                if line.Contains text then line else loop ()
            else failtestf "no stderr line with \"%s\" within %O; stderr so far:\n%s" text timeout (lock stderr stderr.ToString)
        loop ()
    /// Waits for the exit (killing the process after `timeout`): exit code, stdout, stderr.
    member _.Finish(timeout: TimeSpan) =
        if not (p.WaitForExit timeout) then
            p.Kill true
            failtestf "mae %s did not finish within %O; stderr:\n%s" (String.Join(" ", args)) timeout (lock stderr stderr.ToString)
        p.WaitForExit() // drains the output events
        p.ExitCode, stdout.ToString(), stderr.ToString()
    interface IDisposable with
        member _.Dispose() =
            if not p.HasExited then p.Kill true
            p.Dispose()
            lines.Dispose()

/// Runs `mae args` to the end: exit code, stdout, stderr.
/// Runs `mae` with `env` added to (or replacing in) this process's environment; a null value removes the variable.
let private runWith (env: (string * string) list) (args: string list) =
    use child = new Child(args, env)
    child.Finish(TimeSpan.FromMinutes 3.0)

let private run (args: string list) = runWith [] args

/// The last non-empty line of stdout, parsed as a JSON object.
let private lastJson (stdout: string) =
    let lastLine = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.last
    JsonNode.Parse(lastLine).AsObject()

let private expectExit (expected: int) (code: int, stdout: string, stderr: string) what =
    Expect.equal code expected (sprintf "%s: exit code (stdout: %s; stderr: %s)" what stdout stderr)

[<DllImport("libc", EntryPoint = "kill", SetLastError = true)>]
extern int private sysKill(int pid, int signal)

[<DllImport("libc", EntryPoint = "signal")>]
extern nativeint private sysSignal(int signum, nativeint handler)

let private SIGINT = 2

/// True when this process ignores SIGINT (a background job of a non-interactive shell): children
/// would inherit that and never see the test's SIGINT.
let private sigintIgnored () =
    let status = "/proc/self/status"
    File.Exists status
    && File.ReadAllLines status
       |> Array.exists (fun l -> l.StartsWith "SigIgn:" && (Convert.ToUInt64(l.Substring(7).Trim(), 16) &&& (1UL <<< (SIGINT - 1))) <> 0UL)

/// Runs `f` with SIGINT at its default disposition in this process (so in its children), and
/// restores "ignored" afterwards when it was.
let private withSigintDefault (f: unit -> unit) =
    let ignored = sigintIgnored ()
    if ignored then sysSignal (SIGINT, 0n) |> ignore // SIG_DFL
    try f ()
    finally
        if ignored then sysSignal (SIGINT, 1n) |> ignore // SIG_IGN

let private pipeline () =
    use dir = new TempDir()
    let out = dir.File "run"
    let code, stdout, stderr =
        run [ "pretrain"; "--modality"; "image"; "--data"; fixture (); "--preset"; "tiny"; "--epochs"; "1"
              "--batch-size"; "128"; "--out"; out; "--threads"; "1"; "--json" ]
    expectExit 0 (code, stdout, stderr) "pretrain"
    let lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
    Expect.equal lines.Length 1 "with --json stdout holds the JSON object alone; human output goes to stderr"
    let result = lastJson stdout
    Expect.equal (result.["steps"].GetValue<int>()) (1024 / 128) "one epoch of the 1024 fixture images at batch 128"
    Expect.isFalse (result.["cancelled"].GetValue<bool>()) "not cancelled"
    Expect.isTrue (Double.IsFinite(result.["final_loss"].GetValue<float>())) "a finite final loss"
    let ckpt = result.["checkpoint"].GetValue<string>()
    Expect.equal ckpt (Path.Combine(out, "last.ckpt")) "the checkpoint is OUT/last.ckpt"
    Expect.isTrue (File.Exists ckpt) "the checkpoint exists"
    Expect.stringContains stderr "pretrain step 8/8" "progress goes to stderr as log lines when redirected"
    // what a person watches: TensorBoard events (TFRecord framing: length, crc, event, crc) and the loss curve
    let events = Directory.GetFiles(Path.Combine(out, "tb"), "events.out.tfevents.*")
    Expect.equal events.Length 1 "one event file in OUT/tb"
    let bytes = File.ReadAllBytes events.[0]
    let records =
        let rec walk (i: int) (acc: byte[] list) =
            if i >= bytes.Length then List.rev acc
            else
                let length = int (BitConverter.ToInt64(bytes, i))
                walk (i + 12 + length + 4) (bytes.[i + 12 .. i + 11 + length] :: acc)
        walk 0 []
    Expect.equal records.Length (1 + 4 * 8) "the file-version event, then loss, lr, throughput and gradient norm for each of 8 steps"
    for tag in [ "train/loss"; "train/lr"; "train/images_per_second"; "train/grad_norm" ] do
        let count = records |> List.filter (fun r -> Text.Encoding.ASCII.GetString(r).Contains tag) |> List.length
        Expect.equal count 8 (sprintf "%s once per step" tag)
    let lossPng = result.["loss_png"].GetValue<string>()
    Expect.equal lossPng (Path.Combine(out, "loss.png")) "the loss curve is OUT/loss.png"
    let header = File.ReadAllBytes lossPng
    Expect.equal header.[1..3] "PNG"B "a PNG file"
    let be (o: int) = (int header.[o] <<< 24) ||| (int header.[o + 1] <<< 16) ||| (int header.[o + 2] <<< 8) ||| int header.[o + 3]
    Expect.equal (be 16, be 20) (1000, 560) "1000 x 560 pixels"
    let code, stdout, stderr =
        run [ "probe"; "--checkpoint"; ckpt; "--data"; fixture (); "--probe-epochs"; "3"; "--train-limit"; "512"; "--test-limit"; "256"; "--threads"; "1"; "--json" ]
    expectExit 0 (code, stdout, stderr) "probe"
    let probe = lastJson stdout
    for key in [ "probe_pretrained"; "probe_random_init"; "probe_raw_pixels" ] do
        let acc = probe.[key].GetValue<float>()
        Expect.isTrue (acc >= 0.0 && acc <= 1.0) (sprintf "%s = %f is an accuracy in [0, 1]" key acc)
    Expect.equal (probe.["test_images"].GetValue<int>()) 256 "--test-limit applies"
    let png = dir.File "recon.png"
    let code, stdout, stderr = run [ "reconstruct"; "--checkpoint"; ckpt; "--data"; fixture (); "--out"; png; "--count"; "4" ]
    expectExit 0 (code, stdout, stderr) "reconstruct"
    Expect.isTrue (File.Exists png) "the PNG is written"
    Expect.sequenceEqual (File.ReadAllBytes(png).[.. 7]) [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |] "PNG signature"
    let code, stdout, stderr = run [ "info"; "--checkpoint"; ckpt; "--json" ]
    expectExit 0 (code, stdout, stderr) "info"
    let info = lastJson stdout
    Expect.equal (info.["step"].GetValue<int>()) 8 "info reports the step"
    Expect.equal (info.["config"].["embedDim"].GetValue<int>()) MaeConfig.tiny.EmbedDim "info reports the configuration"
    let model, _ = Checkpoint.loadModel ckpt torch.CPU
    use model = model
    let count = model.parameters () |> Seq.sumBy (fun p -> p.numel ())
    Expect.equal (info.["parameters"].GetValue<int64>()) count "info counts every parameter"

let private badArguments () =
    use dir = new TempDir()
    let code, stdout, stderr = run [ "pretrain"; "--mask-ratio"; "1.5"; "--data"; fixture (); "--out"; dir.File "a" ]
    expectExit 2 (code, stdout, stderr) "--mask-ratio 1.5"
    Expect.stringContains stderr "--mask-ratio" "the message names the option"
    Expect.stringContains stderr "[0, 1)" "the message states the range"
    Expect.isFalse (Directory.Exists(dir.File "a")) "nothing is written"
    let code, stdout, stderr = run [ "pretrain"; "--modality"; "audio"; "--data"; fixture (); "--out"; dir.File "a" ]
    expectExit 2 (code, stdout, stderr) "--modality audio"
    Expect.stringContains stderr "--modality" "the message names the option"
    Expect.stringContains stderr "image" "the message lists the allowed values"
    let code, stdout, stderr = run [ "pretrain"; "--precision"; "fp16"; "--data"; fixture (); "--out"; dir.File "a" ]
    expectExit 2 (code, stdout, stderr) "--precision fp16"
    Expect.stringContains stderr "--precision" "the message names the option"
    Expect.stringContains stderr "bf16" "the message lists the allowed values"
    let result = run [ "pretrain"; "--epochs"; "many"; "--data"; fixture (); "--out"; dir.File "a" ]
    expectExit 2 result "a value that does not parse"
    let code, stdout, stderr = run [ "pretrain"; "--preset"; "base"; "--data"; fixture (); "--out"; dir.File "a" ]
    expectExit 2 (code, stdout, stderr) "a preset whose patch does not divide the images"
    Expect.stringContains stderr "divisible by the patch size 16" "the reason is given"
    let missing = dir.File "missing.ckpt"
    let code, stdout, stderr = run [ "probe"; "--checkpoint"; missing; "--data"; fixture () ]
    expectExit 1 (code, stdout, stderr) "a missing checkpoint is a failure (exit 1)"
    Expect.stringContains stderr missing "the message names the file"
    Expect.stringContains stderr "does not exist" "the message says what is wrong"
    for command in [ "pretrain"; "probe"; "reconstruct"; "info" ] do
        let code, stdout, stderr = run [ command; "--help" ]
        expectExit 0 (code, stdout, stderr) (command + " --help")
        Expect.stringContains stdout (sprintf "mae %s [options]" command) "the usage line"
        Expect.stringContains stdout "Exit codes" "the exit codes are documented"

/// Before the fix: exit 1 and "expected a checkpoint of a model with the same configuration",
/// naming neither the option nor the values.
let private resumeWithOtherOptions () =
    use dir = new TempDir()
    let out = dir.File "run"
    let args extra =
        let epochs = if List.contains "--epochs" extra then [] else [ "--epochs"; "1" ]
        [ "pretrain"; "--data"; fixture (); "--batch-size"; "64"; "--train-limit"; "128"
          "--threads"; "1"; "--out"; out; "--json" ] @ epochs @ extra
    expectExit 0 (run (args [])) "the first run"
    let code, stdout, stderr = run (args [ "--resume"; "--mask-ratio"; "0.5" ])
    expectExit 2 (code, stdout, stderr) "resume with another --mask-ratio"
    Expect.stringContains stderr "--mask-ratio (maskRatio) was 0.5; the checkpoint has 0.75" "names the option, its value and the checkpoint's"
    let code, stdout, stderr = run (args [ "--resume"; "--epochs"; "3"; "--seed"; "5" ])
    expectExit 2 (code, stdout, stderr) "resume with other --epochs and --seed"
    Expect.stringContains stderr "--epochs (epochs) was 3; the checkpoint has 1" "names --epochs"
    Expect.stringContains stderr "--seed (seed) was 5; the checkpoint has 0" "and --seed, in the same message"
    let code, stdout, stderr = run (args [ "--resume"; "--preset"; "base" ])
    expectExit 2 (code, stdout, stderr) "resume with another --preset"

/// The fixture's first `n` training digits as DIR/<digit>/<index>.png.
let private pngFolder (root: string) (n: int) =
    let dims, pixels = Data.Idx.read (Data.Idx.find (fixture ()) "train-images-idx3-ubyte")
    let _, labels = Data.Idx.read (Data.Idx.find (fixture ()) "train-labels-idx1-ubyte")
    let h, w = dims.[1], dims.[2]
    for i in 0 .. n - 1 do
        let dir = Path.Combine(root, string labels.[i])
        Directory.CreateDirectory dir |> ignore
        use f = File.Create(Path.Combine(dir, sprintf "%03d.png" i))
        StbImageWriteSharp.ImageWriter().WritePng(pixels.[i * h * w .. (i + 1) * h * w - 1], w, h, StbImageWriteSharp.ColorComponents.Grey, f)

let private imageFolderPipeline () =
    use dir = new TempDir()
    let images = dir.File "digits"
    pngFolder images 200
    let out = dir.File "run"
    let code, stdout, stderr =
        run [ "pretrain"; "--data"; images; "--preset"; "tiny"; "--image-size"; "28"; "--epochs"; "1"; "--batch-size"; "32"
              "--out"; out; "--threads"; "1"; "--json" ]
    expectExit 0 (code, stdout, stderr) "pretrain on an image folder"
    Expect.equal ((lastJson stdout).["steps"].GetValue<int>()) (160 / 32) "80% of 200 images for training, batch 32"
    Expect.stringContains stderr "augmentation mae" "MAE's augmentation by default"
    let ckpt = Path.Combine(out, "last.ckpt")
    let code, stdout, stderr =
        run [ "probe"; "--checkpoint"; ckpt; "--data"; images; "--probe-epochs"; "2"; "--threads"; "1"; "--json" ]
    expectExit 0 (code, stdout, stderr) "probe on an image folder"
    Expect.equal ((lastJson stdout).["test_images"].GetValue<int>()) 40 "the 20% held out"
    let png = dir.File "recon.png"
    let code, stdout, stderr = run [ "reconstruct"; "--checkpoint"; ckpt; "--data"; images; "--out"; png; "--count"; "4" ]
    expectExit 0 (code, stdout, stderr) "reconstruct from an image folder"
    Expect.isTrue (File.Exists png) "the PNG is written"
    // ImageNet's layout, with a file that is not an image in the training split
    let laidOut = dir.File "laid-out"
    pngFolder (Path.Combine(laidOut, "train")) 64
    pngFolder (Path.Combine(laidOut, "val")) 16
    File.WriteAllText(Path.Combine(laidOut, "train", "3", "broken.png"), "not a png")
    let code, stdout, stderr =
        run [ "pretrain"; "--data"; laidOut; "--epochs"; "1"; "--batch-size"; "32"; "--out"; dir.File "run2"; "--threads"; "1" ]
    expectExit 1 (code, stdout, stderr) "a corrupt image stops the run"
    Expect.stringContains stderr "broken.png" "the message names the file"

let private videoPipeline () =
    use dir = new TempDir()
    // Moving-MNIST from the fixture's digits (IDX files)
    let out = dir.File "video"
    let code, stdout, stderr =
        run [ "pretrain"; "--modality"; "video"; "--data"; fixture (); "--train-limit"; "128"; "--epochs"; "1"; "--batch-size"; "32"
              "--out"; out; "--threads"; "1"; "--json" ]
    expectExit 0 (code, stdout, stderr) "pretrain --modality video"
    Expect.equal ((lastJson stdout).["steps"].GetValue<int>()) 4 "128 clips, batch 32"
    Expect.stringContains stderr "tube masking 0.9" "VideoMAE's masking by default"
    Expect.isTrue (File.Exists(Path.Combine(out, "loss.png"))) "the loss curve"
    let ckpt = Path.Combine(out, "last.ckpt")
    let code, stdout, stderr =
        run [ "probe"; "--checkpoint"; ckpt; "--data"; fixture (); "--train-limit"; "128"; "--test-limit"; "64"; "--probe-epochs"; "2"
              "--threads"; "1"; "--json" ]
    expectExit 0 (code, stdout, stderr) "probe of a video model"
    let j = lastJson stdout
    Expect.equal (j.["test_images"].GetValue<int>()) 64 "64 test clips"
    for key in [ "probe_pretrained"; "probe_random_init"; "probe_raw_pixels" ] do
        Expect.isTrue (j.ContainsKey key) key
    let png = dir.File "strip.png"
    let code, stdout, stderr = run [ "reconstruct"; "--checkpoint"; ckpt; "--data"; fixture (); "--out"; png; "--count"; "2" ]
    expectExit 0 (code, stdout, stderr) "reconstruct a video model"
    let info = StbImageSharp.ImageInfo.FromStream(File.OpenRead png)
    Expect.equal (info.Value.Width, info.Value.Height) (2 + 8 * (48 * 3 + 2), 2 + 6 * (48 * 3 + 2)) "8 frames across, 3 rows per clip for 2 clips"
    let code, stdout, _ = run [ "info"; "--checkpoint"; ckpt; "--json" ]
    expectExit 0 (code, stdout, "") "info"
    Expect.equal ((lastJson stdout).["modality"].GetValue<string>()) "video" "modality"
    // VideoMAE's layout out and back in
    let pth = dir.File "videomae.pth"
    let code, stdout, stderr = run [ "export"; "--checkpoint"; ckpt; "--to"; pth ]
    expectExit 0 (code, stdout, stderr) "export a video model"
    Expect.stringContains (stdout + stderr) "VideoMAE's names" "in VideoMAE's names"
    let code, stdout, stderr = run [ "import"; pth; "--modality"; "video"; "--preset"; "tiny"; "--out"; dir.File "back.ckpt"; "--json" ]
    expectExit 0 (code, stdout, stderr) "import VideoMAE's layout"
    let code, stdout, stderr = run [ "import"; pth; "--modality"; "video"; "--out"; dir.File "back2.ckpt" ]
    expectExit 2 (code, stdout, stderr) "a video import needs --preset"
    Expect.stringContains stderr "--preset" "names the option"
    // a folder of video files in class folders, decoded by ffmpeg
    let clips = dir.File "clips"
    videoFolder clips
    let out2 = dir.File "video-files"
    let code, stdout, stderr =
        run [ "pretrain"; "--modality"; "video"; "--data"; clips; "--epochs"; "1"; "--batch-size"; "2"; "--out"; out2; "--threads"; "1"; "--json" ]
    expectExit 0 (code, stdout, stderr) "pretrain on video files"
    Expect.stringContains stderr "video folder" "reads the folder as video files"
    let ckpt2 = Path.Combine(out2, "last.ckpt")
    let code, stdout, stderr = run [ "probe"; "--checkpoint"; ckpt2; "--data"; clips; "--probe-epochs"; "2"; "--threads"; "1"; "--json" ]
    expectExit 0 (code, stdout, stderr) "probe on video files"
    Expect.equal ((lastJson stdout).["classes"].GetValue<int>()) 2 "two classes"
    let code, stdout, stderr = run [ "reconstruct"; "--checkpoint"; ckpt2; "--data"; clips; "--out"; dir.File "files.png"; "--count"; "1" ]
    expectExit 0 (code, stdout, stderr) "reconstruct from video files"
    // a file ffmpeg cannot decode stops the run, naming it; the checkpoint of the good run is untouched
    File.WriteAllBytes(Path.Combine(clips, "bars", "broken.mp4"), Array.init 2000 byte)
    let before = File.GetLastWriteTimeUtc ckpt2
    let code, stdout, stderr =
        run [ "pretrain"; "--modality"; "video"; "--data"; clips; "--epochs"; "1"; "--batch-size"; "1"; "--out"; out2; "--threads"; "1" ]
    expectExit 1 (code, stdout, stderr) "an undecodable video stops the run"
    Expect.stringContains stderr "broken.mp4" "the message names the file"
    Expect.equal (File.GetLastWriteTimeUtc ckpt2) before "the earlier checkpoint is kept"
    // a model whose frames are not a multiple of the tubelet cannot be asked for; Moving-MNIST needs grey square frames
    let code, stdout, stderr = run [ "pretrain"; "--modality"; "video"; "--preset"; "base"; "--data"; fixture (); "--out"; dir.File "x" ]
    expectExit 2 (code, stdout, stderr) "a colour preset on Moving-MNIST"
    Expect.stringContains stderr "grey frames" "says why"

let private seriesPipeline () =
    use dir = new TempDir()
    let csv = dir.File "sines.csv"
    SeriesTests.sinusoidCsv csv 500
    let common = [ "--data"; csv; "--time-column"; "t"; "--group-column"; "site"; "--label-column"; "state" ]
    let out = dir.File "series"
    let code, stdout, stderr =
        run ([ "pretrain"; "--modality"; "timeseries"; "--window"; "32"; "--stride"; "2"; "--epochs"; "2"; "--batch-size"; "32"
               "--out"; out; "--threads"; "1"; "--json" ] @ common)
    expectExit 0 (code, stdout, stderr) "pretrain --modality timeseries"
    Expect.stringContains stderr "columns slow,fast,mixed" "the numeric columns by default"
    Expect.stringContains stderr "channel-independent" "the tiny preset's tokenisation"
    let ckpt = Path.Combine(out, "last.ckpt")
    let code, stdout, stderr = run ([ "probe"; "--checkpoint"; ckpt; "--stride"; "2"; "--probe-epochs"; "2"; "--threads"; "1"; "--json" ] @ common)
    expectExit 0 (code, stdout, stderr) "probe of a series model"
    let j = lastJson stdout
    Expect.equal (j.["classes"].GetValue<int>()) 2 "up / down"
    // the checkpoint recorded its data: the same probe with no data options at all
    let code, stdout2, stderr = run [ "probe"; "--checkpoint"; ckpt; "--probe-epochs"; "2"; "--threads"; "1"; "--json" ]
    expectExit 0 (code, stdout2, stderr) "probe reading the data the checkpoint recorded"
    Expect.equal ((lastJson stdout2).["test_images"].GetValue<int>()) (j.["test_images"].GetValue<int>()) "the same test windows"
    Expect.isTrue (j.ContainsKey "balanced_pretrained") "balanced accuracy"
    let code, stdout, stderr = run ([ "forecast"; "--checkpoint"; ckpt; "--horizon"; "4"; "--forecast-epochs"; "2"; "--threads"; "1"; "--json" ] @ common)
    expectExit 0 (code, stdout, stderr) "forecast"
    let j = lastJson stdout
    for key in [ "pretrained"; "random_init"; "linear"; "naive" ] do
        Expect.isTrue (j.[key].["mse"].GetValue<float>() >= 0.0) (key + " MSE")
    let png = dir.File "series.png"
    let code, stdout, stderr = run ([ "reconstruct"; "--checkpoint"; ckpt; "--out"; png; "--count"; "2" ] @ common)
    expectExit 0 (code, stdout, stderr) "reconstruct a series"
    Expect.isTrue (File.Exists png) "the plot"
    // channel-mixed, overlapping segments, L1
    let code, stdout, stderr =
        run ([ "pretrain"; "--modality"; "timeseries"; "--channel-mode"; "mixed"; "--segment"; "8"; "--segment-stride"; "4"; "--series-loss"; "l1"
               "--epochs"; "1"; "--batch-size"; "32"; "--out"; dir.File "mixed"; "--threads"; "1" ] @ common)
    expectExit 0 (code, stdout, stderr) "channel-mixed pretraining"
    Expect.stringContains (stdout + stderr) "segments of 8 every 4, channel-mixed" "the options reach the model"
    // bad input: a non-numeric cell, a missing column, a window longer than a split, per-channel masking when mixed
    File.WriteAllText(dir.File "bad.csv", "t,x,y\n0,1,2\n1,2,oops\n2,3,4\n")
    let code, stdout, stderr = run [ "pretrain"; "--modality"; "timeseries"; "--data"; dir.File "bad.csv"; "--out"; dir.File "bad" ]
    expectExit 1 (code, stdout, stderr) "a non-numeric cell"
    Expect.stringContains stderr "row 2 (line 3), column \"y\"" "names the row and column"
    Expect.isFalse (Directory.Exists(dir.File "bad") && File.Exists(Path.Combine(dir.File "bad", "last.ckpt"))) "nothing written"
    let code, stdout, stderr = run ([ "pretrain"; "--modality"; "timeseries"; "--columns"; "slow,nope"; "--out"; dir.File "bad2" ] @ common)
    expectExit 1 (code, stdout, stderr) "a missing column"
    Expect.stringContains stderr "no value column \"nope\"" "names the column"
    let code, stdout, stderr = run ([ "pretrain"; "--modality"; "timeseries"; "--window"; "400"; "--out"; dir.File "bad3" ] @ common)
    expectExit 2 (code, stdout, stderr) "a window longer than a split"
    Expect.stringContains stderr "--window 400" "names the option"
    let code, stdout, stderr =
        run ([ "pretrain"; "--modality"; "timeseries"; "--channel-mode"; "mixed"; "--masking"; "random-per-channel"; "--out"; dir.File "bad4" ] @ common)
    expectExit 2 (code, stdout, stderr) "per-channel masking of a channel-mixed model"
    Expect.stringContains stderr "channel-independent" "says what it needs"
    // --masking overrides the preset's before the configuration is checked
    let code, stdout, stderr =
        run ([ "pretrain"; "--modality"; "timeseries"; "--preset"; "patchtst"; "--channel-mode"; "mixed"; "--masking"; "random"; "--window"; "48"
               "--epochs"; "1"; "--batch-size"; "32"; "--out"; dir.File "pt"; "--threads"; "1" ] @ common)
    expectExit 0 (code, stdout, stderr) "patchtst, mixed channels, random masking"
    // a preset whose segments leave too few tokens for its ratio: exit 2 before training, naming the window
    let code, stdout, stderr = run ([ "pretrain"; "--modality"; "timeseries"; "--preset"; "tsformer"; "--out"; dir.File "ts" ] @ common)
    expectExit 2 (code, stdout, stderr) "tsformer with windows of 32"
    Expect.stringContains stderr "MaskRatio" "names the ratio"
    Expect.stringContains stderr "--window 32" "and the window"
    // tube masking on a series, and a probe without labels
    let code, stdout, stderr = run ([ "pretrain"; "--modality"; "timeseries"; "--masking"; "tube"; "--out"; dir.File "tube" ] @ common)
    expectExit 2 (code, stdout, stderr) "tube masking on a series"
    Expect.stringContains stderr "tube masking needs" "says why"
    let code, stdout, stderr = run [ "probe"; "--checkpoint"; ckpt; "--label-column"; ""; "--threads"; "1" ]
    expectExit 2 (code, stdout, stderr) "a probe without a label column"
    Expect.stringContains stderr "--label-column" "says what is missing"
    let code, stdout, stderr = run [ "probe"; "--checkpoint"; ckpt; "--data"; dir.File "nosuch.csv" ]
    expectExit 1 (code, stdout, stderr) "a CSV file that does not exist"

let private interruptAndResume () =
    use dir = new TempDir()
    let args (out: string) =
        [ "pretrain"; "--data"; fixture (); "--epochs"; "3"; "--batch-size"; "64"; "--train-limit"; "512"; "--seed"; "7"
          "--checkpoint-every"; "0"; "--threads"; "1"; "--out"; out; "--json" ]
    let interrupted, straight = dir.File "interrupted", dir.File "straight"
    let total = 512 / 64 * 3
    withSigintDefault (fun () ->
        use child = new Child(args interrupted, [])
        child.WaitForLine("pretrain step ", TimeSpan.FromMinutes 2.0) |> ignore
        Expect.equal (sysKill (child.Pid, SIGINT)) 0 "SIGINT sent"
        let code, stdout, stderr = child.Finish(TimeSpan.FromMinutes 2.0)
        expectExit 130 (code, stdout, stderr) "Ctrl-C ends the run with 130"
        let result = lastJson stdout
        Expect.isTrue (result.["cancelled"].GetValue<bool>()) "the JSON says cancelled"
        Expect.isLessThan (result.["steps"].GetValue<int>()) total "stopped before the end")
    let ckpt = Path.Combine(interrupted, "last.ckpt")
    Expect.isTrue (File.Exists ckpt) "Ctrl-C saved a checkpoint (none is written periodically with --checkpoint-every 0)"
    let stoppedAt = (Checkpoint.readMeta ckpt).Step
    let code, stdout, stderr = run (args interrupted @ [ "--resume" ])
    expectExit 0 (code, stdout, stderr) "resumed run"
    Expect.equal ((lastJson stdout).["steps"].GetValue<int>()) total (sprintf "the resumed run (from step %d) finishes" stoppedAt)
    let code, stdout, stderr = run (args straight)
    expectExit 0 (code, stdout, stderr) "uninterrupted run"
    let a, _ = Checkpoint.loadModel (Path.Combine(interrupted, "last.ckpt")) torch.CPU
    let b, _ = Checkpoint.loadModel (Path.Combine(straight, "last.ckpt")) torch.CPU
    use a = a
    use b = b
    let pa, pb = a.named_parameters () |> Array.ofSeq, b.named_parameters () |> Array.ofSeq
    Expect.equal pa.Length pb.Length "same parameters"
    for struct (name, p), struct (_, q) in Array.zip pa pb do
        Expect.isTrue (same p q) (sprintf "%s: interrupted + resumed is bit-identical to the straight run" name)

/// `mae import` of the golden reference files, `mae info` on the result, `mae export` to both
/// formats and back; the errors name the file or option.
let private importExport () =
    use dir = new TempDir()
    let golden = Path.Combine(fixturePath "golden", "grey28-p7-raw")
    let ckpt = dir.File "imported.ckpt"
    let code, stdout, stderr =
        run [ "import"; Path.Combine(golden, "reference.pth"); "--out"; ckpt; "--heads"; "4"; "--decoder-heads"; "2"; "--norm-pix-loss"; "false"; "--json" ]
    expectExit 0 (code, stdout, stderr) "import of reference.pth"
    let result = lastJson stdout
    Expect.isTrue (result.["decoder_from_file"].GetValue<bool>()) "the decoder came from the file"
    Expect.equal (result.["config"].["input"].["imageHeight"].GetValue<int>()) 28 "image size read from the shapes"
    let code, stdout, stderr = run [ "info"; "--checkpoint"; ckpt; "--json" ]
    expectExit 0 (code, stdout, stderr) "info on the imported checkpoint"
    Expect.stringContains ((lastJson stdout).["training"].["importedFrom"].GetValue<string>()) "reference.pth" "info shows where it came from"
    let golden28 = GoldenTests.readCase "grey28-p7-raw"
    let model, _ = Checkpoint.loadModel ckpt torch.CPU
    use model = model
    for KeyValue (n, w) in golden28.Tensors.["weights"] do
        Expect.isTrue (same (param model n) w) (sprintf "%s: the reference's value" n)
    for target in [ "out.pth"; "out.safetensors" ] do
        let code, stdout, stderr = run [ "export"; "--checkpoint"; ckpt; "--to"; dir.File target; "--json" ]
        expectExit 0 (code, stdout, stderr) ("export to " + target)
        let again = dir.File(target + ".ckpt")
        let code, stdout, stderr = run [ "import"; dir.File target; "--out"; again; "--heads"; "4"; "--decoder-heads"; "2"; "--norm-pix-loss"; "false" ]
        expectExit 0 (code, stdout, stderr) ("import of " + target)
        let back, _ = Checkpoint.loadModel again torch.CPU
        use back = back
        for struct (n, p) in model.named_parameters () do
            Expect.isTrue (same p (param back n)) (sprintf "%s: %s round trip" target n)
    let code, stdout, stderr = run [ "import"; Path.Combine(golden, "reference-encoder.pth"); "--out"; dir.File "enc.ckpt"; "--heads"; "4"; "--json" ]
    expectExit 0 (code, stdout, stderr) "import of an encoder-only file"
    Expect.isFalse ((lastJson stdout).["decoder_from_file"].GetValue<bool>()) "the decoder is not in the file"
    let code, stdout, stderr = run [ "import"; Path.Combine(golden, "reference.pth"); "--out"; dir.File "b.ckpt"; "--preset"; "base" ]
    expectExit 2 (code, stdout, stderr) "weights that do not fit --preset"
    Expect.stringContains stderr "--preset" "names the option"
    Expect.stringContains stderr "cls_token: shape [1, 1, 32] in the source, [1, 1, 768] in the target" "names the tensor with both shapes"
    Expect.isFalse (File.Exists(dir.File "b.ckpt")) "nothing written"
    let code, stdout, stderr = run [ "import"; dir.File "none.pth"; "--out"; dir.File "c.ckpt" ]
    expectExit 1 (code, stdout, stderr) "a missing file"
    Expect.stringContains stderr "none.pth" "names the file"
    let code, stdout, stderr = run [ "export"; "--checkpoint"; ckpt; "--to"; dir.File "m.onnx" ]
    expectExit 2 (code, stdout, stderr) "an unknown format"
    Expect.stringContains stderr "--to" "names the option"
    // the imported model (28 x 28 grey) fine-tuned on few labels of the MNIST fixture
    let few = [ "finetune"; "--checkpoint"; ckpt; "--data"; fixture (); "--epochs"; "2"; "--probe-epochs"; "2"; "--train-limit"; "300"; "--test-limit"; "64"; "--threads"; "1"; "--json" ]
    let code, stdout, stderr = run (few @ [ "--labels-per-class"; "3" ])
    expectExit 0 (code, stdout, stderr) "finetune"
    let r = lastJson stdout
    Expect.equal (r.["train_samples"].GetValue<int>()) 30 "3 labels x 10 classes"
    for key in [ "finetune_pretrained"; "finetune_scratch"; "linear_probe" ] do
        let acc = r.[key].GetValue<float>()
        Expect.isTrue (acc >= 0.0 && acc <= 1.0) (sprintf "%s = %f" key acc)
    let code, stdout, stderr = run (few @ [ "--labels-per-class"; "1000" ])
    expectExit 2 (code, stdout, stderr) "more labels per class than the smallest class has"
    Expect.stringContains stderr "--labels-per-class was 1000" "names the option and its value"

/// OpenMP's wait policy reaches libtorch's threads: threads that sleep at barriers (GOMP_SPINCOUNT
/// 0) unless the user chose a policy (OMP_DISPLAY_ENV=VERBOSE makes libgomp print what it read when
/// it loads; its default spins 300,000 times first).
let private waitPolicy () =
    let ckpt = Path.Combine(fixturePath "checkpoints", "image-v1.ckpt")
    let displayed (env: (string * string) list) (name: string) =
        let code, stdout, stderr = runWith (("OMP_DISPLAY_ENV", "VERBOSE") :: env) [ "info"; "--checkpoint"; ckpt; "--json" ]
        expectExit 0 (code, stdout, stderr) "info"
        match (stdout + stderr).Split('\n') |> Array.tryFind (fun l -> l.Contains(name + " =")) with
        | Some l -> l.Trim()
        | None -> failtestf "libgomp printed no %s (stderr: %s)" name stderr
    Expect.equal (displayed [ "OMP_WAIT_POLICY", null ] "GOMP_SPINCOUNT") "GOMP_SPINCOUNT = '0'" "passive by default: no spinning"
    Expect.equal (displayed [ "OMP_WAIT_POLICY", "" ] "GOMP_SPINCOUNT") "GOMP_SPINCOUNT = '0'" "an empty value counts as unset"
    Expect.equal (displayed [ "OMP_WAIT_POLICY", "ACTIVE" ] "OMP_WAIT_POLICY") "OMP_WAIT_POLICY = 'ACTIVE'" "the user's choice is kept"
    Expect.notEqual (displayed [ "OMP_WAIT_POLICY", "ACTIVE" ] "GOMP_SPINCOUNT") "GOMP_SPINCOUNT = '0'" "and spins"

let tests =
    testSequenced
    <| testList "cli" [
        test "pretrain, probe, reconstruct and info run on the fixture and print JSON" { pipeline () }
        test "bad arguments exit 2 naming the option; a missing checkpoint exits 1" { badArguments () }
        test "libtorch's OpenMP threads wait passively unless OMP_WAIT_POLICY says otherwise" {
            if not (OperatingSystem.IsLinux()) then skiptest "libgomp and setenv"
            waitPolicy ()
        }
        test "pretrain, probe and reconstruct read a folder of PNG files in class folders" { imageFolderPipeline () }
        test "video: pretrain, probe, reconstruct and info on Moving-MNIST and on a folder of video files; bad files named" { videoPipeline () }
        test "time series: pretrain, probe, forecast and reconstruct on a CSV; tokenisation options; bad cells and columns named" { seriesPipeline () }
        test "import reads the reference's .pth and encoder-only .pth; export writes .pth and .safetensors that import back identically; finetune on few labels" { importExport () }
        test "resuming with other options exits 2 naming each option, its value and the checkpoint's" { resumeWithOtherOptions () }
        test "Ctrl-C saves a checkpoint, and resuming ends where an uninterrupted run does" {
            if OperatingSystem.IsWindows() then skiptest "SIGINT is sent with libc kill"
            interruptAndResume ()
        }
    ]
