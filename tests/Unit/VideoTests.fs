/// The video modality (VideoMAE): the tubelet embedding against the reference's Conv3d, the
/// model's parts and names, tube masking through the model, checkpoints, Moving-MNIST clips,
/// bad input, and a short run that learns.
module Mae.Tests.Unit.VideoTests

open System
open System.IO
open Expecto
open TorchSharp
open Mae
open Mae.Data
open Mae.Tests.Unit.Common

/// 4 RGB frames of 16x16, tubelet 2x4x4: a grid of 2 slots x 4 x 4 = 32 tokens; width 32.
let private smallVideo =
    { MaeConfig.withVideo 4 (16, 16) 2 (4, 4) 3 MaeConfig.videoTiny with
        EmbedDim = 32; Depth = 1; Heads = 2; DecoderEmbedDim = 32; DecoderDepth = 1; DecoderHeads = 2 }

let private clips (seed: int) (n: int) (c: MaeConfig) =
    let v = c.Video
    let h, w = v.FrameSize
    use g = gen seed
    torch.rand([| int64 n; int64 v.Channels; int64 v.Frames; int64 h; int64 w |], generator = g)

let private digits () =
    let train, test = Idx.loadFolder (fixturePath "mnist-small") 0 0
    Idx.toUnit train.Images, train.Labels, Idx.toUnit test.Images, test.Labels

/// README's F# video example (the lines between the markers; a test in ReadmeTests compares them),
/// run here on the fixture's digits with few clips.
let readmeVideoExample (train: ImageSet) (test: ImageSet) (clipCount: int) (epochs: int) =
    // <readme>
    let clips (digits: ImageSet) count seed = // real MNIST digits bouncing in 8 frames of 48x48, generated on demand
        MovingMnistDataset(Idx.toUnit digits.Images, digits.Labels, { MovingMnistOptions.defaults with Count = count; Seed = seed })
    let trainClips, testClips = clips train clipCount 0L, clips test (clipCount / 10) 1L
    use model = MaskedAutoencoder.Create(MaeConfig.videoTiny, 0L) // tubelets 2x8x8, tube masking 90%, no cls token
    let options = { PretrainOptions.defaults with Epochs = epochs; BatchSize = 128; BaseLr = 1e-3; Workers = 2 }
    let result = Pretrain.runOn model trainClips options null ignore Threading.CancellationToken.None
    let loader = LoaderOptions.evaluation 256 Transforms.identity
    let features (x: Tensor) = model.Features(x, true) // the encoder alone, no masking, mean-pooled: [N, D]
    let probe = Probe.linearOnData Probe.defaultLinearOptions 10 features torch.CPU loader trainClips testClips
    use clipsToShow = torch.stack([| for i in 0 .. 3 -> (testClips :> IDataset).Read(i).Input |])
    use g = new Generator(1UL, torch.CPU)
    Visualize.reconstruction "video-reconstruction.png" model g id clipsToShow // frames: original, masked, reconstruction
    printfn "loss %.3f, linear-probe accuracy %.3f" result.FinalLoss probe.TestAccuracy
    // </readme>
    result, probe

let tests =
    testList "video" [
        test "README's F# video example runs (fixture digits, 256 clips, 2 epochs)" {
            let train, test = Idx.loadFolder (fixturePath "mnist-small") 0 0
            let dir = Directory.GetCurrentDirectory()
            use tmp = new TempDir()
            Directory.SetCurrentDirectory tmp.Path
            try
                let result, probe = readmeVideoExample train test 256 2
                Expect.isTrue (Double.IsFinite result.FinalLoss) "finite loss"
                Expect.isGreaterThan probe.TestAccuracy 0.0 "a probe accuracy"
                Expect.isTrue (File.Exists(tmp.File "video-reconstruction.png")) "the strip of frames"
            finally
                Directory.SetCurrentDirectory dir
        }

        test "the tubelet embedding equals VideoMAE's Conv3d (kernel = stride = tubelet)" {
            use _ = torch.NewDisposeScope()
            torch.manual_seed 3L |> ignore
            let embed = new PatchEmbed(3, 8, [| 2; 4; 4 |])
            let x = clips 1 2 smallVideo
            let conv = torch.nn.functional.conv3d(x, embed.Weight, (param embed "proj.bias"), strides = [| 2L; 4L; 4L |])
            let reference = conv.flatten(2L).transpose(1L, 2L) // [N, L, D], slot-major then row-major
            let ours = embed.forward x
            Expect.isLessThan ((ours - reference).abs().max().item<float32>()) 1e-5f "largest difference from conv3d"
        }

        test "parts and names: patch_embed.proj as Conv3d, no cls token, fixed positions" {
            use model = MaskedAutoencoder.Create(smallVideo, 0L)
            let ns = names model
            Expect.contains ns "patch_embed.proj.weight" "tubelet embedding"
            Expect.isFalse (List.contains "cls_token" ns) "VideoMAE has no cls token"
            Expect.equal (shape (param model "patch_embed.proj.weight")) [ 32L; 3L; 2L; 4L; 4L ] "Conv3d weight [D, C, t, ph, pw]"
            Expect.equal (shape (param model "decoder_pred.weight")) [ 2L * 4L * 4L * 3L; 32L ] "decoder predicts t*ph*pw*C"
            Expect.equal model.Grid [| 2; 4; 4 |] "grid (slots, rows, columns)"
            let table = model.Encoder.TokenPositions.squeeze(0L)
            Expect.isTrue (same table (PosEmbed.sinusoid 32 32)) "VideoMAE's sinusoid table"
        }

        test "tube masking through the model: the same spatial mask in every slot, int(0.9 * 16) hidden per slot" {
            use _ = torch.NewDisposeScope()
            use model = MaskedAutoencoder.Create(smallVideo, 0L)
            use g = gen 5
            let out = model.Forward(clips 2 3 smallVideo, g)
            let mask = out.Mask.reshape(3L, 2L, 16L)
            Expect.isTrue (same (mask.select(1L, 0L)) (mask.select(1L, 1L))) "slot 0 and slot 1 masks are equal"
            let hidden: Tensor = mask.sum([| -1L |])
            Expect.isTrue ((hidden.eq((float (int (0.9 * 16.0))).ToScalar())).all().item<bool>()) "int(0.9 * 16) = 14 hidden per slot"
            Expect.isTrue (allFinite out.Loss) "finite loss"
            Expect.equal (shape out.Pred) [ 3L; 32L; 96L ] "predictions [N, L, t*ph*pw*C]"
        }

        test "the default objective normalises the target per tubelet and channel (VideoMAE)" {
            use _ = torch.NewDisposeScope()
            use model = MaskedAutoencoder.Create(smallVideo, 0L)
            use g = gen 6
            let x = clips 3 2 smallVideo
            let out = model.Forward(x, g)
            let expected = Losses.maskedMse out.Pred (Losses.perChannelNormTarget 3 1e-6 (model.Target x)) out.Mask
            Expect.floatClose Accuracy.high (out.Loss.item<float32>() |> float) (expected.item<float32>() |> float) "loss"
        }

        test "reassembling the target gives the clip back" {
            use _ = torch.NewDisposeScope()
            use model = MaskedAutoencoder.Create(smallVideo, 0L)
            let x = clips 4 2 smallVideo
            Expect.isTrue (same (model.Reassemble(model.Target x)) x) "Reassemble (Target x) = x"
        }

        test "a clip whose frame count is not the model's (nor a multiple of the tubelet) is refused, naming the frames" {
            use model = MaskedAutoencoder.Create(smallVideo, 0L)
            let x = torch.rand([| 2L; 3L; 5L; 16L; 16L |])
            let ex = expectArg "batch" "Frames" (fun () -> model.Forward(x, gen 1))
            Expect.stringContains ex.Message "[2, 3, 5, 16, 16]" "the shape seen"
            expectArg "Frames" "a multiple of the tubelet length TubeletSize = 2" (fun () -> MaeConfig.validate (MaeConfig.withVideo 5 (16, 16) 2 (4, 4) 3 smallVideo)) |> ignore
        }

        test "a video checkpoint round-trips its configuration and weights" {
            use dir = new TempDir()
            use model = MaskedAutoencoder.Create({ smallVideo with Input = Video { smallVideo.Video with Positions = SinCos3d } }, 1L)
            let path = dir.File "video.ckpt"
            Checkpoint.save path model None None { Config = model.Config; Iteration = 0; Step = 0; Epoch = 0; Extra = Text.Json.Nodes.JsonObject() }
            let loaded, meta = Checkpoint.loadModel path torch.CPU
            use loaded = loaded
            Expect.equal meta.Config model.Config "configuration"
            Expect.equal loaded.Modality "video" "modality"
            for struct (name, p) in model.named_parameters() do
                Expect.isTrue (same p (param loaded name)) name
        }

        test "Moving-MNIST: seeded, digits kept whole, labels without reading" {
            use _ = torch.NewDisposeScope()
            let trainDigits, trainLabels, _, _ = digits ()
            let options = { MovingMnistOptions.defaults with Frames = 6; CanvasSize = 40; Count = 50; Seed = 7L }
            let data = MovingMnistDataset(trainDigits, trainLabels, options) :> IDataset
            let a, b = data.Read 3, data.Read 3
            Expect.isTrue (same a.Input b.Input) "the same clip twice"
            Expect.isFalse (same (data.Read 3).Input (data.Read 4).Input) "different clips"
            Expect.equal (shape a.Input) [ 1L; 6L; 40L; 40L ] "clip [1, T, S, S]"
            Expect.isTrue (a.Input.min().item<float32>() >= 0.0f && a.Input.max().item<float32>() <= 1.0001f) "values in [0, 1]"
            // one digit that never leaves the canvas: every frame holds all of its ink
            let sums = a.Input.sum([| 0L; 2L; 3L |])
            Expect.isLessThan ((sums - sums.[0L]).abs().max().item<float32>()) 1e-3f "ink per frame constant"
            Expect.isFalse (same a.Input.[0L, 0L] a.Input.[0L, 5L]) "the digit moves"
            Expect.equal (data.Labels()) (Array.init 50 (fun i -> (data.Read i).Label)) "Labels() = the labels Read gives"
            let again = MovingMnistDataset(trainDigits, trainLabels, options) :> IDataset
            Expect.isTrue (same (again.Read 9).Input (data.Read 9).Input) "a new dataset with the same seed gives the same clips"
        }

        test "Moving-MNIST refuses a canvas smaller than a digit, naming CanvasSize" {
            let d, l, _, _ = digits ()
            expectArg "CanvasSize" "at least" (fun () -> MovingMnistDataset(d, l, { MovingMnistOptions.defaults with CanvasSize = 20 })) |> ignore
        }

        test "the tiny video preset learns on Moving-MNIST: the loss falls within a few steps" {
            let trainDigits, trainLabels, _, _ = digits ()
            let config = MaeConfig.videoTiny
            let data =
                MovingMnistDataset(trainDigits, trainLabels, { MovingMnistOptions.defaults with Count = 256; Seed = 0L }) :> IDataset
            use model = MaskedAutoencoder.Create(config, 0L)
            let options = { PretrainOptions.defaults with Epochs = 6; BatchSize = 32; BaseLr = 1e-3; WarmupEpochs = 1.0; Seed = 0L }
            let result = Pretrain.runOn model data options null ignore Threading.CancellationToken.None
            let losses = result.EpochLosses
            Expect.isLessThan losses.[losses.Length - 1] (losses.[0] * 0.9) (sprintf "last epoch's loss below 90%% of the first (%A)" losses)
        }
    
        test "video files (mp4, webm, avi, mkv) are decoded by ffmpeg into [C, T, H, W] clips in [0, 1]" {
            use dir = new TempDir()
            videoFolder dir.Path
            let sampling = { Frames = 8; Stride = 2; FrameSize = (48, 48) }
            for file in Directory.GetFiles(dir.File "moving") do
                for channels in [ 1; 3 ] do
                    use clip = VideoFile.read sampling file channels
                    Expect.equal (shape clip) [ int64 channels; 8L; 48L; 48L ] (sprintf "%s with %d channel(s)" file channels)
                    Expect.isTrue (clip.min().item<float32>() >= 0.0f && clip.max().item<float32>() <= 1.0f) "values in [0, 1]"
                    Expect.isGreaterThan (clip.std().item<float32>()) 0.05f "an image, not a blank"
                    use first = clip.select(1L, 0L)
                    use last = clip.select(1L, 7L)
                    Expect.isFalse (same first last) "testsrc moves: the first and last frames differ"
        }

        test "frame sampling: centred, every stride frames, the last frame repeated for a short video" {
            Expect.equal (VideoFile.indices 16 8 2) [| 0; 2; 4; 6; 8; 10; 12; 14 |] "16 frames, 8 every 2"
            Expect.equal (VideoFile.indices 30 4 2) [| 11; 13; 15; 17 |] "centred: (30 - 7) / 2 = 11"
            Expect.equal (VideoFile.indices 5 4 2) [| 0; 2; 4; 4 |] "short: clamped to the last frame"
        }

        test "a video folder reads as class folders; a file ffmpeg cannot decode is an error naming it" {
            use dir = new TempDir()
            videoFolder dir.Path
            let sampling = { Frames = 8; Stride = 2; FrameSize = (48, 48) }
            let splits = VideoFolder.openSplits dir.Path sampling 0.25 0L 1
            let train, test = splits.Train :> IDataset, splits.Val :> IDataset
            Expect.equal train.ClassNames [| "bars"; "moving" |] "classes sorted by name"
            Expect.equal (train.Count, test.Count) (6, 2) "8 files split 6 / 2"
            Expect.equal (shape (train.Read 0).Input) [ 1L; 8L; 48L; 48L ] "a clip"
            File.WriteAllBytes(dir.File "moving/broken.mp4", Array.init 3000 byte)
            let withBroken = VideoFolder.openSplits dir.Path sampling 0.25 0L 1
            let all = Array.append withBroken.Train.Files withBroken.Val.Files
            let broken = Array.IndexOf(withBroken.Train.Files, dir.File "moving/broken.mp4")
            let ex =
                if broken >= 0 then expectExn<InvalidDataException> "broken file" (fun () -> (withBroken.Train :> IDataset).Read broken |> ignore)
                else
                    let i = Array.IndexOf(withBroken.Val.Files, dir.File "moving/broken.mp4")
                    expectExn<InvalidDataException> "broken file" (fun () -> (withBroken.Val :> IDataset).Read i |> ignore)
            Expect.stringContains ex.Message (dir.File "moving/broken.mp4") "names the file"
            Expect.stringContains ex.Message "ffmpeg could not decode it" "says what failed"
            Expect.equal all.Length 9 "the broken file is listed (it fails when read)"
        }

        test "the tiny video model fine-tunes and probes through the general paths" {
            let trainDigits, trainLabels, testDigits, testLabels = digits ()
            let clips d l n s = MovingMnistDataset(d, l, { MovingMnistOptions.defaults with Count = n; Seed = s }) :> IDataset
            let train, test = clips trainDigits trainLabels 128 0L, clips testDigits testLabels 64 1L
            use model = MaskedAutoencoder.Create(MaeConfig.videoTiny, 0L)
            use clf = new VitClassifier(MaeConfig.videoTiny, 10)
            clf.LoadEncoder model
            let options = { FineTune.defaults with Epochs = 2; BatchSize = 32 }
            let losses = FineTune.runOn clf train options Threading.CancellationToken.None
            Expect.equal losses.Length 2 "one loss per epoch"
            Expect.isTrue (losses |> Array.forall Double.IsFinite) "finite losses"
            let accuracy = FineTune.evaluateOn clf (LoaderOptions.evaluation 64 Transforms.identity) test
            Expect.isTrue (accuracy >= 0.0 && accuracy <= 1.0) "a test accuracy"
        }
    
        test "VideoMAE's names: export writes them (q_bias / v_bias, encoder_to_decoder without bias, no fixed tables) and import reads them back" {
            use dir = new TempDir()
            use model = MaskedAutoencoder.Create(smallVideo, 4L)
            Expect.isFalse (List.contains "decoder_embed.bias" (names model)) "VideoMAE's encoder_to_decoder has no bias"
            let pth = dir.File "videomae.pth"
            PyTorch.export pth model false
            let sd = PyTorch.read pth
            let blockNames =
                [ "norm1.weight"; "norm1.bias"; "attn.qkv.weight"; "attn.q_bias"; "attn.v_bias"; "attn.proj.weight"; "attn.proj.bias"
                  "norm2.weight"; "norm2.bias"; "mlp.fc1.weight"; "mlp.fc1.bias"; "mlp.fc2.weight"; "mlp.fc2.bias" ]
            let expected =
                [ "encoder.patch_embed.proj.weight"; "encoder.patch_embed.proj.bias"
                  "encoder.norm.weight"; "encoder.norm.bias"; "encoder_to_decoder.weight"; "mask_token"
                  "decoder.norm.weight"; "decoder.norm.bias"; "decoder.head.weight"; "decoder.head.bias" ]
                @ [ for b in [ "encoder.blocks.0."; "decoder.blocks.0." ] do for n in blockNames -> b + n ]
            Expect.equal (set (Array.map fst sd)) (set expected) "modeling_pretrain.py's state dict names"
            let qb = sd |> Array.find (fun (n, _) -> n = "encoder.blocks.0.attn.q_bias") |> snd
            Expect.equal (shape qb) [ 32L ] "q_bias [D]"
            for _, t in sd do t.Dispose()
            let imported, info = PyTorch.importModel pth (Some smallVideo) 0 0 None
            use imported = imported
            Expect.isTrue info.Decoder "the decoder came from the file"
            for struct (n, p) in model.named_parameters() do
                Expect.isTrue (same p (param imported n)) n
            use _ = torch.NewDisposeScope()
            let x = clips 9 2 smallVideo
            use g1 = gen 3
            use g2 = gen 3
            Expect.isTrue (same (model.Forward(x, g1).Loss) (imported.Forward(x, g2).Loss)) "the same loss after the round trip"
            expectArg "config" "a video preset" (fun () -> PyTorch.importModel pth None 0 0 None) |> ignore
        }
    
        test "an RGB clip's strip: three rows per clip, one column per frame, de-normalised per channel" {
            use dir = new TempDir()
            use model = MaskedAutoencoder.Create(smallVideo, 5L)
            use g = gen 7
            use x = clips 11 2 smallVideo
            let png = dir.File "strip.png"
            Visualize.reconstruction png model g id x
            let info = StbImageSharp.ImageInfo.FromStream(File.OpenRead png)
            // 4 frames of 16 px, scale 3, 2 px gaps; 2 clips x 3 rows
            Expect.equal (info.Value.Width, info.Value.Height) (2 + 4 * (16 * 3 + 2), 2 + 6 * (16 * 3 + 2)) "the strip's size"
            Expect.equal info.Value.ColorComponents StbImageSharp.ColorComponents.RedGreenBlue "RGB"
            use _ = torch.NewDisposeScope()
            // per-channel de-normalisation: a prediction equal to the per-channel normalised target comes back as the target
            let target = model.Target x
            let mask = torch.ones(2L, int64 model.Config.NumTokens)
            mask.narrow(1L, 0L, 4L).zero_() |> ignore
            let perfect = Losses.perChannelNormTarget 3 1e-6 target
            let back = Visualize.denormaliseFor model.Config perfect target mask
            Expect.isLessThan ((back - target).abs().mean().item<float32>()) 0.2f "close to the target on average (visible statistics stand in for the hidden ones)"
        }
    ]

