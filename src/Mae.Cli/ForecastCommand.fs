/// `mae forecast`: the next --horizon steps of a series from a pretrained series encoder (frozen,
/// with PatchTST's flatten head trained on the training windows), next to the naive last-value
/// forecast and a DLinear-style linear model, on the same test windows.
module Mae.Cli.ForecastCommand

open System
open System.CommandLine
open System.Diagnostics
open System.Text.Json.Nodes
open Mae
open Mae.Data
open Mae.Cli.Output
open Mae.Cli.Options

let create () =
    let cmd =
        Command(
            "forecast",
            "Forecast the next --horizon steps of a series with the checkpoint's encoder (frozen) and a flatten head, against the last value repeated and a DLinear-style linear model: MSE and MAE on the test windows, in standardised units. "
            + "Exit codes: 0 done, 1 failure, 2 bad arguments."
        )
    let checkpoint, data = checkpoint (), data ()
    let horizon = positive "--horizon" "Steps to forecast after each window." 7
    let epochs = positive "--forecast-epochs" "Epochs of the flatten head's (and the linear baseline's) training." 30
    let seed = create "--seed" "Seed of the heads and the data order." (Some 0L)
    let device, threads, json = device (), threads (), json ()
    let dataOptions = DataOptions()
    for o in [ checkpoint :> Option; data; horizon; epochs; seed; device; threads; json ] do
        cmd.Options.Add o
    dataOptions.AddTo cmd
    cmd.SetAction(
        action (fun parsed ->
            let clock = Stopwatch.StartNew()
            let ui = Ui(parsed.GetValue json)
            let _, path, model, meta = loadCheckpoint (parsed.GetValue device) (parsed.GetValue threads) (parsed.GetValue checkpoint)
            use model = model
            let series =
                match meta.Config.Input with
                | TimeSeries s -> s
                | other -> usage "--checkpoint" (sprintf "a %s model" other.Name) "a time-series model"
            let h = parsed.GetValue horizon
            let recorded = recordedData meta
            let splits = seriesData ui (dataFrom "weather" parsed data recorded) (dataOptions.Read(parsed, recorded)) (Some series.Length) h
            checkSeriesFits meta.Config splits
            let options = { ForecastOptions.defaults with Horizon = h; Epochs = parsed.GetValue epochs; Seed = parsed.GetValue seed }
            let train, test = splits.Train, splits.Test
            let naive = Forecast.naive test.Inputs test.Future
            let linear = ui.Step("linear baseline (DLinear)", fun () -> Forecast.linear options train.Inputs train.Future test.Inputs test.Future)
            let encoder =
                ui.Step("flatten head on the pretrained encoder", fun () -> Forecast.withEncoder model options train.Inputs train.Future test.Inputs test.Future)
            use randomModel = MaskedAutoencoder.Create(meta.Config, parsed.GetValue seed, Runtime.deviceOf model)
            let random =
                ui.Step("flatten head on a random-init encoder", fun () -> Forecast.withEncoder randomModel options train.Inputs train.Future test.Inputs test.Future)
            let seconds = clock.Elapsed.TotalSeconds
            let line (e: ForecastErrors) = sprintf "MSE %.4f  MAE %.4f" e.Mse e.Mae
            ui.Summary(
                sprintf "forecast of %d steps, %d train / %d test windows (%s)" h (int train.Inputs.shape.[0]) (int test.Inputs.shape.[0])
                    (if series.ChannelIndependent then "channel-independent" else "channel-mixed"),
                [ "pretrained encoder + head", line encoder
                  "random-init encoder + head", line random
                  "linear (DLinear)", line linear
                  "naive (last value)", line naive
                  "checkpoint", sprintf "%s (step %d)" path meta.Step
                  "seconds", sprintf "%.1f" seconds ]
            )
            let pair (e: ForecastErrors) = jsonObject [ "mse", number e.Mse; "mae", number e.Mae ]
            ui.Result(
                jsonObject
                    [ "horizon", JsonValue.Create h
                      "pretrained", pair encoder :> JsonNode
                      "random_init", pair random :> JsonNode
                      "linear", pair linear :> JsonNode
                      "naive", pair naive :> JsonNode
                      "train_windows", JsonValue.Create(int train.Inputs.shape.[0])
                      "test_windows", JsonValue.Create(int test.Inputs.shape.[0])
                      "checkpoint", JsonValue.Create path
                      "seconds", number seconds ]
            )
            0)
    )
    cmd
