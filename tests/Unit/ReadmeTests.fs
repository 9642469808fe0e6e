/// The README's examples are compiled code, word for word: the F# one is examples/QuickStart/Program.fs,
/// the C# ones the marked regions of examples/CSharpQuickStart.
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

/// The ```csharp blocks of the README, in order.
let csharpBlocks (readme: string) =
    let all = lines readme
    [ for i in 0 .. all.Length - 1 do
          if all.[i] = "```csharp" then
              let stop = Array.FindIndex(all, i + 1, fun l -> l = "```")
              yield all.[i + 1 .. stop - 1] ]

/// The lines between "// <readme>" and "// </readme>" of a source file, without their common
/// indentation and without leading blank lines.
let markedRegion (source: string) =
    let all = lines source
    let start = all |> Array.findIndex (fun l -> l.Trim() = "// <readme>")
    let stop = all |> Array.findIndex (fun l -> l.Trim() = "// </readme>")
    let region = all.[start + 1 .. stop - 1] |> Array.skipWhile String.IsNullOrWhiteSpace
    let indent =
        region |> Array.filter (String.IsNullOrWhiteSpace >> not) |> Array.map (fun l -> l.Length - l.TrimStart().Length) |> Array.min
    region |> Array.map (fun l -> if l.Length >= indent then l.Substring indent else l.TrimStart())

/// The ```fsharp block after README's line starting with `marker`, and the marked region of `source`.
let private fsharpBlockAndRegion (marker: string) (source: string list) =
    let root = repoRoot (DirectoryInfo AppContext.BaseDirectory)
    let readme = lines (File.ReadAllText(Path.Combine(root, "README.md")))
    let at = readme |> Array.findIndex (fun l -> l.StartsWith marker)
    let start = Array.FindIndex(readme, at, fun l -> l = "```fsharp") + 1
    let stop = Array.FindIndex(readme, start, fun l -> l = "```")
    readme.[start .. stop - 1], markedRegion (File.ReadAllText(Path.Combine(root :: source |> Array.ofList)))

let tests =
    testList "readme" [
        testCase "README's F# series example equals the marked region of tests/Unit/SeriesTests.fs (which runs it)" <| fun () ->
            let block, region = fsharpBlockAndRegion "<!-- series-fsharp" [ "tests"; "Unit"; "SeriesTests.fs" ]
            Expect.sequenceEqual block region "README's F# series block and SeriesTests.fs's region differ"
        testCase "README's F# video example equals the marked region of tests/Unit/VideoTests.fs (which runs it)" <| fun () ->
            let block, region = fsharpBlockAndRegion "<!-- video-fsharp" [ "tests"; "Unit"; "VideoTests.fs" ]
            Expect.sequenceEqual block region "README's F# video block and VideoTests.fs's region differ"
        testCase "README's F# example equals examples/QuickStart/Program.fs (which the build compiles)" <| fun () ->
            let root = repoRoot (DirectoryInfo AppContext.BaseDirectory)
            let snippet = readmeSnippet (File.ReadAllText(Path.Combine(root, "README.md")))
            let program = lines (File.ReadAllText(Path.Combine(root, "examples", "QuickStart", "Program.fs")))
            Expect.isGreaterThanOrEqual snippet.Length 8 "the README shows a real example"
            Expect.sequenceEqual snippet program "README snippet and QuickStart/Program.fs differ"
        testCase "README's C# examples equal the marked regions of examples/CSharpQuickStart (which the build compiles)" <| fun () ->
            let root = repoRoot (DirectoryInfo AppContext.BaseDirectory)
            let blocks = csharpBlocks (File.ReadAllText(Path.Combine(root, "README.md")))
            let region (file: string) = markedRegion (File.ReadAllText(Path.Combine(root, "examples", "CSharpQuickStart", file)))
            Expect.equal blocks.Length 4 "four C# examples: in memory, an image folder, video, time series"
            Expect.sequenceEqual blocks.[0] (region "Program.cs") "README's first C# block and CSharpQuickStart/Program.cs differ"
            Expect.sequenceEqual blocks.[1] (region "ImageFolderExample.cs") "README's second C# block and ImageFolderExample.cs differ"
            Expect.sequenceEqual blocks.[2] (region "VideoExample.cs") "README's third C# block and VideoExample.cs differ"
            Expect.sequenceEqual blocks.[3] (region "SeriesExample.cs") "README's fourth C# block and SeriesExample.cs differ"
    ]
