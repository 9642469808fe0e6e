/// Where the mae command's output goes. Human-readable text goes to stdout, or to stderr with
/// `--json` (stdout then carries exactly one JSON object, on its last line). On a terminal the
/// human side is live (Spectre.Console progress bars, spinners and tables); redirected, it is
/// plain timestamped log lines that read well in a file.
module Mae.Cli.Output

open System
open System.IO
open System.Text.Json.Nodes
open Spectre.Console
open Spectre.Console.Rendering

/// A JSON number, or null for NaN and infinities (which JSON cannot hold), rounded to 6 digits.
let number (x: float) : JsonNode =
    if Double.IsNaN x || Double.IsInfinity x then null else JsonValue.Create(Math.Round(x, 6))

/// A JSON object from (name, value) pairs, in that order.
let jsonObject (fields: (string * JsonNode) list) =
    let o = JsonObject()
    for name, value in fields do
        o.[name] <- value
    o

/// The human side of the output, chosen once per command from `--json` and from whether that
/// stream is a terminal.
type Ui(json: bool) =
    let writer: TextWriter = if json then Console.Error else Console.Out
    let redirected = if json then Console.IsErrorRedirected else Console.IsOutputRedirected
    let console =
        let settings = AnsiConsoleSettings()
        settings.Out <- AnsiConsoleOutput(writer)
        if redirected then
            settings.Ansi <- AnsiSupport.No
            settings.Interactive <- InteractionSupport.No
        AnsiConsole.Create settings

    /// True when the human side is a terminal (live display); false when redirected (log lines).
    member _.IsTerminal = not redirected

    /// True when a JSON object is printed on stdout at the end.
    member _.Json = json

    /// One line of progress or information.
    member _.Log(line: string) =
        if redirected then
            writer.WriteLine(sprintf "[mae %s] %s" (DateTime.Now.ToString "HH:mm:ss") line)
            writer.Flush()
        else console.MarkupLine("[grey]" + Markup.Escape line + "[/]")

    /// Runs `work` under a spinner labelled `label` on a terminal; logs the label otherwise.
    member this.Step(label: string, work: unit -> 'T) : 'T =
        if redirected then
            this.Log label
            work ()
        else console.Status().Start(Markup.Escape label, fun _ -> work ())

    /// Runs `work`, which reports (step, total steps, details) after each step: a live progress
    /// bar on a terminal; on a redirected stream a log line for the first and the last step and
    /// at most one every `every` in between.
    member this.Track(label: string, every: TimeSpan, work: (int -> int -> string -> unit) -> 'T) : 'T =
        if redirected then
            let clock = Diagnostics.Stopwatch.StartNew()
            let mutable last = TimeSpan.Zero
            let mutable first = true
            work (fun step total details ->
                if first || step = total || clock.Elapsed - last >= every then
                    first <- false
                    last <- clock.Elapsed
                    this.Log(sprintf "%s step %d/%d  %s" label step total details))
        else
            console
                .Progress()
                .AutoClear(false)
                .Columns(
                    [| TaskDescriptionColumn() :> ProgressColumn
                       ProgressBarColumn()
                       PercentageColumn()
                       RemainingTimeColumn()
                       SpinnerColumn() |]
                )
                .Start(fun ctx ->
                    let task = ctx.AddTask(Markup.Escape label, true, 1.0)
                    let result =
                        work (fun step total details ->
                            task.MaxValue <- float (max 1 total)
                            task.Value <- float step
                            task.Description <- Markup.Escape(sprintf "%s %d/%d  %s" label step total details))
                    task.StopTask()
                    result)

    /// The final summary: a table on a terminal, `name: value` lines otherwise.
    member _.Summary(title: string, rows: (string * string) list) =
        if redirected then
            writer.WriteLine title
            for name, value in rows do
                writer.WriteLine(sprintf "  %s: %s" name value)
            writer.Flush()
        else
            let table = Table().Title(Markup.Escape title).AddColumn("").AddColumn("")
            table.ShowHeaders <- false
            for name, value in rows do
                table.AddRow([| Text(name) :> IRenderable; Text(value) |]) |> ignore
            console.Write table

    /// Prints `result` as the last line of stdout when `--json` was given.
    member _.Result(result: JsonObject) =
        if json then
            Console.Out.WriteLine(result.ToJsonString())
            Console.Out.Flush()

/// Prints an error to stderr, prefixed with the command's name.
let error (message: string) =
    Console.Error.WriteLine("mae: " + message)
    Console.Error.Flush()
