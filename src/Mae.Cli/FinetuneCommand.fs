/// `mae finetune --labels-per-class K`: the point of pretraining, measured — the checkpoint's
/// encoder fine-tuned on K labelled samples per class, the same classifier trained from scratch on
/// them, and the linear probe on them, each scored on the whole test split (FewLabels.run).
module Mae.Cli.FinetuneCommand

open System
open System.CommandLine
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open System.Threading
open TorchSharp
open Mae
open Mae.Data
open Mae.Cli.Output
open Mae.Cli.Options

/// Builds the command.
let create () =
    let cmd =
        Command(
            "finetune",
            "Fine-tune the checkpoint's encoder on --labels-per-class K labelled samples per class of --data's training split (a seeded subset), "
            + "next to the same classifier trained from scratch on them and the linear probe on them; reports each one's accuracy on the whole test split. "
            + "Exit codes: 0 done, 1 failure (e.g. the checkpoint does not exist), 2 bad arguments."
        )
    let checkpoint, data = checkpoint (), data ()
    let k = positive "--labels-per-class" "K: labelled training samples per class." FewLabels.defaults.LabelsPerClass
    let epochs = positive "--epochs" "Fine-tuning epochs over the K x classes samples (both classifiers)." FewLabels.defaults.FineTune.Epochs
    let batchSize = positive "--batch-size" "Fine-tuning batch size (at most the subset's size)." FewLabels.defaults.FineTune.BatchSize
    let baseLr =
        create "--base-lr" "Fine-tuning learning rate per 256 samples (scaled by batch size / 256)." (Some FewLabels.defaults.FineTune.BaseLr)
        |> check "a positive number" (fun v -> v > 0.0)
    let layerDecay =
        create "--layer-decay" "Layer-wise learning-rate decay of the pretrained encoder (MAE: 0.65-0.75)." (Some FewLabels.defaults.FineTune.LayerDecay)
        |> check "a number in (0, 1]" (fun v -> v > 0.0 && v <= 1.0)
    let probeEpochs = positive "--probe-epochs" "Epochs of the linear probe on the subset." FewLabels.defaults.Probe.Epochs
    let seed = create "--seed" "Seed of the subset, of the classifiers' new weights and of the data order." (Some 0L)
    let trainLimit, testLimit, device, threads, json = trainLimit (), testLimit (), device (), threads (), json ()
    let dataOptions = DataOptions()
    for o in [ checkpoint :> Option; data; k; epochs; batchSize; baseLr; layerDecay; probeEpochs; seed; trainLimit; testLimit; device; threads; json] do
        cmd.Options.Add o
    dataOptions.AddTo cmd
    cmd.SetAction(
        action (fun parsed ->
            let clock = Stopwatch.StartNew()
            let ui = Ui(parsed.GetValue json)
            let _, path, model, meta = loadCheckpoint (parsed.GetValue device) (parsed.GetValue threads) (parsed.GetValue checkpoint)
            use model = model
            let recorded = recordedData meta
            let dataName = dataFrom (match meta.Config.Input with TimeSeries _ -> "weather" | _ -> "mnist") parsed data recorded
            let data = evaluationData ui dataName (parsed.GetValue trainLimit) (parsed.GetValue testLimit) (dataOptions.Read(parsed, recorded)) meta.Config
            let train, test, transform = data.Train, data.Test, data.Transform
            let options =
                { FewLabels.defaults with
                    LabelsPerClass = parsed.GetValue k
                    Seed = parsed.GetValue seed
                    FineTune =
                        { FewLabels.defaults.FineTune with
                            Epochs = parsed.GetValue epochs
                            BatchSize = parsed.GetValue batchSize
                            BaseLr = parsed.GetValue baseLr
                            LayerDecay = parsed.GetValue layerDecay }
                    Probe = { FewLabels.defaults.Probe with Epochs = parsed.GetValue probeEpochs }
                    Transform = transform }
            // K against the smallest class of the training split, before anything is trained
            let smallest, count = Subsets.smallestClass train
            if options.LabelsPerClass > count then
                usage "--labels-per-class" options.LabelsPerClass
                    (sprintf "at most %d, the training samples of the smallest class \"%s\"" count train.ClassNames.[smallest])
            let r =
                ui.Step(
                    sprintf "fine-tuning on %d labels per class (pretrained, from scratch, linear probe)" options.LabelsPerClass,
                    fun () -> FewLabels.run model train test options CancellationToken.None
                )
            let seconds = clock.Elapsed.TotalSeconds
            ui.Summary(
                sprintf "%d labels per class: %d training samples, %d test samples" r.LabelsPerClass r.TrainSamples r.TestSamples,
                [ "pretrained, fine-tuned", sprintf "%.4f" r.Pretrained
                  "from scratch", sprintf "%.4f" r.Scratch
                  "linear probe", sprintf "%.4f" r.LinearProbe
                  "checkpoint", sprintf "%s (step %d)" path meta.Step
                  "seconds", sprintf "%.1f" seconds ]
            )
            ui.Result(
                jsonObject
                    [ "labels_per_class", JsonValue.Create r.LabelsPerClass
                      "train_samples", JsonValue.Create r.TrainSamples
                      "test_samples", JsonValue.Create r.TestSamples
                      "finetune_pretrained", number r.Pretrained
                      "finetune_scratch", number r.Scratch
                      "linear_probe", number r.LinearProbe
                      "final_loss_pretrained", number (Array.last r.PretrainedLosses)
                      "final_loss_scratch", number (Array.last r.ScratchLosses)
                      "checkpoint", JsonValue.Create path
                      "seconds", number seconds ]
            )
            0)
    )
    cmd
