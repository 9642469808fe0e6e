/// Fine-tuning: the classifier takes the MAE's encoder weights (interpolating positions to another
/// grid), layer-wise learning-rate decay, and a tiny task it must learn.
module Mae.Tests.Unit.FineTuneTests

open System.Threading
open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

let private classifier (cfg: MaeConfig) (classes: int) (seed: int64) =
    torch.manual_seed seed |> ignore
    new VitClassifier(cfg, classes)

/// Two classes told apart by brightness: class 1 is brighter, both noisy. [n, 1, 28, 28], [n]
let private brightness (seed: int) (n: int) =
    use g = gen seed
    let labels = torch.randint(0L, 2L, [| int64 n |], generator = g)
    let level = (labels.to_type(ScalarType.Float32) * 2.0 - 1.0).reshape(int64 n, 1L, 1L, 1L)
    level + torch.randn([| int64 n; 1L; 28L; 28L |], generator = g) * 0.5, labels

let tests =
    testList "fine-tuning" [
        test "LoadEncoder copies the MAE's encoder weights" {
            use mae = MaskedAutoencoder.Create(small, 1L)
            use clf = classifier small 3 2L
            let before = snapshot clf
            Expect.isFalse (same (param clf "blocks.0.attn.qkv.weight") (param mae "blocks.0.attn.qkv.weight")) "different before loading"
            clf.LoadEncoder mae
            let encoder = set mae.EncoderParameterNames
            let copied = names clf |> List.filter encoder.Contains
            Expect.containsAll copied [ "patch_embed.proj.weight"; "cls_token"; "pos_embed"; "blocks.1.mlp.fc2.bias" ] "encoder tensors shared by name"
            for struct (name, p) in clf.named_parameters() do
                if encoder.Contains name then Expect.isTrue (same p (param mae name)) (sprintf "%s copied" name)
                else Expect.isTrue (same p before.[name]) (sprintf "%s (the classifier's own) untouched" name)
            Expect.containsAll (names clf) [ "fc_norm.weight"; "head.weight"; "head.bias" ] "new head"
        }
        test "LoadEncoder interpolates pos_embed to another grid" {
            use mae = MaskedAutoencoder.Create(small, 1L)
            let cfg = (MaeConfig.withImage (42, 42) small.Image.PatchSize small.Image.Channels small) // 6x6 patches instead of 4x4
            use clf = classifier cfg 2 2L
            let own = (param clf "pos_embed").clone()
            clf.LoadEncoder mae
            let src, pos = param mae "pos_embed", param clf "pos_embed"
            Expect.equal (shape pos) [ 1L; 37L; 32L ] "[1, 1+6*6, D]"
            Expect.isTrue (same (pos.narrow(1L, 0L, 1L)) (src.narrow(1L, 0L, 1L))) "the cls row is copied as it is"
            Expect.isTrue (same pos (PosEmbed.interpolate2d src (4, 4) (6, 6) true)) "the bicubic resize of the MAE's table"
            Expect.isFalse (pos.allclose(own)) "not the classifier's own 6x6 table"
            Expect.isTrue (same (param clf "blocks.0.attn.qkv.weight") (param mae "blocks.0.attn.qkv.weight")) "blocks copied"
            use x = torch.randn(2L, 1L, 42L, 42L)
            Expect.equal (shape (clf.forward x)) [ 2L; 2L ] "runs at 42x42"
        }
        test "PosEmbed.interpolate2d: identity on the same grid, constants stay constant" {
            use _ = torch.NewDisposeScope()
            let table = (PosEmbed.sinCos2d 16 (4, 4) true).unsqueeze(0L)
            Expect.isTrue (same (PosEmbed.interpolate2d table (4, 4) (4, 4) true) table) "same grid: the table itself"
            let ones = torch.ones(1L, 17L, 8L)
            let up = PosEmbed.interpolate2d ones (4, 4) (5, 7) true
            Expect.equal (shape up) [ 1L; 36L; 8L ] "[1, 1+5*7, D]"
            Expect.isTrue (up.allclose(torch.ones(1L, 36L, 8L), atol = 1e-5)) "a constant table stays constant"
            let noCls = PosEmbed.interpolate2d (table.narrow(1L, 1L, 16L)) (4, 4) (2, 2) false
            Expect.equal (shape noCls) [ 1L; 4L; 16L ] "without a cls row"
        }
        test "groups: layer-wise scales layerDecay^(depth+1-layer), head 1, patch_embed smallest" {
            use clf = classifier small 2 2L
            let decay = 0.75
            let groups = FineTune.groups clf 0.05 decay
            let byHandle = clf.named_parameters() |> Seq.map (fun struct (n, p) -> p.Handle, n) |> Map.ofSeq
            let scaleOf =
                [ for g in groups do
                      for p in g.Parameters -> byHandle.[p.Handle], g.LrScale ] 
            let names = List.map fst scaleOf
            Expect.equal names.Length (List.distinct names).Length "each parameter in one group"
            let trainable = clf.named_parameters() |> Seq.filter (fun struct (_, p) -> p.requires_grad) |> Seq.map (fun struct (n, _) -> n)
            Expect.equal (Set.ofList names) (Set.ofSeq trainable) "every trainable parameter"
            let scale = Map.ofList scaleOf
            let expected layer = pown decay (small.Depth + 1 - layer)
            Expect.floatClose Accuracy.veryHigh scale.["head.weight"] 1.0 "head 1.0"
            Expect.floatClose Accuracy.veryHigh scale.["fc_norm.bias"] 1.0 "fc_norm with the head"
            Expect.floatClose Accuracy.veryHigh scale.["blocks.1.attn.qkv.weight"] (expected 2) "last block"
            Expect.floatClose Accuracy.veryHigh scale.["blocks.0.mlp.fc1.bias"] (expected 1) "first block"
            Expect.floatClose Accuracy.veryHigh scale.["patch_embed.proj.weight"] (expected 0) "patch_embed"
            Expect.floatClose Accuracy.veryHigh scale.["cls_token"] (expected 0) "cls_token with the embeddings"
            Expect.equal (scaleOf |> List.minBy snd |> snd) scale.["patch_embed.proj.weight"] "patch_embed has the smallest scale"
            for g in groups do
                for p in g.Parameters do
                    let name = byHandle.[p.Handle]
                    Expect.floatClose Accuracy.veryHigh g.LrScale (expected (clf.LayerId name)) (sprintf "%s's scale" name)
                    Expect.equal g.WeightDecay (if Optim.decays name p then 0.05 else 0.0) (sprintf "%s's decay" name)
        }
        test "FineTune.run learns two classes told apart by brightness" {
            use _ = torch.NewDisposeScope()
            let trainX, trainY = brightness 41 128
            let testX, testY = brightness 42 64
            use mae = MaskedAutoencoder.Create(small, 1L)
            use clf = classifier small 2 2L
            clf.LoadEncoder mae
            let o = { FineTune.defaults with Epochs = 3; BatchSize = 16; BaseLr = 1.6e-2; WarmupEpochs = 0.5 }
            let losses = FineTune.run clf trainX trainY o CancellationToken.None
            Expect.equal losses.Length 3 "a loss per epoch"
            Expect.isLessThan (Array.last losses) losses.[0] "the loss falls"
            let acc = FineTune.evaluate clf testX testY
            Expect.isGreaterThan acc 0.9 "test accuracy"
        }
        test "LoadEncoder maps every tensor or names each missing, extra and differently shaped one" {
            // before the fix: depth 3 from depth 2 returned with blocks.2 left random; depth 1 dropped blocks.1
            use mae = MaskedAutoencoder.Create(small, 1L)
            use deeper = classifier { small with Depth = 3 } 3 2L
            let before = snapshot deeper
            let e = expectArg "mae" "blocks.2.attn.qkv.weight: missing in the source" (fun () -> deeper.LoadEncoder mae)
            Expect.stringContains e.Message "blocks.2.mlp.fc2.bias" "every missing tensor is named"
            for struct (name, p) in deeper.named_parameters() do
                Expect.isTrue (same p before.[name]) (sprintf "%s: nothing is copied when the shapes do not match" name)
            use shallower = classifier { small with Depth = 1 } 3 2L
            let e = expectArg "mae" "blocks.1.attn.qkv.weight: not in the target" (fun () -> shallower.LoadEncoder mae)
            Expect.stringContains e.Message "blocks.1.norm2.bias" "every extra tensor is named"
            use wider = classifier { small with EmbedDim = 64; Heads = 2 } 3 2L
            let e = expectArg "mae" "cls_token: shape [1, 1, 32] in the source, [1, 1, 64] in the target" (fun () -> wider.LoadEncoder mae)
            Expect.stringContains e.Message "blocks.0.mlp.fc1.weight: shape [128, 32] in the source, [256, 64] in the target" "both shapes"
        }
        test "run and evaluate refuse labels outside [0, classes) and labels that do not match the images" {
            use _ = torch.NewDisposeScope()
            let x, _ = brightness 43 16
            let fourClasses = torch.tensor(Array.init 16 (fun i -> int64 (i % 4))) // labels 0..3
            use clf = classifier small 2 2L
            let o = { FineTune.defaults with Epochs = 1; BatchSize = 8 }
            let e = expectArg "labels" "labels in [0, 2), for classes = 2" (fun () -> FineTune.run clf x fourClasses o CancellationToken.None)
            Expect.stringContains e.Message "label 3" "says the label it found"
            expectArg "labels" "labels in [0, 2), for classes = 2" (fun () -> FineTune.evaluate clf x fourClasses) |> ignore
            let twoClasses = torch.tensor(Array.init 16 (fun i -> int64 (i % 2)))
            expectArg "labels" "[16]" (fun () -> FineTune.run clf x (twoClasses.narrow(0L, 0L, 12L)) o CancellationToken.None) |> ignore
            expectArg "labels" "[16]" (fun () -> FineTune.evaluate clf x (twoClasses.narrow(0L, 0L, 12L))) |> ignore
            expectArg "labels" "int64" (fun () -> FineTune.run clf x (twoClasses.to_type(ScalarType.Float32)) o CancellationToken.None) |> ignore
            expectArg "inputs" "rank 4" (fun () -> FineTune.evaluate clf (x.reshape(16L, 28L, 28L)) twoClasses) |> ignore
        }
        test "FewLabels.run: the subset's size, accuracies in [0, 1], the same numbers twice, the MAE unchanged" {
            use _ = torch.NewDisposeScope()
            let train, test = Data.Idx.loadFolder (fixturePath "mnist-small") 300 64
            use mae = MaskedAutoencoder.Create(small, 1L)
            let before = snapshot mae
            let o =
                { FewLabels.defaults with
                    LabelsPerClass = 3
                    FineTune = { FewLabels.defaults.FineTune with Epochs = 3; WarmupEpochs = 0.0 }
                    Probe = { FewLabels.defaults.Probe with Epochs = 2 } }
            let run () = FewLabels.run mae (Data.InMemoryDataset(train.Images, train.Labels)) (Data.InMemoryDataset(test.Images, test.Labels)) o CancellationToken.None
            let r = run ()
            Expect.equal r.TrainSamples 30 "3 labels x 10 classes"
            Expect.equal r.TestSamples 64 "the whole test split"
            for name, acc in [ "pretrained", r.Pretrained; "scratch", r.Scratch; "probe", r.LinearProbe ] do
                Expect.isTrue (acc >= 0.0 && acc <= 1.0) (sprintf "%s accuracy %f in [0, 1]" name acc)
            Expect.equal r.PretrainedLosses.Length 3 "a loss per epoch"
            Expect.notEqual (Array.last r.PretrainedLosses) (Array.last r.ScratchLosses) "the pretrained encoder changes the training"
            let again = run ()
            Expect.equal (again.Pretrained, again.Scratch, again.LinearProbe) (r.Pretrained, r.Scratch, r.LinearProbe) "deterministic"
            for struct (n, p) in mae.named_parameters() do
                Expect.isTrue (same p before.[n]) (sprintf "%s: the MAE is not changed" n)
        }
    ]
