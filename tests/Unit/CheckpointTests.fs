/// Checkpoints: resuming gives the same trajectory bit for bit, weights and configuration
/// round-trip, the encoder export holds no decoder, and files are written atomically.
module Mae.Tests.Unit.CheckpointTests

open System
open System.IO
open System.Text
open System.Text.Json.Nodes
open System.Threading
open System.IO.Compression
open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

let private options dir =
    { PretrainOptions.defaults with
        Epochs = 2
        BatchSize = 8
        BaseLr = 1.6e-2
        WarmupEpochs = 0.5
        ClipGrad = 1.0
        Seed = 3L
        CheckpointDirectory = dir }

/// Runs `total` iterations straight, and `k` then (in a new model from the same seed) resumed to
/// `total`; the final parameters must be bit-identical.
let private resumeMatches (accum: int) (k: int) (total: int) =
    use images = smoothPatterns 21 64 2
    use straightDir = new TempDir()
    use splitDir = new TempDir()
    let run (m: MaskedAutoencoder) dir stop resume =
        Pretrain.run m images { options dir with AccumulationSteps = accum; MaxIterations = stop } resume ignore CancellationToken.None
    use straight = MaskedAutoencoder.Create(small, 4L)
    let r = run straight straightDir.Path total null
    Expect.equal r.Iterations total "straight run length"
    use first = MaskedAutoencoder.Create(small, 4L)
    let r1 = run first splitDir.Path k null
    Expect.equal r1.CheckpointPath (Pretrain.checkpointFile splitDir.Path) "checkpoint written at the end"
    let meta = Checkpoint.readMeta r1.CheckpointPath
    Expect.equal (meta.Iteration, meta.Step, meta.Epoch) (k, k / accum, k / 8) "the checkpoint's position"
    Expect.equal meta.Config small "the checkpoint's configuration"
    let atK = snapshot first
    use resumed = MaskedAutoencoder.Create(small, 4L)
    let r2 = run resumed splitDir.Path total r1.CheckpointPath
    Expect.equal (r2.Iterations, r2.Steps) (total, total / accum) "the resumed run counts from the checkpoint"
    Expect.isFalse (same (param resumed "blocks.0.attn.qkv.weight") atK.["blocks.0.attn.qkv.weight"]) "the resumed run trained"
    for struct (name, p) in straight.named_parameters() do
        Expect.isTrue (same (param resumed name) p) (sprintf "%s is bit-identical to the straight run" name)

let tests =
    testList "checkpoints" [
        test "resuming from a checkpoint continues the same trajectory bit for bit" { resumeMatches 1 5 12 }
        test "resuming with gradient accumulation continues the same trajectory" { resumeMatches 2 6 14 }
        test "resuming refuses a checkpoint of another configuration" {
            use dir = new TempDir()
            use images = smoothPatterns 21 16 2
            use m = MaskedAutoencoder.Create(small, 4L)
            let r = Pretrain.run m images { options dir.Path with MaxIterations = 1 } null ignore CancellationToken.None
            use other = MaskedAutoencoder.Create({ small with DecoderDepth = 2 }, 4L)
            expectArg "resumeFrom" "the same configuration" (fun () ->
                Pretrain.run other images (options dir.Path) r.CheckpointPath ignore CancellationToken.None) |> ignore
        }
        test "resuming refuses other data-order or schedule options (seed, batch size)" {
            use dir = new TempDir()
            use images = smoothPatterns 21 16 2
            use m = MaskedAutoencoder.Create(small, 4L)
            let r = Pretrain.run m images { options dir.Path with MaxIterations = 1 } null ignore CancellationToken.None
            expectArg "options" "seed" (fun () ->
                Pretrain.run m images { options dir.Path with Seed = 99L } r.CheckpointPath ignore CancellationToken.None) |> ignore
            expectArg "options" "batchSize" (fun () ->
                Pretrain.run m images { options dir.Path with BatchSize = 4 } r.CheckpointPath ignore CancellationToken.None) |> ignore
        }
        test "save then loadModel round-trips weights, configuration and meta" {
            use dir = new TempDir()
            let cfg = { (MaeConfig.withImage (28, 42) (7, 14) 3 small) with
                            Masking = BlockWise 0.6
                            Attention = AttentionKernel.Sdpa; LearnedPosEmbed = true; NormPixLoss = false }
            use m = MaskedAutoencoder.Create(cfg, 8L)
            let extra = JsonObject()
            extra.["note"] <- JsonValue.Create "hello"
            let path = dir.File "m.ckpt"
            Checkpoint.save path m None None { Config = cfg; Iteration = 7; Step = 3; Epoch = 1; Extra = extra }
            torch.manual_seed 99L |> ignore
            let loaded, meta = Checkpoint.loadModel path null
            use loaded = loaded
            Expect.equal loaded.Config cfg "configuration"
            Expect.equal (meta.Iteration, meta.Step, meta.Epoch) (7, 3, 1) "position"
            Expect.equal (meta.Extra.["note"].GetValue<string>()) "hello" "extra"
            Expect.equal (names loaded) (names m) "same parameters"
            for struct (name, p) in m.named_parameters() do
                Expect.isTrue (same (param loaded name) p) (sprintf "%s round-trips" name)
            Expect.equal (ConfigJson.ofJson (ConfigJson.toJson MaeConfig.huge)) MaeConfig.huge "huge's JSON"
        }
        test "exportEncoder writes the encoder only" {
            use dir = new TempDir()
            use m = MaskedAutoencoder.Create(small, 8L)
            let path = dir.File "encoder.bin"
            Checkpoint.exportEncoder path m
            let text = Encoding.UTF8.GetString(File.ReadAllBytes path)
            Expect.isFalse (text.Contains "decoder_") "no decoder tensor in the file"
            Expect.isFalse (text.Contains "mask_token") "no mask token in the file"
            Expect.stringContains text "blocks.1.mlp.fc2.weight" "the encoder's tensors are there"
            use fresh = MaskedAutoencoder.Create(small, 9L)
            let before = snapshot fresh
            fresh.load(path, strict = false) |> ignore
            let encoder = set m.EncoderParameterNames
            Expect.contains encoder "pos_embed" "pos_embed is an encoder parameter"
            Expect.isFalse (encoder.Contains "mask_token") "mask_token is the decoder's"
            for struct (name, p) in fresh.named_parameters() do
                if encoder.Contains name then
                    Expect.isTrue (same p (param m name)) (sprintf "%s loaded from the export" name)
                else
                    Expect.isTrue (same p before.[name]) (sprintf "%s left as it was" name)
            // (randomly initialised decoder tensors: the two seeds give different values)
            for name in [ "mask_token"; "decoder_embed.weight"; "decoder_blocks.0.attn.qkv.weight"; "decoder_pred.weight" ] do
                Expect.isFalse (same (param fresh name) (param m name)) (sprintf "%s differs from the exported model's" name)
        }
        test "writeAtomically: a failing write leaves the old file and no temporary file" {
            use dir = new TempDir()
            let path = dir.File "target.bin"
            File.WriteAllText(path, "old content")
            let e =
                expectExn<InvalidOperationException> "failing writer" (fun () ->
                    Checkpoint.writeAtomically path (fun s ->
                        s.Write(Encoding.UTF8.GetBytes "half of the new con", 0, 19)
                        raise (InvalidOperationException "disk on fire")))
            Expect.equal e.Message "disk on fire" "the writer's exception comes out"
            Expect.equal (File.ReadAllText path) "old content" "the old file is intact"
            Expect.equal (Directory.GetFiles dir.Path |> Array.map Path.GetFileName) [| "target.bin" |] "no temporary file"
            Checkpoint.writeAtomically path (fun s -> s.Write(Encoding.UTF8.GetBytes "new", 0, 3))
            Expect.equal (File.ReadAllText path) "new" "a successful write replaces the file"
            Expect.equal (Directory.GetFiles dir.Path).Length 1 "still one file"
        }
        test "loading a checkpoint into a model of another configuration names every setting that differs" {
            use dir = new TempDir()
            use m = MaskedAutoencoder.Create(small, 8L)
            let path = dir.File "m.ckpt"
            Checkpoint.save path m None None { Config = small; Iteration = 0; Step = 0; Epoch = 0; Extra = JsonObject() }
            use other = MaskedAutoencoder.Create({ small with Depth = 3; DecoderEmbedDim = 16 }, 8L)
            let before = snapshot other
            let e = expectExn<InvalidDataException> "other configuration" (fun () -> Checkpoint.loadInto path other None None)
            Expect.stringContains e.Message "depth: 2 in the checkpoint, 3 in the model" "names depth with both values"
            Expect.stringContains e.Message "decoderEmbedDim: 32 in the checkpoint, 16 in the model" "names the decoder width"
            for struct (name, p) in other.named_parameters() do
                Expect.isTrue (same p before.[name]) (sprintf "%s: nothing loaded" name)
        }
        test "checkpoints record the modality; another modality is a clear error" {
            use dir = new TempDir()
            use m = MaskedAutoencoder.Create(small, 8L)
            let path = dir.File "m.ckpt"
            Checkpoint.save path m None None { Config = small; Iteration = 0; Step = 0; Epoch = 0; Extra = JsonObject() }
            use zip = ZipFile.OpenRead path
            let meta = (use s = zip.GetEntry("meta.json").Open() in JsonNode.Parse s)
            Expect.equal (meta.["modality"].GetValue<string>()) "image" "the modality is recorded"
            Expect.equal (meta.["config"].["input"].["imageHeight"].GetValue<int>()) 28 "with its input sizes"
            let e = expectExn<InvalidDataException> "another modality" (fun () -> Checkpoint.loadModelOf "video" path null |> ignore)
            Expect.stringContains e.Message "modality image; expected modality video" "names both modalities"
            // a checkpoint of a modality this Mae does not know
            let patched = dir.File "hologram.ckpt"
            File.Copy(path, patched)
            do
                use z = ZipFile.Open(patched, ZipArchiveMode.Update)
                let entry = z.GetEntry "meta.json"
                let node = (use s = entry.Open() in JsonNode.Parse s)
                node.["config"].["modality"] <- JsonValue.Create "hologram"
                entry.Delete()
                use s = z.CreateEntry("meta.json").Open()
                use w = new Text.Json.Utf8JsonWriter(s)
                node.WriteTo w
            let e = expectExn<InvalidDataException> "unknown modality" (fun () -> Checkpoint.loadModel patched null |> ignore)
            Expect.stringContains e.Message "unknown modality \"hologram\"" "says which modality"
            Expect.stringContains e.Message patched "names the file"
        }
        test "a checkpoint of the first format (mae-image-checkpoint/1) still loads, weights and all" {
            // written by Mae before the general core (commit bb85e68): `small` with seed 4, see tests/fixtures/checkpoints/README.md
            let path = Path.Combine(fixturePath "checkpoints", "image-v1.ckpt")
            let loaded, meta = Checkpoint.loadModel path null
            use loaded = loaded
            Expect.equal meta.Config small "the configuration reads as today's"
            use fresh = MaskedAutoencoder.Create(small, 4L)
            for struct (name, p) in fresh.named_parameters() do
                Expect.isTrue (same (param loaded name) p) (sprintf "%s as written" name)
        }
    ]
