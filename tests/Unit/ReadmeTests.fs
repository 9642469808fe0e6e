/// The README's F# example is the compiled examples/QuickStart/Program.fs, word for word.
module Mae.Tests.Unit.ReadmeTests

open System
open System.IO
open Expecto

let rec private repoRoot (dir: DirectoryInfo) =
    if isNull dir then failwith "README.md not found above the test's folder"
    elif File.Exists(Path.Combine(dir.FullName, "README.md")) && Directory.Exists(Path.Combine(dir.FullName, "examples")) then dir.FullName
    else repoRoot dir.Parent

let private lines (text: string) =
    text.Replace("\r\n", "\n").TrimEnd('\n').Split('\n') |> Array.map (fun l -> l.TrimEnd())

/// The first ```fsharp block after the quickstart marker.
let readmeSnippet (readme: string) =
    let all = lines readme
    let marker = all |> Array.findIndex (fun l -> l.StartsWith "<!-- quickstart")
    let start = Array.FindIndex(all, marker, fun l -> l = "```fsharp") + 1
    let stop = Array.FindIndex(all, start, fun l -> l = "```")
    all.[start .. stop - 1]

let tests =
    testList "readme" [
        testCase "README's F# example equals examples/QuickStart/Program.fs (which the build compiles)" <| fun () ->
            let root = repoRoot (DirectoryInfo AppContext.BaseDirectory)
            let snippet = readmeSnippet (File.ReadAllText(Path.Combine(root, "README.md")))
            let program = lines (File.ReadAllText(Path.Combine(root, "examples", "QuickStart", "Program.fs")))
            Expect.isGreaterThanOrEqual snippet.Length 8 "the README shows a real example"
            Expect.sequenceEqual snippet program "README snippet and QuickStart/Program.fs differ"
    ]
