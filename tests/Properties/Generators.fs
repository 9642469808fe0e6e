module Mae.Tests.Properties.Generators

open Expecto

let smoke = testCase "torch loads" <| fun () ->
    let t = TorchSharp.torch.ones(2L, 3L)
    Expect.equal (t.sum().item<float32>()) 6.0f "sum of ones"
