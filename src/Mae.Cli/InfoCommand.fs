/// `mae info`: what a checkpoint holds: the model's configuration, its parameter counts, and how
/// far its training went.
module Mae.Cli.InfoCommand

open System
open System.CommandLine
open System.IO
open System.Text.Json.Nodes
open TorchSharp
open Mae
open Mae.Cli.Output
open Mae.Cli.Options

/// Parameters of `model` in total and in its encoder alone.
let parameterCounts (model: MaskedAutoencoder) =
    let encoder = set model.EncoderParameterNames
    let all = model.named_parameters () |> Seq.map (fun struct (n, p) -> n, p.numel ()) |> Array.ofSeq
    Array.sumBy snd all, all |> Array.filter (fun (n, _) -> encoder.Contains n) |> Array.sumBy snd

/// A JSON value as a table cell: strings without their quotes.
let private cell (node: JsonNode) =
    match node with
    | :? JsonValue as v when v.GetValueKind() = Text.Json.JsonValueKind.String -> v.GetValue<string>()
    | null -> "null"
    | n -> n.ToJsonString()

/// Builds the command.
let create () =
    let cmd =
        Command(
            "info",
            "Show a checkpoint's modality, model configuration, parameter counts, step and epoch. Exit codes: 0 done, 1 failure (e.g. the checkpoint does not exist or is not a Mae checkpoint)."
        )
    let checkpoint, json = checkpoint (), json ()
    cmd.Options.Add checkpoint
    cmd.Options.Add json
    cmd.SetAction(
        action (fun parsed ->
            let ui = Ui(parsed.GetValue json)
            let path = Path.GetFullPath(parsed.GetValue checkpoint)
            let model, meta = Checkpoint.loadModel path torch.CPU
            use model = model
            let total, encoder = parameterCounts model
            let config = ConfigJson.toJson meta.Config
            let rows =
                [ "checkpoint", path
                  "modality", meta.Config.Modality
                  "parameters", sprintf "%d (encoder %d)" total encoder
                  "step", string meta.Step
                  "epoch", string meta.Epoch
                  "iteration", string meta.Iteration ]
                @ [ for kv in config do
                        match kv.Value with
                        | _ when kv.Key = "modality" -> ()
                        | :? JsonObject as o -> for kv2 in o -> kv.Key + "." + kv2.Key, cell kv2.Value
                        | v -> yield kv.Key, cell v ]
                @ [ for kv in meta.Extra -> "training " + kv.Key, cell kv.Value ]
            ui.Summary("checkpoint", rows)
            ui.Result(
                jsonObject
                    [ "checkpoint", JsonValue.Create path
                      "modality", JsonValue.Create meta.Config.Modality
                      "parameters", JsonValue.Create total
                      "encoder_parameters", JsonValue.Create encoder
                      "step", JsonValue.Create meta.Step
                      "epoch", JsonValue.Create meta.Epoch
                      "iteration", JsonValue.Create meta.Iteration
                      "config", config
                      "training", meta.Extra.DeepClone() ]
            )
            0)
    )
    cmd
