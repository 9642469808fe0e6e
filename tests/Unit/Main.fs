module Mae.Tests.Unit.Main

open Expecto

[<EntryPoint>]
let main argv =
    Mae.Runtime.preferPassiveWaiting () |> ignore
    TorchSharp.torch.set_num_threads 2
    Mae.Tests.Runner.run argv (
        testList "unit" [
            ParameterTests.tests
            ModelTests.tests
            PartsTests.tests
            GoldenTests.tests
            PyTorchTests.tests
            KernelTests.tests
            GuardTests.tests
            OptimTests.tests
            TrainingTests.tests
            CheckpointTests.tests
            ProbeTests.tests
            FineTuneTests.tests
            EvaluationMemoryTests.tests
            DataTests.tests
            ImageFolderTests.tests
            VisualizeTests.tests
            VideoTests.tests
            SeriesTests.tests
            ReadmeTests.tests
            CSharpFacadeTests.tests
            CliTests.tests
        ]
    )
