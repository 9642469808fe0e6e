/// Masking on tokens shaped like tiny-224's patch embeddings ([8,196,192], a 14 x 14 grid): each
/// kind keeps about a quarter of the tokens; restore unshuffles a decoder-width sequence.
namespace Mae.Micro

open BenchmarkDotNet.Attributes
open TorchSharp
open Mae

type MaskingBench() =
    let mutable gen: torch.Generator = null
    let mutable tokens: torch.Tensor = null
    let mutable shuffled: torch.Tensor = null
    let mutable idsRestore: torch.Tensor = null

    [<GlobalSetup>]
    member _.Setup() =
        Common.setup ()
        gen <- new torch.Generator(0UL, torch.CPU)
        tokens <- torch.randn(8L, 196L, 192L)
        shuffled <- torch.randn(8L, 196L, 128L)
        idsRestore <- torch.rand(8L, 196L).argsort(dim = 1L)

    [<GlobalCleanup>]
    member _.Cleanup() =
        for t in [ tokens; shuffled; idsRestore ] do
            t.Dispose()
        gen.Dispose()

    /// Per-sample random, ratio 0.75 (keeps 49).
    [<Benchmark>]
    member _.Random() =
        use _ = torch.NewDisposeScope()
        Masking.random gen 0.75 tokens |> ignore

    /// One random mask for the batch, ratio 0.75.
    [<Benchmark>]
    member _.RandomShared() =
        use _ = torch.NewDisposeScope()
        Masking.randomShared gen 0.75 tokens |> ignore

    /// Tube: 4 time slots of 49 spatial tokens, ratio 0.75 (keeps 4 x 12).
    [<Benchmark>]
    member _.Tube() =
        use _ = torch.NewDisposeScope()
        Masking.tube gen 0.75 4 tokens |> ignore

    /// Time/frequency on a 14 x 14 grid, time 0.5 and frequency 0.5 (keeps 7 x 7).
    [<Benchmark>]
    member _.TimeFrequency() =
        use _ = torch.NewDisposeScope()
        Masking.timeFrequency gen 0.5 0.5 (14, 14) tokens |> ignore

    /// Block-wise (BEiT) on a 14 x 14 grid, ratio 0.75; the rectangles are drawn on the CPU.
    [<Benchmark>]
    member _.Block() =
        use _ = torch.NewDisposeScope()
        Masking.block gen 0.75 (14, 14) tokens |> ignore

    /// Restore (gather back to the original order) on [8,196,128].
    [<Benchmark>]
    member _.Restore() =
        use _ = torch.NewDisposeScope()
        Masking.restore idsRestore shuffled |> ignore
