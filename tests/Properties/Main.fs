module Mae.Tests.Properties.Main

open Expecto

[<EntryPoint>]
let main argv =
    Mae.Runtime.preferPassiveWaiting () |> ignore
    // One thread: the tensors here are tiny, and two OpenMP threads on a busy 2-core machine
    // made the training property up to 30x slower.
    TorchSharp.torch.set_num_threads 1
    Mae.Tests.Runner.run argv (testList "properties" [ MaskingProps.tests; PatchifyProps.tests; LossProps.tests; PosEmbedProps.tests; DeterminismProps.tests; DataProps.tests; SeriesProps.tests ])
