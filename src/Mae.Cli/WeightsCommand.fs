/// `mae import` and `mae export`: weights from and to the PyTorch world — the reference MAE's
/// `torch.save` checkpoints ({'model': state_dict}, full or encoder-only) and HuggingFace ViTMAE
/// safetensors — as Mae checkpoints (Mae.PyTorch).
module Mae.Cli.WeightsCommand

open System
open System.CommandLine
open System.IO
open System.Text.Json.Nodes
open TorchSharp
open Mae
open Mae.Cli.Output
open Mae.Cli.Options

/// `mae import FILE --out MODEL.ckpt`.
let createImport () =
    let cmd =
        Command(
            "import",
            "Read a PyTorch MAE (facebookresearch/mae's .pth: {'model': state_dict}, full or encoder-only; HuggingFace ViTMAE .safetensors; or, with --modality video, a VideoMAE pretraining checkpoint) into a Mae checkpoint. "
            + "The configuration is read from the tensors' shapes (heads from the preset of the same shape, or --heads), or given with --preset (required for video: VideoMAE's files do not record the clip size). "
            + "Exit codes: 0 done, 1 failure (e.g. the file does not exist or is not a state dict), 2 bad arguments (e.g. weights that do not fit --preset)."
        )
    let file = Argument<string>("FILE")
    file.Description <- "The .pth/.pt/.bin (torch.save) or .safetensors file."
    let out =
        let o = create<string> "--out" "The Mae checkpoint to write (atomically)." None |> named "PATH"
        o.Required <- true
        o
    let weightModalities = [| "image"; "video" |]
    let modality =
        create "--modality" "image (the reference MAE's or HuggingFace ViTMAE's names) or video (VideoMAE's)." (Some "image")
        |> check "image or video" (fun v -> Array.contains v weightModalities)
        |> named "image|video"
    let presets = Array.append (MaeConfig.namesFor "image") (MaeConfig.namesFor "video") |> Array.distinct
    let preset =
        create<string> "--preset" ("The model's whole configuration: image " + String.Join(", ", MaeConfig.namesFor "image") + " (default: read from the shapes); video " + String.Join(", ", MaeConfig.namesFor "video") + " (required).") None
        |> check ("one of: " + String.Join(", ", presets)) (fun v -> Array.contains ((string v).ToLowerInvariant()) presets)
        |> named "NAME"
    let heads = nonNegative "--heads" "Encoder attention heads when read from the shapes (0: the preset of the same shape's, else 64 channels per head)." 0
    let decoderHeads =
        nonNegative "--decoder-heads" "Decoder attention heads when read from the shapes (0: the preset of the same shape's, else 32 channels per head)." 0
    let normPix =
        create "--norm-pix-loss" "Whether the model's loss normalises each target patch (MAE's pretraining checkpoints: true; its visualize checkpoints: false)." (Some true)
    let json = json ()
    cmd.Arguments.Add file
    for o in [ out :> Option; modality; preset; heads; decoderHeads; normPix; json ] do
        cmd.Options.Add o
    cmd.SetAction(
        action (fun parsed ->
            let ui = Ui(parsed.GetValue json)
            let path = Path.GetFullPath(parsed.GetValue file)
            let target = Path.GetFullPath(parsed.GetValue out)
            let modalityName = parsed.GetValue modality
            let given =
                match parsed.GetValue preset with
                | null when modalityName = "video" ->
                    usage "--preset" "missing" ("a video preset (" + String.Join(", ", MaeConfig.namesFor "video") + "): VideoMAE's files do not record the clip size")
                | null -> None
                | name ->
                    try Some(MaeConfig.ofModality modalityName name)
                    with :? ArgumentException -> usage "--preset" name (sprintf "one of %s for --modality %s" (String.Join(", ", MaeConfig.namesFor modalityName)) modalityName)
            let sd = ui.Step(sprintf "reading %s" path, fun () -> PyTorch.readReference path)
            try
                let config =
                    match given with
                    | Some c -> c
                    | None ->
                        if sd |> Array.exists (fun (n, t) -> n = "patch_embed.proj.weight" && t.dim() = 5L) then
                            usage "--modality" modalityName "video with a video --preset: the file holds a video MAE (a 3D patch embedding)"
                        try PyTorch.inferConfig sd (parsed.GetValue heads) (parsed.GetValue decoderHeads)
                        with :? ArgumentException as e -> usage "FILE" (sprintf "\"%s\"" path) (sprintf "the weights of a reference image MAE (%s)" (message e))
                let config = { config with NormPixLoss = parsed.GetValue normPix }
                use model = new MaskedAutoencoder(config)
                let imported =
                    try PyTorch.loadInto model sd
                    with :? ArgumentException as e ->
                        usage (if given.IsSome then "--preset" else "FILE") (sprintf "\"%s\"" (if given.IsSome then parsed.GetValue preset else path))
                            (sprintf "weights that fit the model: %s" (message e))
                let extra = JsonObject()
                extra.["importedFrom"] <- JsonValue.Create path
                extra.["decoderFromFile"] <- JsonValue.Create imported.Decoder
                Checkpoint.save target model None None { Config = config; Iteration = 0; Step = 0; Epoch = 0; Extra = extra }
                let total, encoder = InfoCommand.parameterCounts model
                let input =
                    match config.Input with
                    | Image image ->
                        sprintf "image %dx%d, patch %dx%d, %d channel(s)"
                            (fst image.ImageSize) (snd image.ImageSize) (fst image.PatchSize) (snd image.PatchSize) image.Channels
                    | Video v ->
                        sprintf "video %d frames of %dx%d, tubelet %dx%dx%d, %d channel(s)"
                            v.Frames (fst v.FrameSize) (snd v.FrameSize) v.TubeletSize (fst v.PatchSize) (snd v.PatchSize) v.Channels
                    | other -> other.Name
                ui.Summary(
                    "imported",
                    [ "from", path
                      "checkpoint", target
                      "model", sprintf "%s; encoder %d x %d (%d heads), decoder %d x %d (%d heads)"
                                   input config.EmbedDim config.Depth config.Heads config.DecoderEmbedDim config.DecoderDepth config.DecoderHeads
                      "tensors", sprintf "%d loaded (%d parameters, encoder %d)" imported.Tensors total encoder
                      "decoder", (if imported.Decoder then "from the file" else "not in the file: initial weights (encoder-only checkpoint)") ]
                )
                ui.Result(
                    jsonObject
                        [ "checkpoint", JsonValue.Create target
                          "source", JsonValue.Create path
                          "tensors", JsonValue.Create imported.Tensors
                          "decoder_from_file", JsonValue.Create imported.Decoder
                          "config", ConfigJson.toJson config ]
                )
                0
            finally
                for _, t in sd do t.Dispose())
    )
    cmd

/// `mae export --checkpoint MODEL.ckpt --to FILE`.
let createExport () =
    let cmd =
        Command(
            "export",
            "Write a Mae checkpoint's image MAE for PyTorch: .pth/.pt/.bin as torch.save({'model': state_dict}) with the reference MAE's names, or .safetensors with HuggingFace ViTMAE's names; a video MAE with VideoMAE's names in either. "
            + "Exit codes: 0 done, 1 failure (e.g. the checkpoint does not exist), 2 bad arguments."
        )
    let checkpoint = checkpoint ()
    let target =
        let o =
            create<string> "--to" "The file to write (atomically): FILE.pth, FILE.pt, FILE.bin or FILE.safetensors." None
            |> check "a file ending in .pth, .pt, .bin or .safetensors" (fun v ->
                Array.contains (Path.GetExtension(string v).ToLowerInvariant()) [| ".pth"; ".pt"; ".bin"; ".safetensors" |])
            |> named "FILE"
        o.Required <- true
        o
    let encoderOnly = create "--encoder-only" "Write the encoder alone, as MAE's mae_pretrain_vit_*.pth (no decoder, no mask token)." None
    let json = json ()
    for o in [ checkpoint :> Option; target; encoderOnly; json ] do
        cmd.Options.Add o
    cmd.SetAction(
        action (fun parsed ->
            let ui = Ui(parsed.GetValue json)
            let path = Path.GetFullPath(parsed.GetValue checkpoint)
            let file = Path.GetFullPath(parsed.GetValue target)
            let model, meta = Checkpoint.loadModel path torch.CPU
            use model = model
            if meta.Config.Modality <> "image" && meta.Config.Modality <> "video" then
                usage "--checkpoint" (sprintf "a checkpoint of modality %s" meta.Config.Modality) "an image MAE (the reference MAE's layout) or a video MAE (VideoMAE's)"
            let only = parsed.GetValue encoderOnly
            ui.Step(sprintf "writing %s" file, fun () -> PyTorch.export file model only)
            let tensors = if only then model.EncoderParameterNames.Length else Seq.length (model.parameters ())
            let format =
                match PyTorch.formatFor file, meta.Config.Modality with
                | PyTorch.TorchSave, "video" -> "torch.save, VideoMAE's names"
                | PyTorch.Safetensors, "video" -> "safetensors, VideoMAE's names"
                | PyTorch.TorchSave, _ -> "torch.save, the reference's names"
                | PyTorch.Safetensors, _ -> "safetensors, HuggingFace ViTMAE's names"
            ui.Summary("exported", [ "checkpoint", path; "file", file; "format", format; "tensors", sprintf "%d%s" tensors (if only then " (encoder only)" else "") ])
            ui.Result(
                jsonObject
                    [ "checkpoint", JsonValue.Create path
                      "file", JsonValue.Create file
                      "tensors", JsonValue.Create tensors
                      "encoder_only", JsonValue.Create only ]
            )
            0)
    )
    cmd
