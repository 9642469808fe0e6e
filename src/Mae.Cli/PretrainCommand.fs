/// `mae pretrain`: pretrains an image MAE on `--data` and keeps a resumable checkpoint in
/// `--out`. Ctrl-C stops after the current step, saves OUT/last.ckpt and exits with code 130
/// (SIGTERM likewise, with code 143).
module Mae.Cli.PretrainCommand

open System
open System.CommandLine
open System.IO
open System.Runtime.InteropServices
open System.Text.Json.Nodes
open System.Threading
open Mae
open Mae.Data
open Mae.Cli.Output
open Mae.Cli.Options

/// Exit code after Ctrl-C (128 + SIGINT, the shell's convention).
let interruptedExitCode = 130

/// Exit code after SIGTERM (128 + SIGTERM).
let terminatedExitCode = 143

/// The preset names of every modality, for --preset's check (each modality checks its own).
let allPresets = Modality.Names |> Array.collect MaeConfig.namesFor |> Array.distinct

/// The preset of `modality` named `preset`, with `maskRatio` (when given) in place of its own; a
/// usage error naming --preset when the modality has no such preset.
let presetConfig (modality: string) (preset: string) (maskRatio: float option) =
    let p =
        try MaeConfig.ofModality modality preset
        with :? ArgumentException -> usage "--preset" preset (sprintf "one of %s for --modality %s" (String.Join(", ", MaeConfig.namesFor modality)) modality)
    match maskRatio with
    | Some r -> { p with Masking = MaskingStrategy.withRatio r p.Masking }
    | None -> p

/// The preset named `preset`, resized to the data's images (C, H, W), with `maskRatio` in place of
/// its own; a usage error naming the option when the data does not fit it.
let imageConfig (preset: string) (maskRatio: float option) (c: int, h: int, w: int) =
    let p = presetConfig "image" preset maskRatio
    let config = MaeConfig.withImage (h, w) p.Image.PatchSize c p
    match MaeConfig.problems config with
    | [||] -> config
    | problems ->
        let ph, pw = p.Image.PatchSize
        let reasons = problems |> Array.map (fun e -> message e) |> String.concat " "
        raise (
            UsageException(
                sprintf "--preset %s (patch %dx%d) does not fit the --data images (%dx%d, %d channel(s)): %s"
                    preset ph pw h w c reasons
            )
        )

/// The option that sets a setting compared on resume (Pretrain.resumeMismatches' names).
let optionOf (setting: string) =
    match setting with
    | "maskRatio" | "masking" -> "--mask-ratio"
    | s when s.StartsWith "input." -> "--data"
    | "seed" -> "--seed"
    | "batchSize" -> "--batch-size"
    | "epochs" -> "--epochs"
    | "baseLr" -> "--base-lr"
    | "warmupEpochs" -> "--warmup-epochs"
    | "minLr" | "weightDecay" | "clipGrad" | "accumulationSteps" -> "--resume"
    | _ -> "--preset"

/// A usage error (exit 2) when resuming from `resumeFrom` with this configuration and these
/// options would not continue the run that wrote it: each difference names the option, the value
/// given and the checkpoint's.
let checkResume (resumeFrom: string) (config: MaeConfig) (options: PretrainOptions) =
    let meta = Checkpoint.readMeta resumeFrom
    let configDiffs, optionDiffs = Pretrain.resumeMismatches meta config options
    match Array.append configDiffs optionDiffs with
    | [||] -> ()
    | diffs ->
        let lines =
            diffs |> Array.map (fun (setting, here, ckpt) ->
                sprintf "%s (%s) was %s; the checkpoint has %s." (optionOf setting) setting here ckpt)
        raise (UsageException(sprintf "--resume %s: a resumed run must use the options of the run that wrote it. %s" resumeFrom (String.Join(" ", lines))))

/// Learning rate per 256 images when `--base-lr` is not given: 1e-3 for the tiny preset (as in
/// the demo), MAE's 1.5e-4 for the ViT presets.
let defaultBaseLr (preset: string) =
    if String.Equals(preset, "tiny", StringComparison.OrdinalIgnoreCase) then 1e-3
    else PretrainOptions.defaults.BaseLr

/// Builds the command.
let create () =
    let cmd =
        Command(
            "pretrain",
            "Pretrain a masked autoencoder and keep a resumable checkpoint in --out (OUT/last.ckpt). "
            + "Ctrl-C (or SIGTERM) stops after the current step, saves OUT/last.ckpt and exits with code 130 (143 for SIGTERM); "
            + "run the same command with --resume to continue. Exit codes: 0 done, 1 failure, 2 bad arguments, 130/143 interrupted."
        )
    let modality = modality ()
    let preset =
        create "--preset" ("Model shape: image " + String.Join(", ", MaeConfig.namesFor "image") + " (the image size and channels are taken from the data); video " + String.Join(", ", MaeConfig.namesFor "video") + " (tiny: 8 frames of 48x48, for Moving-MNIST); timeseries " + String.Join(", ", MaeConfig.namesFor "timeseries") + " (tiny: segments of 8; tsformer and patchtst: segments of 12, so --window 48 or more; the channels and window come from the data).") (Some "tiny")
        |> check ("one of: " + String.Join(", ", allPresets)) (fun v -> Array.contains ((string v).ToLowerInvariant()) allPresets)
        |> named (String.Join("|", allPresets))
    let data = data ()
    let epochs = positive "--epochs" "Passes over the training samples." 10
    let batchSize = positive "--batch-size" "Samples (images, clips) per optimizer step." 256
    let maskRatio =
        create<float> "--mask-ratio" "Share of each sample's tokens hidden from the encoder, in [0, 1) (default: the preset's, 0.75 for images, 0.9 for video)." None
        |> check "a value in [0, 1)" (fun v -> v >= 0.0 && v < 1.0)
    let baseLr =
        create<float> "--base-lr" "Learning rate per 256 images (default: 1e-3 for tiny, 1.5e-4 for base/large/huge)." None
        |> check "a positive number" (fun v -> v > 0.0)
    let warmup =
        create "--warmup-epochs" "Linear warmup of the learning rate, in epochs." (Some 1.0)
        |> check "a non-negative number" (fun v -> v >= 0.0)
    let out = create<string> "--out" "Folder for the checkpoint (OUT/last.ckpt); created when missing." None |> named "OUT"
    out.Required <- true
    let resume = create<string> "--resume" "Continue from OUT/last.ckpt, or from the checkpoint given; the other options must match the interrupted run." None |> named "PATH"
    resume.Arity <- ArgumentArity.ZeroOrOne
    let checkpointEvery = nonNegative "--checkpoint-every" "Rewrite OUT/last.ckpt every N steps (0 = only at the end or on Ctrl-C)." 100
    let seed = create "--seed" "Seed of the initial weights, the data order and the masks." (Some 0L)
    let precision =
        create "--precision" "Matrix products in fp32, or in bf16 with fp32 weights (fast on CPUs with AVX512-BF16/AMX and recent GPUs)." (Some "fp32")
        |> check "fp32 or bf16" (fun v -> v = "fp32" || v = "bf16")
        |> named "fp32|bf16"
    let imageSize =
        nonNegative "--image-size" "Side of the square images the model reads, for an image folder (0 = the preset's: 28 for tiny, 224 for base/large/huge); IDX data keeps its size." 0
    let augment =
        create "--augment" "For an image folder: mae = MAE's random resized crop (scale 0.2-1, bicubic) and flip; none = resize and centre crop only." (Some "mae")
        |> check "mae or none" (fun v -> v = "mae" || v = "none")
        |> named "mae|none"
    let masking =
        create<string> "--masking" ("How tokens are hidden (default: the preset's): " + String.Join(", ", MaskingStrategy.names) + ".") None
        |> check ("one of: " + String.Join(", ", MaskingStrategy.names)) (fun v -> Array.contains v MaskingStrategy.names)
        |> named "KIND"
    let patchSize = create<int> "--patch-size" "Images and video: the side of a (square) patch or tubelet in pixels (default: the preset's)." None |> check "a positive integer" (fun v -> v > 0) |> named "P"
    let frames = create<int> "--frames" "Video: frames per clip (default: the preset's; a multiple of the tubelet length)." None |> check "a positive integer" (fun v -> v > 0) |> named "T"
    let decoderDepth = create<int> "--decoder-depth" "Decoder blocks (default: the preset's; 0 = a linear head)." None |> check "0 or more" (fun v -> v >= 0) |> named "N"
    let segment = create<int> "--segment" "Time series: steps per segment (default: the preset's, 8 for tiny)." None |> check "a positive integer" (fun v -> v > 0) |> named "P"
    let segmentStride = create<int> "--segment-stride" "Time series: steps between segment starts (default: the segment length; smaller overlaps, as PatchTST's stride)." None |> check "a positive integer" (fun v -> v > 0) |> named "S"
    let channelMode =
        create<string> "--channel-mode" "Time series: independent (each channel its own tokens, PatchTST) or mixed (a token holds every channel); default: the preset's." None
        |> check "independent or mixed" (fun v -> v = "independent" || v = "mixed")
        |> named "independent|mixed"
    let revin =
        create<string> "--revin" "Time series: RevIN instance normalisation on or off (default: the preset's)." None
        |> check "on or off" (fun v -> v = "on" || v = "off")
        |> named "on|off"
    let seriesLoss =
        create<string> "--series-loss" "Time series: mse or l1 on hidden segments (default: the preset's)." None
        |> check "mse or l1" (fun v -> v = "mse" || v = "l1")
        |> named "mse|l1"
    let trainLimit, device, threads, json = trainLimit (), device (), threads (), json ()
    let dataOptions = DataOptions()
    for o in [ modality :> Option; preset; data; epochs; batchSize; maskRatio; baseLr; warmup; out; resume
               checkpointEvery; seed; precision; imageSize; augment; trainLimit; device; threads; json] do
        cmd.Options.Add o
    dataOptions.AddTo cmd
    for o in [ masking :> Option; decoderDepth; patchSize; frames; segment; segmentStride; channelMode; revin; seriesLoss ] do
        cmd.Options.Add o
    cmd.SetAction(
        action (fun parsed ->
            let ui = Ui(parsed.GetValue json)
            let dev = resolveDevice (parsed.GetValue device)
            applyThreads (parsed.GetValue threads)
            let outDir = Path.GetFullPath(parsed.GetValue out)
            let resumeFrom =
                match parsed.GetResult resume with
                | null -> null
                | _ ->
                    match parsed.GetValue resume with
                    | null | "" -> Pretrain.checkpointFile outDir
                    | path -> Path.GetFullPath path
            if not (isNull resumeFrom) && not (File.Exists resumeFrom) then
                raise (FileNotFoundException(sprintf "--resume: checkpoint %s does not exist." resumeFrom, resumeFrom))
            let presetName = (parsed.GetValue preset).ToLowerInvariant()
            let batch = parsed.GetValue batchSize
            // pretraining reads the training split only (one test image is loaded from IDX data);
            // an image folder is read on demand, at --image-size, with MAE's augmentation
            let limit = parsed.GetValue trainLimit
            // an option's value when the command line gives it (options without a default)
            let given (o: Option<'a>) = match parsed.GetResult o with null -> None | _ -> Some(parsed.GetValue o)
            let ratio = given maskRatio
            let modalityName = (parsed.GetValue modality).ToLowerInvariant()
            let dataName = dataFrom (if modalityName = "timeseries" then "weather" else "mnist") parsed data null
            let withPatch (c: MaeConfig) =
                match given patchSize with
                | None -> c
                | Some p -> MaeConfig.withImage c.Image.ImageSize (p, p) c.Image.Channels c
            let config, train, transform, workers =
                match modalityName with
                | "timeseries" ->
                    let splits = seriesData ui dataName (dataOptions.Read parsed) None 0
                    let train = limited splits.Train.Windows limit
                    let p = presetConfig "timeseries" presetName ratio
                    let s0 = p.Series
                    let segmentLength = given segment |> Option.defaultValue s0.PatchLength
                    let tuned =
                        { s0 with
                            PatchLength = segmentLength
                            PatchStride = given segmentStride |> Option.defaultValue (if (given segment).IsSome then segmentLength else s0.PatchStride)
                            ChannelIndependent = (match given channelMode with Some m -> m = "independent" | None -> s0.ChannelIndependent)
                            RevIN = (match given revin with Some v -> v = "on" | None -> s0.RevIN)
                            Loss = (match given seriesLoss with Some "l1" -> L1 | Some _ -> Mse | None -> s0.Loss) }
                    let config = MaeConfig.withSeries splits.Columns.Length (int splits.Train.Inputs.shape.[2]) { p with Input = TimeSeries tuned }
                    config, train, Transforms.identity, 0
                | "video" ->
                    let p = presetConfig "video" presetName ratio
                    let v = p.Video
                    let side = given patchSize |> Option.defaultValue (fst v.PatchSize)
                    let t = given frames |> Option.defaultValue v.Frames
                    let config = MaeConfig.withVideo t v.FrameSize v.TubeletSize (side, side) v.Channels p
                    let train, _ = videoData ui dataName config.Video (dataOptions.Read parsed) limit 1
                    config, train, Transforms.identity, 2
                | _ ->
                match openData ui dataName limit 1 with
                | InMemory (train, _) -> withPatch (imageConfig presetName ratio (imageShape train)), (train :> IDataset), Transforms.identity, 0
                | Folder splits ->
                    let train = limited splits.Train limit
                    let size = match parsed.GetValue imageSize with 0 -> fst (MaeConfig.ofName presetName).Image.ImageSize | s -> s
                    let stats = folderStats splits
                    let transform =
                        match parsed.GetValue augment with
                        | "none" -> Transforms.forEvaluation (size, size) stats
                        | _ -> Transforms.forPretraining (size, size) stats
                    ui.Log(sprintf "image folder (%s): %d training images, %d classes, %dx%d, augmentation %s"
                               splits.Layout train.Count train.ClassNames.Length size size (parsed.GetValue augment))
                    withPatch (imageConfig presetName ratio (train.Channels, size, size)), train, transform, 2
            let config =
                match given masking with
                | None -> config
                | Some name -> { config with Masking = MaskingStrategy.ofName name config.MaskRatio }
            let config =
                match given decoderDepth with
                | None -> config
                | Some depth -> { config with DecoderDepth = depth }
            match MaeConfig.problems config with
            | [||] -> ()
            | problems ->
                let hint =
                    match config.Input with
                    | TimeSeries s ->
                        sprintf " (the model: --window %d, segments of %d every %d: %d per channel)" s.Length s.PatchLength s.PatchStride s.NumPatches
                    | _ -> ""
                raise (UsageException(String.Join(" ", problems |> Array.map message) + hint))
            if train.Count < batch then
                usage "--batch-size" batch (sprintf "at most the %d training samples of --data" train.Count)
            let options =
                { PretrainOptions.defaults with
                    Epochs = parsed.GetValue epochs
                    BatchSize = batch
                    BaseLr = (match parsed.GetResult baseLr with null -> defaultBaseLr presetName | _ -> parsed.GetValue baseLr)
                    WarmupEpochs = parsed.GetValue warmup
                    Seed = parsed.GetValue seed
                    CheckpointDirectory = outDir
                    CheckpointEvery = parsed.GetValue checkpointEvery
                    Precision = Precision.ofName (parsed.GetValue precision)
                    Transform = transform
                    Workers = workers
                    Notes =
                        match config.Input with
                        | Image _ -> null
                        | other ->
                            let window = match other with TimeSeries series -> Some series.Length | _ -> None
                            let notes = JsonObject()
                            notes.["data"] <- DataOptions.ToJson(dataName, dataOptions.Read parsed, window)
                            notes }
            if not (isNull resumeFrom) then checkResume resumeFrom config options
            use model = MaskedAutoencoder.Create(config, options.Seed, dev)
            let totalSteps = train.Count / batch * options.Epochs
            let shapeText =
                match config.Input with
                | Image i ->
                    let (h, w), (ph, pw) = i.ImageSize, i.PatchSize
                    sprintf "%dx%d, patch %dx%d" h w ph pw
                | Video v ->
                    let (h, w), (ph, pw) = v.FrameSize, v.PatchSize
                    sprintf "%d frames of %dx%d, tubelet %dx%dx%d" v.Frames h w v.TubeletSize ph pw
                | TimeSeries s ->
                    sprintf "%d channels x %d steps, segments of %d every %d, %s%s, %s loss" s.Channels s.Length s.PatchLength s.PatchStride
                        (if s.ChannelIndependent then "channel-independent" else "channel-mixed") (if s.RevIN then ", RevIN" else "") s.Loss.Name
            ui.Log(
                sprintf "pretraining %s %s (%s, %s masking %g) for %d epochs, %d steps%s"
                    modalityName presetName shapeText config.Masking.Name
                    config.MaskRatio options.Epochs totalSteps
                    (if isNull resumeFrom then "" else ", resuming from " + resumeFrom)
            )
            use cancel = new CancellationTokenSource()
            let mutable stopCode = interruptedExitCode
            // The first Ctrl-C (or SIGTERM) asks for a clean stop; a second one ends the process at once.
            let stop (code: int) =
                if cancel.IsCancellationRequested then false
                else
                    stopCode <- code
                    cancel.Cancel()
                    true
            let onCancel = ConsoleCancelEventHandler(fun _ e -> if stop interruptedExitCode then e.Cancel <- true)
            Console.CancelKeyPress.AddHandler onCancel
            use _onTerm =
                try PosixSignalRegistration.Create(PosixSignal.SIGTERM, fun ctx -> if stop terminatedExitCode then ctx.Cancel <- true)
                with :? PlatformNotSupportedException -> null
            let recorder = RunLog.Recorder(Path.Combine(outDir, "tb"))
            let result =
                try
                    ui.Track(
                        "pretrain",
                        TimeSpan.FromSeconds 5.0,
                        fun report ->
                            Pretrain.runOn model train options resumeFrom
                                (fun p ->
                                    recorder.Record p
                                    report p.Step p.TotalSteps
                                        (sprintf "epoch %d/%d  loss %.4f  lr %s  %.0f samples/s" (p.Epoch + 1) options.Epochs p.Loss (p.Lr.ToString "0.00e+0") p.ImagesPerSecond))
                                cancel.Token
                    )
                finally
                    Console.CancelKeyPress.RemoveHandler onCancel
            if result.Cancelled then
                ui.Log(sprintf "interrupted at step %d of %d; checkpoint saved, continue with --resume" result.Steps totalSteps)
            let lossPng = Path.Combine(outDir, "loss.png")
            recorder.PlotLoss(lossPng, sprintf "mae pretrain: %s %s, %s, mask ratio %g" modalityName presetName shapeText config.MaskRatio)
            let losses = result.EpochLosses |> Array.map (sprintf "%.4f") |> String.concat " "
            ui.Summary(
                (if result.Cancelled then "pretraining interrupted" else "pretraining done"),
                [ "steps", sprintf "%d / %d" result.Steps totalSteps
                  "final loss", sprintf "%.4f" result.FinalLoss
                  "epoch losses", (if losses = "" then "-" else losses)
                  "seconds", sprintf "%.1f" result.Seconds
                  "checkpoint", (if isNull result.CheckpointPath then "-" else result.CheckpointPath)
                  "loss curve", (if recorder.Count > 0 then lossPng else "-")
                  "TensorBoard", sprintf "tensorboard --logdir %s" recorder.LogDir ]
            )
            ui.Result(
                jsonObject
                    [ "steps", JsonValue.Create result.Steps
                      "total_steps", JsonValue.Create totalSteps
                      "final_loss", number result.FinalLoss
                      "epoch_losses", JsonArray(result.EpochLosses |> Array.map number)
                      "seconds", number result.Seconds
                      "cancelled", JsonValue.Create result.Cancelled
                      "checkpoint", JsonValue.Create result.CheckpointPath
                      "loss_png", JsonValue.Create(if recorder.Count > 0 then lossPng else null)
                      "tensorboard", JsonValue.Create recorder.LogDir ]
            )
            if result.Cancelled then stopCode else 0)
    )
    cmd
