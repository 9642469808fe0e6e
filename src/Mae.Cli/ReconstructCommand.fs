/// `mae reconstruct`: a PNG of test images, their masked input and the checkpoint's
/// reconstruction (one row per image).
module Mae.Cli.ReconstructCommand

open System
open System.CommandLine
open System.IO
open System.Text.Json.Nodes
open TorchSharp
open Mae
open Mae.Cli.Output
open Mae.Cli.Options

/// Builds the command.
let create () =
    let cmd =
        Command(
            "reconstruct",
            "Write a PNG of the first --count test samples: for images one row each with the original, the masked input (hidden patches grey) and the checkpoint's reconstruction; for video a strip of frames, those three rows per clip. "
            + "Exit codes: 0 done, 1 failure (e.g. the checkpoint does not exist), 2 bad arguments."
        )
    let checkpoint, modality, data = checkpoint (), modality (), data ()
    let out = create<string> "--out" "The PNG file to write." None |> named "FILE"
    out.Required <- true
    let count = positive "--count" "How many test images (the first ones)." 8
    let seed = create "--seed" "Seed of the masks." (Some 123L)
    let device, json = device (), json ()
    let dataOptions = DataOptions()
    for o in [ checkpoint :> Option; modality; data; out; count; seed; device; json] do
        cmd.Options.Add o
    dataOptions.AddTo cmd
    cmd.SetAction(
        action (fun parsed ->
            let ui = Ui(parsed.GetValue json)
            let dev = resolveDevice (parsed.GetValue device)
            let path = Path.GetFullPath(parsed.GetValue checkpoint)
            let png = Path.GetFullPath(parsed.GetValue out)
            let model, meta = Checkpoint.loadModel path dev
            use model = model
            use generator = new Generator(uint64 (parsed.GetValue seed), torch.CPU)
            let k =
                match meta.Config.Input with
                | TimeSeries series ->
                    let recorded = recordedData meta
                    let splits = seriesData ui (dataFrom "weather" parsed data recorded) (dataOptions.Read(parsed, recorded)) (Some series.Length) 0
                    checkSeriesFits meta.Config splits
                    let k = min (parsed.GetValue count) (int splits.Test.Inputs.shape.[0])
                    let c = int64 splits.Columns.Length
                    let toOriginal (x: Tensor) =
                        x * torch.tensor(splits.Std).reshape(1L, c, 1L).``to``(x.device) + torch.tensor(splits.Mean).reshape(1L, c, 1L).``to``(x.device)
                    ui.Step(
                        "reconstructing",
                        fun () -> Visualize.series png model generator toOriginal splits.Columns (splits.Test.Inputs.narrow(0L, 0L, int64 k))
                    )
                    k
                | Video video ->
                    let recorded = recordedData meta
                    let _, test = videoData ui (dataFrom "mnist" parsed data recorded) video (dataOptions.Read(parsed, recorded)) 1 (parsed.GetValue count)
                    let k = min (parsed.GetValue count) test.Count
                    ui.Step(
                        "reconstructing",
                        fun () ->
                            use clips = torch.stack([| for i in 0 .. k - 1 -> (test.Read i).Input |], 0L)
                            Visualize.reconstruction png model generator id clips
                    )
                    k
                | Image _ ->
                    // one training image is enough: only the test split is drawn
                    let _, test, toUnit = loadData ui (parsed.GetValue data) 1 (parsed.GetValue count) meta.Config.Image.ImageSize
                    checkFits meta.Config test
                    let k = min (parsed.GetValue count) test.Count
                    ui.Step(
                        "reconstructing",
                        fun () -> Visualize.reconstruction png model generator toUnit (test.Images.narrow(0L, 0L, int64 k))
                    )
                    k
            ui.Summary(
                "reconstruction",
                [ "png", png; "samples", string k; "mask ratio", sprintf "%g" meta.Config.MaskRatio; "checkpoint", path ]
            )
            ui.Result(
                jsonObject
                    [ "png", JsonValue.Create png
                      "samples", JsonValue.Create k
                      "mask_ratio", number meta.Config.MaskRatio
                      "checkpoint", JsonValue.Create path ]
            )
            0)
    )
    cmd
