module Mae.Tests.Properties.Main

open Expecto

[<EntryPoint>]
let main argv =
    TorchSharp.torch.set_num_threads 2
    Mae.Tests.Runner.run argv (testList "properties" [ MaskingProps.tests; PatchifyProps.tests; LossProps.tests; PosEmbedProps.tests; DeterminismProps.tests ])
