/// Patchify / unpatchify: the reshape-permute-copy that turns images and clips into tokens.
namespace Mae.Micro

open BenchmarkDotNet.Attributes
open TorchSharp
open Mae

type PatchifyBench() =
    let mutable imgs: torch.Tensor = null
    let mutable tokens: torch.Tensor = null
    let mutable clip: torch.Tensor = null

    [<GlobalSetup>]
    member _.Setup() =
        Common.setup ()
        imgs <- torch.randn(8L, 3L, 224L, 224L)
        tokens <- torch.randn(8L, 196L, 768L)
        clip <- torch.randn([| 2L; 3L; 16L; 112L; 112L |])

    [<GlobalCleanup>]
    member _.Cleanup() =
        for t in [ imgs; tokens; clip ] do
            t.Dispose()

    /// [8,3,224,224] -> [8,196,768], patch 16.
    [<Benchmark>]
    member _.Patchify2d() =
        use _ = torch.NewDisposeScope()
        Patchify.patchify2d (16, 16) imgs |> ignore

    /// [8,196,768] -> [8,3,224,224].
    [<Benchmark>]
    member _.Unpatchify2d() =
        use _ = torch.NewDisposeScope()
        Patchify.unpatchify2d (16, 16) (14, 14) 3 tokens |> ignore

    /// [2,3,16,112,112] -> [2,392,1536], tubelet 2x16x16.
    [<Benchmark>]
    member _.Patchify3d() =
        use _ = torch.NewDisposeScope()
        Patchify.patchify3d (2, 16, 16) clip |> ignore
