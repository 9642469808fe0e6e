/// Time series: CSV reading and its errors, windows and their statistics, the series model (both
/// tokenisations), a short run that learns, forecasting against the baselines, the plot.
module Mae.Tests.Unit.SeriesTests

open System
open System.IO
open Expecto
open TorchSharp
open Mae
open Mae.Data
open Mae.Tests.Unit.Common

/// A CSV of two groups ("a", "b") of `rows` steps: three sinusoids of different periods plus
/// noise, and a label "up"/"down" saying whether the slow one rises at that step.
let sinusoidCsv (path: string) (rows: int) =
    let rng = Random(3)
    use w = new StreamWriter(path)
    w.WriteLine "t,site,slow,fast,mixed,state"
    for site in [ "a"; "b" ] do
        let phase = if site = "a" then 0.0 else 1.3
        for t in 0 .. rows - 1 do
            let slow = sin (float t / 9.0 + phase)
            let fast = sin (float t / 2.0 + phase) * 0.5
            let mixed = slow * fast + 0.1 * (rng.NextDouble() - 0.5)
            let state = if cos (float t / 9.0 + phase) > 0.0 then "up" else "down"
            w.WriteLine(sprintf "%d,%s,%.5f,%.5f,%.5f,%s" t site slow fast mixed state)

let private csvOptions = { TimeColumn = "t"; Columns = null; LabelColumn = "state"; GroupColumn = "site" }

let private tinyFor (c: int) (t: int) (independent: bool) =
    let cfg = MaeConfig.withSeries c t MaeConfig.seriesTiny
    { cfg with Input = TimeSeries { cfg.Series with ChannelIndependent = independent } }

/// README's F# series example (the lines between the markers; ReadmeTests compares them), run on
/// the committed CSV fixture.
let readmeSeriesExample (path: string) (csvOptions: SeriesCsvOptions) (epochs: int) =
    // <readme>
    let table = SeriesCsv.read path csvOptions // a time column, value columns, a label, a group column
    let splits = SeriesWindows.split table { SeriesWindowOptions.defaults with Window = 32; Stride = 2; Horizon = 4 }
    use model = MaskedAutoencoder.Create(MaeConfig.withSeries splits.Columns.Length 32 MaeConfig.seriesTiny, 0L)
    let options = { PretrainOptions.defaults with Epochs = epochs; BatchSize = 64; BaseLr = 1e-3 }
    Pretrain.runOn model splits.Train.Windows options null ignore Threading.CancellationToken.None |> ignore
    let features (x: Tensor) = model.Features(x, false) // no masking: the segment codes side by side
    let loader = LoaderOptions.evaluation 256 Transforms.identity
    let probe = Probe.linearOnData Probe.defaultLinearOptions splits.ClassNames.Length features torch.CPU loader splits.Train.Windows splits.Test.Windows
    let head = { ForecastOptions.defaults with Horizon = 4 } // PatchTST's flatten head on the frozen encoder
    let forecast = Forecast.withEncoder model head splits.Train.Inputs splits.Train.Future splits.Test.Inputs splits.Test.Future
    let naive = Forecast.naive splits.Test.Inputs splits.Test.Future
    use g = new Generator(1UL, torch.CPU)
    Visualize.series "series.png" model g id splits.Columns (splits.Test.Inputs.narrow(0L, 0L, 1L)) // hidden segments shaded
    printfn "probe %.3f; forecast MSE %.3f (last value: %.3f)" probe.TestAccuracy forecast.Mse naive.Mse
    // </readme>
    probe, forecast, naive

let tests =
    testList "time series" [
        test "README's F# series example runs on the committed CSV fixture" {
            let dir = Directory.GetCurrentDirectory()
            use tmp = new TempDir()
            Directory.SetCurrentDirectory tmp.Path
            try
                let probe, forecast, naive = readmeSeriesExample (fixturePath "series-small.csv") csvOptions 4
                Expect.isGreaterThan probe.TestAccuracy 0.5 "a probe better than chance on up/down"
                Expect.isLessThan forecast.Mse naive.Mse "the forecast beats the last value"
                Expect.isTrue (File.Exists(tmp.File "series.png")) "the plot"
            finally
                Directory.SetCurrentDirectory dir
        }

        test "a CSV is read as its header says: default columns are the numeric ones" {
            use dir = new TempDir()
            let path = dir.File "s.csv"
            sinusoidCsv path 50
            let table = SeriesCsv.read path csvOptions
            Expect.equal table.Columns [| "slow"; "fast"; "mixed" |] "the numeric columns other than time, label and group"
            Expect.equal table.Rows 100 "rows"
            Expect.equal (table.Groups |> Array.distinct) [| "a"; "b" |] "groups"
            Expect.equal table.Labels.[0] "up" "labels"
        }

        test "CSV errors name the file, the row and the column; NaN and empty cells are rejected" {
            use dir = new TempDir()
            let path = dir.File "bad.csv"
            File.WriteAllText(path, "t,x,y\n0,1.0,2.0\n1,abc,3.0\n")
            let e = expectExn<InvalidDataException> "not a number" (fun () -> SeriesCsv.read path { csvOptions with LabelColumn = null; GroupColumn = null; Columns = [| "x"; "y" |] } |> ignore)
            Expect.stringContains e.Message path "names the file"
            Expect.stringContains e.Message "row 2 (line 3), column \"x\"" "names the row, line and column"
            Expect.stringContains e.Message "\"abc\"" "shows the cell"
            File.WriteAllText(path, "t,x\n0,1.0\n1,NaN\n")
            let e = expectExn<InvalidDataException> "NaN" (fun () -> SeriesCsv.read path SeriesCsvOptions.defaults |> ignore)
            Expect.stringContains e.Message "NaN" "NaN rejected"
            File.WriteAllText(path, "t,x\n0,1.0\n1,\n")
            let e = expectExn<InvalidDataException> "empty" (fun () -> SeriesCsv.read path SeriesCsvOptions.defaults |> ignore)
            Expect.stringContains e.Message "an empty cell" "empty cell rejected"
            let e = expectExn<InvalidDataException> "missing column" (fun () -> SeriesCsv.read path { SeriesCsvOptions.defaults with Columns = [| "z" |] } |> ignore)
            Expect.stringContains e.Message "no value column \"z\" (the columns are: t, x)" "names the missing column and the ones there are"
        }

        test "windows: a chronological split per group, statistics of the training rows only, the label of the last step" {
            use dir = new TempDir()
            let path = dir.File "s.csv"
            sinusoidCsv path 200
            let table = SeriesCsv.read path csvOptions
            let splits = SeriesWindows.split table { SeriesWindowOptions.defaults with Window = 16; Stride = 4; Horizon = 3 }
            // per group: 140 train rows -> (140 - 19) / 4 + 1 = 31 windows
            Expect.equal (shape splits.Train.Inputs) [ 62L; 3L; 16L ] "train windows [W, C, T]"
            Expect.equal (shape splits.Train.Future) [ 62L; 3L; 3L ] "their next 3 steps"
            let trainRows = [| for r in 0 .. 399 do if (r % 200) < 140 then yield r |]
            let mean0 = trainRows |> Array.averageBy (fun r -> float table.Values.[r * 3])
            Expect.floatClose Accuracy.medium (float splits.Mean.[0]) mean0 "mean of the training rows"
            // the first window of group a: rows 0..15, label of row 15; values standardised
            let x00 = splits.Train.Inputs.[0L, 0L, 0L].item<float32>() |> float
            Expect.floatClose Accuracy.medium x00 ((float table.Values.[0] - mean0) / float splits.Std.[0]) "standardised with the training statistics"
            Expect.equal (splits.Train.Labels.[0L].item<int64>()) (int64 (Array.IndexOf(splits.ClassNames, table.Labels.[15]))) "label of the last step"
            Expect.equal splits.ClassNames [| "down"; "up" |] "classes sorted"
            let held = SeriesWindows.split table { SeriesWindowOptions.defaults with Window = 16; Stride = 4; TestGroups = [| "b" |] }
            Expect.equal (shape held.Test.Inputs).[0] ((200 - 16) / 4 + 1 |> int64) "the held-out group is the whole test split"
            expectArg "Window" "a window that fits the" (fun () -> SeriesWindows.split table { SeriesWindowOptions.defaults with Window = 100 }) |> ignore
        }

        test "both tokenisations: shapes, features, a series shorter than one segment refused naming Length" {
            use _ = torch.NewDisposeScope()
            for independent in [ true; false ] do
                use model = MaskedAutoencoder.Create(tinyFor 3 32 independent, 0L)
                let x = torch.randn(5L, 3L, 32L)
                use g = gen 1
                let out = model.Forward(x, g)
                let rows = if independent then 15L else 5L
                Expect.equal (shape out.Mask) [ rows; 4L ] "mask [rows, L]"
                Expect.equal (shape out.Pred) [ rows; 4L; (if independent then 8L else 24L) ] "predictions"
                Expect.equal (shape (model.Features(x, false))) [ 5L; int64 model.FeatureSize ] "features [N, FeatureSize]"
                if independent then
                    let m = out.Mask.reshape(5L, 3L, 4L)
                    Expect.isTrue (same (m.select(1L, 0L)) (m.select(1L, 2L))) "random masking: one mask per sample for all its channels"
            expectArg "Length" "at least one segment" (fun () -> MaeConfig.validate (tinyFor 3 5 true)) |> ignore
            use model = MaskedAutoencoder.Create(tinyFor 3 32 true, 0L)
            expectArg "batch" "[N, 3, 32]" (fun () -> model.Forward(torch.randn(2L, 3L, 7L), gen 1)) |> ignore
            expectArg "Masking" "channel-independent" (fun () -> MaeConfig.validate { tinyFor 3 32 false with Masking = RandomPerChannel 0.5 }) |> ignore
        }

        test "the tiny series model learns sinusoids, and its forecast beats the last value" {
            use dir = new TempDir()
            let path = dir.File "s.csv"
            sinusoidCsv path 400
            let splits = SeriesWindows.split (SeriesCsv.read path csvOptions) { SeriesWindowOptions.defaults with Window = 32; Stride = 2; Horizon = 4 }
            use model = MaskedAutoencoder.Create(tinyFor 3 32 true, 0L)
            let options = { PretrainOptions.defaults with Epochs = 8; BatchSize = 32; BaseLr = 1e-3; WarmupEpochs = 1.0 }
            let result = Pretrain.runOn model splits.Train.Windows options null ignore Threading.CancellationToken.None
            let l = result.EpochLosses
            Expect.isLessThan l.[l.Length - 1] (l.[0] * 0.7) (sprintf "the loss falls (%A)" l)
            let fo = { ForecastOptions.defaults with Horizon = 4; Epochs = 20 }
            let encoder = Forecast.withEncoder model fo splits.Train.Inputs splits.Train.Future splits.Test.Inputs splits.Test.Future
            let naive = Forecast.naive splits.Test.Inputs splits.Test.Future
            let linear = Forecast.linear fo splits.Train.Inputs splits.Train.Future splits.Test.Inputs splits.Test.Future
            Expect.isLessThan encoder.Mse naive.Mse (sprintf "encoder + head (%A) beats the last value (%A)" encoder naive)
            Expect.isLessThan linear.Mse naive.Mse (sprintf "DLinear (%A) beats the last value (%A)" linear naive)
            use dirPng = new TempDir()
            use g = gen 2
            Visualize.series (dirPng.File "series.png") model g id splits.Columns (splits.Test.Inputs.narrow(0L, 0L, 2L))
            Expect.isTrue (File.Exists(dirPng.File "series.png")) "the plot is written"
        }

        test "RevIN models train and their forecasts come back in the data's units" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyFor 2 32 true
            use model = MaskedAutoencoder.Create({ cfg with Input = TimeSeries { cfg.Series with RevIN = true } }, 0L)
            Expect.contains (names model) "revin.affine_weight" "RevIN's affine weight is a parameter"
            let x = torch.randn(6L, 2L, 32L) * 50.0 + 1000.0
            let target = model.Target x
            Expect.isLessThan (target.mean().abs().item<float32>()) 0.5f "the target is standardised per window"
            use head = new FlattenHead(model, 3)
            let y: Tensor = head.forward x
            Expect.equal (shape y) [ 6L; 2L; 3L ] "forecast [N, C, H]"
            Expect.isGreaterThan (y.mean().item<float32>()) 500.0f "mapped back to the window's level by RevIN's inverse"
        }
    ]
