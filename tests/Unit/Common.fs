/// Helpers shared by the unit tests: small configurations, synthetic data, temporary folders and
/// checks on exceptions and tensors.
module Mae.Tests.Unit.Common

open System
open System.IO
open Expecto
open TorchSharp
open Mae

/// A model that runs in milliseconds: 28x28 grey, patch 7 (4x4 grid), width 32, 2 + 1 blocks.
let small =
    { MaeConfig.tiny with
        EmbedDim = 32
        Depth = 2
        Heads = 2
        DecoderEmbedDim = 32
        DecoderDepth = 1
        DecoderHeads = 2 }

let gen (seed: int) = new Generator(uint64 seed, torch.CPU)

/// Hidden tokens per sample for L tokens at ratio r: L - int(L(1-r)), the kept count in double
/// precision as MAE's random_masking computes it.
let hiddenCount (l: int) (r: float) = l - int (float l * (1.0 - r))

let shape (t: Tensor) = t.shape |> List.ofArray

let names (m: torch.nn.Module) =
    m.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq

let param (m: torch.nn.Module) (name: string) =
    m.named_parameters() |> Seq.pick (fun struct (n, p) -> if n = name then Some p else None)

/// Copies of every parameter, by name (detached, so later training does not change them).
let snapshot (m: torch.nn.Module) =
    m.named_parameters() |> Seq.map (fun struct (n, p) -> n, p.detach().clone()) |> Map.ofSeq

/// Same shape and bit-identical values.
let same (a: Tensor) (b: Tensor) : bool =
    a.shape = b.shape && a.dtype = b.dtype && (use eq = a.eq(b) in eq.all().item<bool>())

let allFinite (t: Tensor) = t.isfinite().all().item<bool>()

/// A fresh temporary folder, deleted when disposed.
type TempDir() =
    let path = Path.Combine(Path.GetTempPath(), "mae-unit-" + Guid.NewGuid().ToString("N"))
    do Directory.CreateDirectory path |> ignore
    member _.Path = path
    member _.File(name: string) = Path.Combine(path, name)
    interface IDisposable with
        member _.Dispose() =
            if Directory.Exists path then Directory.Delete(path, true)

/// Runs `f`, expects an ArgumentException (ArgumentNullException included) whose ParamName or
/// message names `argument` and whose message contains `expected`; returns it.
let expectArg (argument: string) (expected: string) (f: unit -> 'a) : ArgumentException =
    let ex =
        try
            f () |> ignore
            None
        with :? ArgumentException as e -> Some e
    match ex with
    | None -> failtestf "expected an ArgumentException about %s, nothing was raised" argument
    | Some e ->
        let names = (not (isNull e.ParamName) && e.ParamName.Contains argument) || e.Message.Contains argument
        Expect.isTrue names (sprintf "the exception names %s (ParamName %s, message %s)" argument e.ParamName e.Message)
        Expect.stringContains e.Message expected "the message states the expected value"
        e

/// Runs `f` and returns the exception of type 'E it raised (fails the test otherwise).
let expectExn<'E when 'E :> exn> (what: string) (f: unit -> unit) : 'E =
    let result =
        try
            f ()
            Choice1Of2()
        with e -> Choice2Of2 e
    match result with
    | Choice2Of2 (:? 'E as e) -> e
    | Choice2Of2 e -> failtestf "%s: expected %s, got %s: %s" what typeof<'E>.Name (e.GetType().Name) e.Message
    | Choice1Of2 () -> failtestf "%s: expected %s, nothing was raised" what typeof<'E>.Name

/// A learnable synthetic image set [n, 1, 28, 28]: each image is one of `patterns` smooth random
/// patterns (sums of low-frequency waves) with a random amplitude and a little noise, seeded.
let smoothPatterns (seed: int) (n: int) (patterns: int) =
    use g = gen seed
    let coords = torch.linspace(0.0, 1.0, 28L)
    let ys, xs = coords.reshape(28L, 1L), coords.reshape(1L, 28L)
    let bank =
        [| for _ in 1 .. patterns ->
               let f: float32[] = torch.rand([| 4L |], generator = g).data<float32>().ToArray()
               let ph: float32[] = torch.rand([| 2L |], generator = g).data<float32>().ToArray()
               let v (i: int) = 1.0 + 6.0 * float f.[i]
               let q (i: int) = 6.28 * float ph.[i]
               (xs * v 0 + ys * v 1 + q 0).sin() + (xs * v 2 - ys * v 3 + q 1).cos() |]
        |> fun (ps: Tensor[]) -> torch.stack(ps, 0L) // [K, 28, 28]
    let which = torch.randint(0L, int64 patterns, [| int64 n |], generator = g)
    let amp = torch.rand([| int64 n; 1L; 1L |], generator = g) * 0.5 + 0.75
    let noise = torch.randn([| int64 n; 28L; 28L |], generator = g) * 0.05
    (bank.index_select(0L, which) * amp + noise).unsqueeze(1L).contiguous()

/// The repository's root (the folder holding Mae.sln), found upwards from the test binary.
let repoRoot =
    lazy (
        let rec up (d: DirectoryInfo) =
            if isNull d then failwith "Mae.sln not found above the test binary"
            elif File.Exists(Path.Combine(d.FullName, "Mae.sln")) then d.FullName
            else up d.Parent
        up (DirectoryInfo AppContext.BaseDirectory))

/// A committed fixture under tests/fixtures.
let fixturePath (name: string) = Path.Combine(repoRoot.Value, "tests", "fixtures", name)

/// Makes short clips with ffmpeg's test sources (no data from outside): `spec` lists
/// (relative path, lavfi source, extra output arguments). Fails the test when ffmpeg is missing
/// (./build.sh setup installs it).
let makeClips (root: string) (spec: (string * string * string) list) =
    for rel, source, extra in spec do
        let path = Path.Combine(root, rel)
        Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
        let psi = Diagnostics.ProcessStartInfo("ffmpeg", sprintf "-v error -y -f lavfi -i %s %s %s" source extra path)
        psi.RedirectStandardError <- true
        use p = Diagnostics.Process.Start psi
        let err = p.StandardError.ReadToEnd()
        p.WaitForExit()
        if p.ExitCode <> 0 then failwithf "ffmpeg could not make %s: %s" path err

/// Two classes of short clips: moving test patterns and colour bars, in four containers.
let videoFolder (root: string) =
    makeClips root
        [ "moving/a.mp4", "testsrc=size=64x48:rate=10", "-t 1.6 -pix_fmt yuv420p"
          "moving/b.webm", "testsrc=size=80x60:rate=10", "-t 1.6"
          "moving/c.avi", "testsrc=size=64x48:rate=10", "-t 1.6"
          "moving/d.mkv", "testsrc=size=64x48:rate=10", "-t 1.6 -c:v ffv1"
          "bars/a.mp4", "smptebars=size=64x48:rate=10", "-t 1.6 -pix_fmt yuv420p"
          "bars/b.webm", "smptehdbars=size=80x60:rate=10", "-t 1.6"
          "bars/c.avi", "smptebars=size=64x48:rate=10", "-t 1.6"
          "bars/d.mkv", "rgbtestsrc=size=64x48:rate=10", "-t 1.6 -c:v ffv1" ]
