/// `./build.sh demo [FOLDER]`: pretrains the tiny image MAE on MNIST (or on the IDX files in
/// FOLDER), writes a reconstruction PNG, compares linear probes of the pretrained encoder, a
/// randomly initialised one and raw pixels, and, with 10 labels per class, the pretrained encoder
/// fine-tuned against the same classifier from scratch. The last line printed is one JSON object.
module Mae.Examples.MnistDemo

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open System.Threading
open TorchSharp
open Mae
open Mae.Data

type Args =
    { Folder: string
      Epochs: int
      TrainLimit: int
      Out: string
      ProbeEpochs: int }

let usage = "usage: MnistDemo [FOLDER] [--epochs N] [--train-limit N] [--probe-epochs N] [--out DIR]"

let rec parse (a: Args) (xs: string list) =
    let int' (name: string) (v: string) =
        match Int32.TryParse v with
        | true, x when x >= 0 -> x
        | _ -> raise (ArgumentException(sprintf "%s was \"%s\"; expected a non-negative integer. %s" name v usage, name))
    match xs with
    | [] -> a
    | "--epochs" :: v :: rest -> parse { a with Epochs = int' "--epochs" v } rest
    | "--train-limit" :: v :: rest -> parse { a with TrainLimit = int' "--train-limit" v } rest
    | "--probe-epochs" :: v :: rest -> parse { a with ProbeEpochs = int' "--probe-epochs" v } rest
    | "--out" :: v :: rest -> parse { a with Out = v } rest
    | v :: rest when not (v.StartsWith "--") && isNull a.Folder -> parse { a with Folder = v } rest
    | v :: _ -> raise (ArgumentException(sprintf "unknown argument \"%s\". %s" v usage, "args"))

let log (s: string) = eprintfn "[demo %s] %s" (DateTime.Now.ToString "HH:mm:ss") s

[<EntryPoint>]
let main argv =
    // libgomp's default (spin at barriers) is kept here: the demo runs alone in the foreground, and
    // the tiny model's many small parallel regions pay for waking sleeping threads (a demo step
    // took 20-50% longer with OMP_WAIT_POLICY=PASSIVE; benchmarks/README.md, "A shared machine").
    let clock = Stopwatch.StartNew()
    let args =
        parse { Folder = null; Epochs = 20; TrainLimit = 0; Out = "out/demo"; ProbeEpochs = 20 } (List.ofArray argv)
    torch.set_num_threads (min 2 Environment.ProcessorCount)
    Runtime.tuneAllocator ()
    let train, test =
        if isNull args.Folder then Mnist.load log args.TrainLimit 0
        else Idx.loadFolder args.Folder args.TrainLimit 0
    log (sprintf "data: train %s, test %s" (Guard.shapeOf train.Images) (Guard.shapeOf test.Images))
    let h, w = int train.Images.shape.[2], int train.Images.shape.[3]
    let config = MaeConfig.withImage (h, w) MaeConfig.tiny.Image.PatchSize 1 MaeConfig.tiny
    use model = MaskedAutoencoder.Create(config, 0L)
    let options =
        { PretrainOptions.defaults with
            Epochs = args.Epochs; BatchSize = 256; BaseLr = 1e-3; WarmupEpochs = 1.0; WeightDecay = 0.05 }
    let isTerminal = not Console.IsErrorRedirected
    let mutable lastPrint = TimeSpan.Zero
    let report (p: PretrainProgress) =
        if p.Elapsed - lastPrint >= TimeSpan.FromSeconds(if isTerminal then 0.5 else 10.0) || p.Step = p.TotalSteps then
            lastPrint <- p.Elapsed
            let eta = TimeSpan.FromSeconds(p.Elapsed.TotalSeconds / float p.Step * float (p.TotalSteps - p.Step))
            let line =
                sprintf "step %d/%d  epoch %d  loss %.4f  lr %.2g  %.0f img/s  eta %s"
                    p.Step p.TotalSteps (p.Epoch + 1) p.Loss p.Lr p.ImagesPerSecond (eta.ToString @"mm\:ss")
            if isTerminal then eprintf "\r%s   " line else log line
    log (sprintf "pretraining %s for %d epochs" "tiny" args.Epochs)
    let result = Pretrain.run model train.Images options null report CancellationToken.None
    if isTerminal then eprintfn ""
    log (sprintf "pretraining done: %d steps in %.0f s, loss %.4f -> %.4f" result.Steps result.Seconds result.EpochLosses.[0] result.FinalLoss)
    Directory.CreateDirectory args.Out |> ignore
    let ckpt = Path.GetFullPath(Path.Combine(args.Out, "mae-tiny.ckpt"))
    Checkpoint.save ckpt model None None
        { Config = config; Iteration = result.Iterations; Step = result.Steps; Epoch = args.Epochs; Extra = JsonObject() }
    Checkpoint.exportEncoder (Path.Combine(args.Out, "encoder.bin")) model
    log (sprintf "checkpoint: %s (encoder alone: encoder.bin)" ckpt)
    let png = Path.GetFullPath(Path.Combine(args.Out, "reconstruction.png"))
    use g = new Generator(123UL, torch.CPU)
    Visualize.reconstruction png model g Idx.toUnit (test.Images.narrow(0L, 0L, 8L))
    log (sprintf "reconstructions: %s" png)
    let probeOpts = { Probe.defaultLinearOptions with Epochs = args.ProbeEpochs }
    let probe (name: string) (features: Tensor -> Tensor) =
        let r = Probe.linearOn probeOpts 10 features torch.CPU 512 train test
        log (sprintf "linear probe %-12s test %.4f (train %.4f)" name r.TestAccuracy r.TrainAccuracy)
        r.TestAccuracy
    model.eval ()
    let pre = probe "pretrained" (fun x -> model.Features(x, false))
    use randomModel = MaskedAutoencoder.Create(config, 1L)
    randomModel.eval ()
    let rnd = probe "random-init" (fun x -> randomModel.Features(x, false))
    let raw = probe "raw pixels" (fun x -> x.flatten(1L))
    // the point of it: 10 labels per class, pretrained encoder fine-tuned vs from scratch vs linear probe
    let few =
        FewLabels.run model (InMemoryDataset(train.Images, train.Labels)) (InMemoryDataset(test.Images, test.Labels))
            FewLabels.defaults CancellationToken.None
    log (sprintf "%d labels per class (%d samples): fine-tuned pretrained %.4f, from scratch %.4f, linear probe %.4f"
             few.LabelsPerClass few.TrainSamples few.Pretrained few.Scratch few.LinearProbe)
    let json = JsonObject()
    json.["probe_pretrained"] <- JsonValue.Create(Math.Round(pre, 4))
    json.["probe_random_init"] <- JsonValue.Create(Math.Round(rnd, 4))
    json.["probe_raw_pixels"] <- JsonValue.Create(Math.Round(raw, 4))
    json.["few_labels_per_class"] <- JsonValue.Create few.LabelsPerClass
    json.["few_labels_pretrained"] <- JsonValue.Create(Math.Round(few.Pretrained, 4))
    json.["few_labels_scratch"] <- JsonValue.Create(Math.Round(few.Scratch, 4))
    json.["few_labels_linear_probe"] <- JsonValue.Create(Math.Round(few.LinearProbe, 4))
    json.["pretrain_steps"] <- JsonValue.Create result.Steps
    json.["final_loss"] <- JsonValue.Create(Math.Round(result.FinalLoss, 4))
    json.["seconds"] <- JsonValue.Create(int clock.Elapsed.TotalSeconds)
    json.["checkpoint"] <- JsonValue.Create ckpt
    json.["reconstruction_png"] <- JsonValue.Create png
    printfn "%s" (json.ToJsonString())
    0
