// A whole pipeline in a script: data -> masking -> model -> pretrain -> probe -> PNG.
// Uses the Mae.Core package from the local folder feed that `./build.sh test` (or
// `./build.sh pack`) writes to artifacts/feed; with a published package, drop the #i line.
// Run: dotnet fsi examples/Pipeline.fsx [IDX-FOLDER] [EPOCHS]
#load "../artifacts/LocalFeed.fsx"
#r "nuget: Mae.Core, 0.1.0-local"
#r "nuget: TorchSharp-cpu, 0.107.0"

open System.Threading
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
let model = MaskedAutoencoderViT.Create(config, 0L)
let options = { PretrainOptions.defaults with Epochs = epochs; BatchSize = min 256 train.Count; BaseLr = 1e-3 }
let result = Pretrain.run model train.Images options null ignore CancellationToken.None
printfn "pretrained %d steps, loss %.4f -> %.4f" result.Steps result.EpochLosses.[0] result.FinalLoss
let features (x: Tensor) = model.Features(x, false)
let probe =
    Probe.linear Probe.defaultLinearOptions 10 (Probe.extract features torch.CPU 512 train.Images) train.Labels
        (Probe.extract features torch.CPU 512 test.Images) test.Labels
Visualize.reconstruction "pipeline-reconstruction.png" model (new Generator(1UL, torch.CPU))
    (fun x -> x * Idx.mnistStd + Idx.mnistMean) (test.Images.narrow(0L, 0L, 6L))
printfn "linear-probe accuracy %.4f; pipeline-reconstruction.png written" probe.TestAccuracy
