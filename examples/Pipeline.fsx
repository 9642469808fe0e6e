// A whole pipeline in a script: data -> masking -> model -> pretrain -> probe -> PNG.
// Uses the Mae.Core package from the local folder feed that `./build.sh test` (or
// `./build.sh pack`) writes to artifacts/feed; with a published package, drop the #i line.
// Run: dotnet fsi examples/Pipeline.fsx [IDX-FOLDER] [EPOCHS]
#load "../artifacts/LocalFeed.fsx"
#r "nuget: Mae.Core, 0.1.0-local"
#r "nuget: TorchSharp-cpu, 0.107.0"

open System
open System.IO
open System.Runtime.InteropServices
open System.Threading

// In F# Interactive, TorchSharp looks for libtorch by name first, so a system libtorch (Debian's
// libtorch-dev, which python3-torch brings) would be found before the one its package ships and
// the load fails. Loading the packaged libraries by path first makes the name resolve to them.
if OperatingSystem.IsLinux() then
    let packages =
        match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with
        | null | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
        | p -> p
    let native = Path.Combine(packages, "libtorch-cpu-linux-x64", "2.10.0", "runtimes", "linux-x64", "native")
    for lib in [ "libc10.so"; "libtorch_cpu.so"; "libtorch.so" ] do
        let path = Path.Combine(native, lib)
        if File.Exists path then NativeLibrary.Load path |> ignore

open TorchSharp
open Mae
open Mae.Data

let args = fsi.CommandLineArgs |> Array.skip 1
let folder = if args.Length > 0 then args.[0] else Mnist.ensure (printfn "%s")
let epochs = if args.Length > 1 then int args.[1] else 2
let train, test = Idx.loadFolder folder 0 0

// the masking on its own: 75% of a 4x4 grid of tokens hidden per sample
let tokens = Patchify.patchify2d (7, 7) (train.Images.narrow(0L, 0L, 2L)) // [2, 16, 49]
let masking = Masking.random (new Generator(0UL, torch.CPU)) 0.75 tokens
printfn "tokens %A, visible %A, hidden per sample %A" tokens.shape masking.Visible.shape (masking.Mask.sum(1L).data<float32>().ToArray())

// a small model, pretrained, then probed; its reconstructions written to a PNG
let config = { MaeConfig.tiny with EmbedDim = 64; Depth = 2; Heads = 4; DecoderEmbedDim = 64; DecoderHeads = 4 }
let model = MaskedAutoencoder.Create(config, 0L)
let options = { PretrainOptions.defaults with Epochs = epochs; BatchSize = min 256 train.Count; BaseLr = 1e-3 }
let result = Pretrain.run model train.Images options null ignore CancellationToken.None
printfn "pretrained %d steps, loss %.4f -> %.4f" result.Steps result.EpochLosses.[0] result.FinalLoss
let features (x: Tensor) = model.Features(x, false)
let probe = Probe.linearOn Probe.defaultLinearOptions 10 features torch.CPU 512 train test
Visualize.reconstruction "pipeline-reconstruction.png" model (new Generator(1UL, torch.CPU))
    Idx.toUnit (test.Images.narrow(0L, 0L, 6L))
printfn "linear-probe accuracy %.4f; pipeline-reconstruction.png written" probe.TestAccuracy
