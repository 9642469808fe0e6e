/// One pre-norm transformer block (attention + MLP, ratio 4) at tiny-224's shapes: the encoder
/// on the 49 visible tokens plus cls ([8,50,192], 3 heads) and the decoder on all 196 + cls
/// ([8,197,128], 4 heads), with both attention kernels. Autograd is on in both benchmarks, as in
/// training; ForwardBackward adds sum().backward() (gradients of the input and the parameters).
namespace Mae.Micro

open BenchmarkDotNet.Attributes
open TorchSharp
open Mae

type BlockBench() =
    let mutable block = Unchecked.defaultof<Mae.Block>
    let mutable x: torch.Tensor = null

    /// "encoder": [8,50,192], 3 heads; "decoder": [8,197,128], 4 heads.
    [<Params("encoder", "decoder")>]
    member val Shape = "encoder" with get, set

    [<Params("Math", "Sdpa")>]
    member val Kernel = "Math" with get, set

    [<GlobalSetup>]
    member this.Setup() =
        Common.setup ()
        torch.manual_seed 0L |> ignore
        let n, l, d, heads =
            match this.Shape with
            | "encoder" -> 8L, 50L, 192, 3
            | "decoder" -> 8L, 197L, 128, 4
            | s -> failwithf "unknown shape %s" s
        let kernel =
            match this.Kernel with
            | "Math" -> AttentionKernel.Math
            | "Sdpa" -> AttentionKernel.Sdpa
            | k -> failwithf "unknown kernel %s" k
        block <- Mae.Block.Standard(d, heads, 4.0, kernel)
        x <- torch.randn(n, l, int64 d).requires_grad_(true)

    [<GlobalCleanup>]
    member _.Cleanup() =
        x.Dispose()
        block.Dispose()

    [<Benchmark>]
    member _.Forward() =
        use _ = torch.NewDisposeScope()
        block.forward(x) |> ignore

    [<Benchmark>]
    member _.ForwardBackward() =
        use _ = torch.NewDisposeScope()
        block.forward(x).sum().backward()
