/// Weights in and out of the PyTorch world (Mae.PyTorch): configurations read from the shapes of
/// the reference's files, export -> import round trips through both formats, and loads that name
/// every tensor that does not fit. The golden values of imported files are in GoldenTests.
module Mae.Tests.Unit.PyTorchTests

open System
open System.IO
open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common
open Mae.Tests.Unit.GoldenTests

let private file (case: string) (name: string) = Path.Combine(goldenFolder.Value, case, name)

/// The golden case's configuration imported from its reference.pth (heads given: a width of 32 has
/// no convention for them).
let private imported (case: string) (name: string) =
    let cfg = configOf (readCase case).Config AttentionKernel.Sdpa
    PyTorch.importModel (file case name) (Some cfg) 0 0 None

let tests =
    testList "pytorch weights" [
        test "inferConfig reads image size, patch, channels, widths, depths, MLP ratio and cls token from the shapes of each file" {
            for case in fileCaseNames do
                let expected = configOf (readCase case).Config AttentionKernel.Sdpa
                for name in [ "reference.pth"; "vitmae.safetensors" ] do
                    let sd = PyTorch.readReference (file case name)
                    let c = PyTorch.inferConfig sd 4 2
                    let what = sprintf "%s/%s" case name
                    Expect.equal c.Input expected.Input (what + ": image input")
                    Expect.equal (c.EmbedDim, c.Depth, c.Heads) (expected.EmbedDim, expected.Depth, expected.Heads) (what + ": encoder")
                    Expect.equal (c.DecoderEmbedDim, c.DecoderDepth, c.DecoderHeads) (expected.DecoderEmbedDim, expected.DecoderDepth, expected.DecoderHeads) (what + ": decoder")
                    Expect.equal c.MlpRatio expected.MlpRatio (what + ": MLP ratio")
                    Expect.isTrue c.ClsToken (what + ": cls token")
                let enc = PyTorch.inferConfig (PyTorch.readReference (file case "reference-encoder.pth")) 4 0
                Expect.equal (enc.DecoderEmbedDim, enc.DecoderDepth, enc.DecoderHeads) (512, 8, 16) "encoder-only: the reference's decoder"
        }
        test "heads follow the preset of the same shape (ViT-B: 12, decoder 16) or 64 / 32 channels per head" {
            use _ = torch.NewDisposeScope()
            use b = MaskedAutoencoder.Create(MaeConfig.withImage (32, 32) (16, 16) 3 MaeConfig.``base``, 0L)
            let c = PyTorch.inferConfig (Weights.named b) 0 0
            Expect.equal (c.Heads, c.DecoderHeads) (12, 16) "ViT-B/16's heads"
            Expect.equal c.Image.ImageSize (32, 32) "image size from pos_embed's 2 x 2 grid"
            use s = MaskedAutoencoder.Create({ MaeConfig.tiny with Heads = 2; DecoderEmbedDim = 64; DecoderHeads = 1 }, 0L)
            let c = PyTorch.inferConfig (Weights.named s) 0 0
            Expect.equal (c.Heads, c.DecoderHeads) (2, 2) "128 / 64 and 64 / 32 channels per head"
        }
        test "export -> import round trips bit for bit through .pth and .safetensors, full and encoder-only" {
            use _ = torch.NewDisposeScope()
            use dir = new TempDir()
            let model, _ = imported "rgb32-p8-normpix" "reference.pth"
            use model = model
            for target in [ "m.pth"; "m.safetensors" ] do
                PyTorch.export (dir.File target) model false
                let again, info = PyTorch.importModel (dir.File target) (Some model.Config) 0 0 None
                use again = again
                Expect.isTrue info.Decoder (target + ": the decoder is in the file")
                for struct (n, p) in model.named_parameters() do
                    Expect.isTrue (same p (param again n)) (sprintf "%s: %s identical" target n)
            PyTorch.export (dir.File "e.pth") model true
            let sd = PyTorch.read (dir.File "e.pth")
            Expect.equal (sd |> Array.map fst |> Set.ofArray) (Set.ofArray model.EncoderParameterNames) "encoder-only export: the encoder's tensors alone"
            let hf = PyTorch.read (dir.File "m.safetensors") |> Array.map fst
            Expect.contains hf "vit.encoder.layer.0.attention.attention.query.weight" "HuggingFace's names, qkv split"
            Expect.contains hf "decoder.decoder_layers.0.layernorm_before.bias" "HuggingFace's decoder names"
            Expect.isFalse (Directory.GetFiles dir.Path |> Array.exists (fun f -> f.Contains ".tmp")) "no temporary file left"
        }
        test "a load names every missing, extra and differently shaped tensor with both shapes, and copies nothing" {
            use _ = torch.NewDisposeScope()
            let cfg = configOf (readCase "rgb32-p8-normpix").Config AttentionKernel.Sdpa
            let sd = PyTorch.readReference (file "rgb32-p8-normpix" "reference.pth")
            use deeper = new MaskedAutoencoder({ cfg with Depth = 3 })
            let before = snapshot deeper
            let e = expectArg "weights" "blocks.2.attn.qkv.weight: missing in the source" (fun () -> PyTorch.loadInto deeper sd)
            Expect.stringContains e.Message "blocks.2.mlp.fc2.bias: missing in the source" "every missing tensor"
            for struct (n, p) in deeper.named_parameters() do
                Expect.isTrue (same p before.[n]) (sprintf "%s untouched" n)
            use wider = new MaskedAutoencoder({ cfg with EmbedDim = 64 })
            expectArg "weights" "cls_token: shape [1, 1, 32] in the source, [1, 1, 64] in the target" (fun () -> PyTorch.loadInto wider sd) |> ignore
            use shallower = new MaskedAutoencoder({ cfg with Depth = 1 })
            expectArg "weights" "blocks.1.norm1.weight: not in the target" (fun () -> PyTorch.loadInto shallower sd) |> ignore
            use same' = new MaskedAutoencoder(cfg)
            let partial = sd |> Array.filter (fun (n, _) -> n <> "decoder_pred.weight")
            expectArg "weights" "decoder_pred.weight: missing in the source" (fun () -> PyTorch.loadInto same' partial) |> ignore
            let renamed = sd |> Array.map (fun (n, t) -> (if n = "norm.weight" then "fc_norm.weight" else n), t)
            let e = expectArg "weights" "fc_norm.weight: not in the target" (fun () -> PyTorch.loadInto same' renamed)
            Expect.stringContains e.Message "norm.weight: missing in the source" "both sides of a renamed tensor"
        }
        test "a missing file, a file of neither format and an unknown extension are clear errors naming them" {
            use dir = new TempDir()
            expectExn<FileNotFoundException> "missing" (fun () -> PyTorch.read (dir.File "none.pth") |> ignore) |> ignore
            File.WriteAllText(dir.File "text.pth", "not a checkpoint")
            let e = expectExn<InvalidDataException> "text" (fun () -> PyTorch.read (dir.File "text.pth") |> ignore)
            Expect.stringContains e.Message (dir.File "text.pth") "names the file"
            use model = MaskedAutoencoder.Create(MaeConfig.tiny, 0L)
            expectArg "path" ".onnx" (fun () -> PyTorch.export (dir.File "m.onnx") model false) |> ignore
        }
    ]
