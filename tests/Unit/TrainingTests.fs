/// Pretraining: the loss falls on learnable data, NaN stops training with a clear error, gradient
/// accumulation counts its steps.
module Mae.Tests.Unit.TrainingTests

open System
open System.IO
open System.Threading
open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

let private options =
    { PretrainOptions.defaults with
        Epochs = 4
        BatchSize = 16
        BaseLr = 1.6e-2 // lr 1e-3 at batch 16
        WarmupEpochs = 0.5
        Seed = 1L }

let tests =
    testList "pretraining" [
        test "the loss falls on a small learnable data set" {
            use images = smoothPatterns 11 256 4
            use m = MaskedAutoencoder.Create(small, 2L)
            let reports = Collections.Generic.List<PretrainProgress>()
            let r = Pretrain.run m images options null reports.Add CancellationToken.None
            Expect.equal r.Iterations 64 "4 epochs of 16 batches"
            Expect.equal r.Steps 64 "one step per batch"
            Expect.equal r.EpochLosses.Length 4 "one mean loss per epoch"
            Expect.isFalse r.Cancelled "not cancelled"
            Expect.isNull r.CheckpointPath "no checkpoint directory, no checkpoint"
            let first, last = r.EpochLosses.[0], Array.last r.EpochLosses
            Expect.isLessThan last (0.8 * first) (sprintf "last epoch's loss %.4f well below the first's %.4f" last first)
            Expect.isTrue (Double.IsFinite r.FinalLoss) "final loss finite"
            Expect.equal reports.Count 64 "a report per step"
            Expect.equal [ for p in reports -> p.Step ] [ 1 .. 64 ] "steps counted 1..64"
            Expect.all reports (fun p -> p.TotalSteps = 64) "total steps"
            let peak = reports |> Seq.map (fun p -> p.Lr) |> Seq.max
            Expect.floatClose Accuracy.medium peak 1e-3 "peak lr = BaseLr * 16 / 256"
            Expect.isFalse m.training "the model is left in eval mode"
        }
        test "bf16 precision: the loss falls as it does in fp32" {
            use images = smoothPatterns 11 256 4
            let final precision =
                use m = MaskedAutoencoder.Create(small, 2L)
                let r = Pretrain.run m images { options with Precision = precision } null ignore CancellationToken.None
                Expect.isLessThan (Array.last r.EpochLosses) (0.8 * r.EpochLosses.[0]) (sprintf "%A: the loss falls" precision)
                Expect.all (m.parameters()) (fun p -> p.dtype = ScalarType.Float32) "weights stay fp32"
                Array.last r.EpochLosses
            let fp32, bf16 = final Float32, final BFloat16
            Expect.isLessThan (abs (bf16 - fp32) / fp32) 0.05 (sprintf "bf16's last epoch loss %.4f within 5%% of fp32's %.4f" bf16 fp32)
        }
        test "NaN in the images stops training with an InvalidOperationException about the loss" {
            use images = torch.randn(32L, 1L, 28L, 28L)
            images.[3L].fill_(nan) |> ignore
            use m = MaskedAutoencoder.Create(small, 2L)
            let before = snapshot m
            let o = { options with Epochs = 1; BatchSize = 32 }
            let e = expectExn<InvalidOperationException> "NaN loss" (fun () -> Pretrain.run m images o null ignore CancellationToken.None |> ignore)
            Expect.stringContains e.Message "Loss is NaN" "says the loss is NaN"
            Expect.stringContains e.Message "iteration 0" "says where"
            for struct (name, p) in m.named_parameters() do
                Expect.isTrue (same p before.[name]) (sprintf "%s untouched by the NaN step" name)
        }
        test "gradient accumulation: AccumulationSteps 2 takes a step every second batch" {
            use images = smoothPatterns 12 64 2
            use m = MaskedAutoencoder.Create(small, 2L)
            let o = { options with Epochs = 2; BatchSize = 8; AccumulationSteps = 2 }
            let steps = Collections.Generic.List<int>()
            let r = Pretrain.run m images o null (fun p -> steps.Add p.Step) CancellationToken.None
            Expect.equal r.Iterations 16 "2 epochs of 8 batches"
            Expect.equal r.Steps (r.Iterations / 2) "Steps = Iterations / 2"
            Expect.equal (List.ofSeq steps) [ 1 .. 8 ] "a report per optimizer step"
        }
        test "gradient accumulation: no update before the accumulation is complete" {
            use images = smoothPatterns 12 32 2
            use m = MaskedAutoencoder.Create(small, 2L)
            let before = snapshot m
            // no warmup: the first step has a non-zero learning rate
            let o = { options with Epochs = 1; BatchSize = 8; AccumulationSteps = 2; MaxIterations = 1; WarmupEpochs = 0.0 }
            let r = Pretrain.run m images o null ignore CancellationToken.None
            Expect.equal (r.Iterations, r.Steps) (1, 0) "one micro-batch, no step"
            for struct (name, p) in m.named_parameters() do
                Expect.isTrue (same p before.[name]) (sprintf "%s not updated yet" name)
            let r2 = Pretrain.run m images { o with MaxIterations = 2 } null ignore CancellationToken.None
            Expect.equal r2.Steps 1 "two micro-batches, one step"
            Expect.isFalse (same (param m "decoder_pred.weight") before.["decoder_pred.weight"]) "updated after the step"
        }
        test "MaxIterations stops early; cancellation stops at the next step" {
            use images = smoothPatterns 13 64 2
            use m = MaskedAutoencoder.Create(small, 2L)
            let r = Pretrain.run m images { options with BatchSize = 8; MaxIterations = 5 } null ignore CancellationToken.None
            Expect.equal (r.Iterations, r.Steps) (5, 5) "5 iterations"
            use cts = new CancellationTokenSource()
            let r = Pretrain.run m images { options with BatchSize = 8 } null (fun p -> if p.Step = 3 then cts.Cancel()) cts.Token
            Expect.isTrue r.Cancelled "cancelled"
            Expect.equal r.Steps 3 "stopped after the step that saw the cancellation"
        }
        test "a diverging run stops before NaN reaches the weights or a checkpoint; the last checkpoint stays finite" {
            // the reported case: width 64, depth 2, decoder 32 x 1, MNIST fixture, batch 64, BaseLr 1e4,
            // no warmup, a checkpoint every step (before the fix: step 2 wrote NaN into 15 tensors and
            // last.ckpt was saved over step 1's)
            let cfg = { small with EmbedDim = 64; Depth = 2; Heads = 4; DecoderEmbedDim = 32; DecoderDepth = 1; DecoderHeads = 4 }
            let train, test = Data.Idx.loadFolder (fixturePath "mnist-small") 256 1
            use _ = test.Images
            use images = train.Images
            use m = MaskedAutoencoder.Create(cfg, 0L)
            use dir = new TempDir()
            let o =
                { PretrainOptions.defaults with
                    Epochs = 1; BatchSize = 64; BaseLr = 1e4; WarmupEpochs = 0.0; Seed = 0L
                    CheckpointDirectory = dir.Path; CheckpointEvery = 1 }
            let e = expectExn<InvalidOperationException> "divergence" (fun () -> Pretrain.run m images o null ignore CancellationToken.None |> ignore)
            let step = Text.RegularExpressions.Regex.Match(e.Message, "at step (\\d+)")
            Expect.isTrue step.Success (sprintf "the message names the step: %s" e.Message)
            Expect.stringContains e.Message "NaN or infinite" "says what went wrong"
            Expect.isTrue (m.EncoderParameterNames |> Array.exists (fun n -> e.Message.Contains n) || e.Message.Contains "decoder_")
                (sprintf "the message names the tensors: %s" e.Message)
            let ckpt = Pretrain.checkpointFile dir.Path
            Expect.isTrue (File.Exists ckpt) "the last good checkpoint is there"
            let meta = Checkpoint.readMeta ckpt
            Expect.equal meta.Step (int step.Groups.[1].Value - 1) "the checkpoint is the step before the bad one"
            let loaded, _ = Checkpoint.loadModel ckpt null
            use loaded = loaded
            Expect.isEmpty (Weights.nonFinite (Weights.named loaded)) "every weight in the checkpoint is finite"
        }
        test "Checkpoint.save refuses non-finite weights and leaves the file it would replace" {
            use m = MaskedAutoencoder.Create(small, 2L)
            use dir = new TempDir()
            let path = dir.File "m.ckpt"
            let meta: Checkpoint.Meta = { Config = small; Iteration = 0; Step = 0; Epoch = 0; Extra = Text.Json.Nodes.JsonObject() }
            Checkpoint.save path m None None meta
            let before = File.ReadAllBytes path
            do
                use _ = torch.no_grad()
                (param m "blocks.1.mlp.fc1.weight").[0L, 0L] <- torch.tensor(nan)
            let e = expectExn<InvalidOperationException> "NaN weight" (fun () -> Checkpoint.save path m None None meta)
            Expect.stringContains e.Message "blocks.1.mlp.fc1.weight" "names the tensor"
            Expect.sequenceEqual (File.ReadAllBytes path) before "the file is unchanged"
        }
    ]
