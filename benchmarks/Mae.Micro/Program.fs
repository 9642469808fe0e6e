/// BenchmarkDotNet micro-benchmarks of Mae's building blocks.
/// dotnet run -c Release --project benchmarks/Mae.Micro -- --filter '*'
module Mae.Micro.Program

open BenchmarkDotNet.Running

[<EntryPoint>]
let main argv =
    BenchmarkSwitcher.FromAssembly(typeof<PatchifyBench>.Assembly).Run(argv, Common.config ()) |> ignore
    0
