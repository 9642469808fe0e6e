/// `mae probe`: linear-probe accuracy of a checkpoint's encoder, next to that of a randomly
/// initialised encoder of the same shape and of raw pixels (MAE's recipe: frozen features,
/// BatchNorm without affine parameters, one linear layer).
module Mae.Cli.ProbeCommand

open System
open System.CommandLine
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open TorchSharp
open Mae
open Mae.Data
open Mae.Cli.Output
open Mae.Cli.Options

/// Builds the command.
let create () =
    let cmd =
        Command(
            "probe",
            "Linear-probe accuracy (and balanced accuracy) on --data's test samples of the checkpoint's encoder, of a random-init encoder of the same shape, and of the raw inputs (pixels, clips, windows). "
            + "Exit codes: 0 done, 1 failure (e.g. the checkpoint does not exist), 2 bad arguments."
        )
    let checkpoint, modality, data = checkpoint (), modality (), data ()
    let probeEpochs = positive "--probe-epochs" "Epochs of the linear probe's training." 20
    let batchSize = positive "--batch-size" "Images per batch when computing features." 512
    let seed =
        create "--seed" "Seed of the random-init encoder and of the probe (0, like mae pretrain's default, gives the pretrained model's own initial weights)." (Some 0L)
    let trainLimit, testLimit, device, threads, json = trainLimit (), testLimit (), device (), threads (), json ()
    let dataOptions = DataOptions()
    for o in [ checkpoint :> Option; modality; data; probeEpochs; batchSize; seed; trainLimit; testLimit; device; threads; json] do
        cmd.Options.Add o
    dataOptions.AddTo cmd
    cmd.SetAction(
        action (fun parsed ->
            let clock = Stopwatch.StartNew()
            let ui = Ui(parsed.GetValue json)
            let dev, path, model, meta = loadCheckpoint (parsed.GetValue device) (parsed.GetValue threads) (parsed.GetValue checkpoint)
            use model = model
            let seed = parsed.GetValue seed
            let options = { Probe.defaultLinearOptions with Epochs = parsed.GetValue probeEpochs; Seed = seed }
            // an image folder is read on demand at the model's size: only the features are held in memory
            let recorded = recordedData meta
            let dataName = dataFrom (match meta.Config.Input with TimeSeries _ -> "weather" | _ -> "mnist") parsed data recorded
            let data = evaluationData ui dataName (parsed.GetValue trainLimit) (parsed.GetValue testLimit) (dataOptions.Read(parsed, recorded)) meta.Config
            if data.Classes < 2 then
                usage "--data" (sprintf "data with %d class" data.Classes) "labelled data with at least 2 classes (a time series needs --label-column)"
            let loader = LoaderOptions.evaluation (parsed.GetValue batchSize) data.Transform
            let classes, trainCount, testCount = data.Classes, data.Train.Count, data.Test.Count
            let probeOf features = Probe.linearOnData options classes features dev loader data.Train data.Test
            let probe (name: string) (features: Tensor -> Tensor) =
                ui.Step(
                    sprintf "linear probe: %s" name,
                    fun () ->
                        let r = probeOf features
                        ui.Log(sprintf "linear probe %-12s test %.4f (balanced %.4f; train %.4f)" name r.TestAccuracy r.TestBalancedAccuracy r.TrainAccuracy)
                        r
                )
            model.eval ()
            let pretrained = probe "pretrained" (fun x -> model.Features(x, false))
            use randomModel = MaskedAutoencoder.Create(meta.Config, seed, dev)
            randomModel.eval ()
            let random = probe "random-init" (fun x -> randomModel.Features(x, false))
            let raw = probe (match meta.Config.Input with TimeSeries _ -> "raw windows" | _ -> "raw pixels") (fun x -> x.flatten(1L))
            let seconds = clock.Elapsed.TotalSeconds
            ui.Summary(
                sprintf "linear probe, %d classes, %d train / %d test samples" classes trainCount testCount,
                [ "pretrained encoder", sprintf "%.4f (balanced %.4f)" pretrained.TestAccuracy pretrained.TestBalancedAccuracy
                  "random-init encoder", sprintf "%.4f (balanced %.4f)" random.TestAccuracy random.TestBalancedAccuracy
                  (match meta.Config.Input with TimeSeries _ -> "raw windows" | _ -> "raw pixels"), sprintf "%.4f (balanced %.4f)" raw.TestAccuracy raw.TestBalancedAccuracy
                  "checkpoint", sprintf "%s (step %d)" path meta.Step
                  "seconds", sprintf "%.1f" seconds ]
            )
            ui.Result(
                jsonObject
                    [ "probe_pretrained", number pretrained.TestAccuracy
                      "probe_random_init", number random.TestAccuracy
                      "probe_raw_pixels", number raw.TestAccuracy
                      "balanced_pretrained", number pretrained.TestBalancedAccuracy
                      "balanced_random_init", number random.TestBalancedAccuracy
                      "balanced_raw", number raw.TestBalancedAccuracy
                      "train_accuracy_pretrained", number pretrained.TrainAccuracy
                      "train_images", JsonValue.Create trainCount
                      "test_images", JsonValue.Create testCount
                      "classes", JsonValue.Create classes
                      "checkpoint", JsonValue.Create path
                      "step", JsonValue.Create meta.Step
                      "seconds", number seconds ]
            )
            0)
    )
    cmd
