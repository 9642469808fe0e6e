/// The oneDNN route for fp32 linear layers (Kernels): same values and gradients as libtorch's
/// linear, shapes that oneDNN gets wrong on this CPU kept off it, and a model step that matches.
module Mae.Tests.Unit.KernelTests

open System.Runtime.InteropServices
open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

/// Runs `f` with oneDNN on or off and every product size eligible, restoring the settings.
let withKernels (oneDnn: bool) (f: unit -> 'a) =
    let on, minMacs = Kernels.OneDnnLinear, Kernels.OneDnnMinMacs
    Kernels.OneDnnLinear <- oneDnn
    Kernels.OneDnnMinMacs <- 0L
    try f ()
    finally
        Kernels.OneDnnLinear <- on
        Kernels.OneDnnMinMacs <- minMacs

let private relDiff (a: torch.Tensor) (b: torch.Tensor) =
    ((a - b).abs().max() / (b.abs().max() + 1e-12f)).item<float32>()

/// libtorch's TorchSharp-cpu build for Linux x64 ships oneDNN; elsewhere it may not.
let private expectOneDnn = RuntimeInformation.IsOSPlatform OSPlatform.Linux && RuntimeInformation.OSArchitecture = Architecture.X64

let tests =
    testList "kernels" [
        test "oneDNN is available where libtorch ships it" {
            if expectOneDnn then Expect.isTrue Kernels.OneDnnAvailable "linux-x64 libtorch has oneDNN"
        }

        test "Kernels.Linear equals linear in value and in every gradient" {
            use _ = torch.NewDisposeScope()
            use g = gen 71
            // [rows, inputs, outputs]: 350x32x96 and 1x32x128 are among the shapes oneDNN 3.7.1
            // computes wrongly on the AVX-512 AMD machine this project is built on
            for (lead, k, n, bias, transposed) in
                [ [| 350L |], 32L, 96L, true, false
                  [| 1L |], 32L, 128L, true, false
                  [| 5L; 40L |], 64L, 128L, true, false
                  [| 3L; 17L |], 48L, 64L, false, false
                  [| 64L |], 128L, 512L, true, true ] do
                let x =
                    if transposed then torch.randn(Array.append [| k |] lead, generator = g).t()
                    else torch.randn(Array.append lead [| k |], generator = g)
                let w = torch.randn([| n; k |], generator = g)
                let b = if bias then torch.randn([| n |], generator = g) else null
                let gy = torch.randn(Array.append lead [| n |], generator = g)
                let run (oneDnn: bool) =
                    withKernels oneDnn (fun () ->
                        let xs = x.detach().requires_grad_(true)
                        let ws = w.detach().requires_grad_(true)
                        let bs = if bias then b.detach().requires_grad_(true) else null
                        let y = Kernels.Linear(xs, ws, bs)
                        y.backward([| gy |])
                        y.detach(), xs.grad, ws.grad, (if bias then bs.grad else null))
                let y1, gx1, gw1, gb1 = run true
                let y0, gx0, gw0, gb0 = run false
                let tag = sprintf "%A x %d -> %d" lead k n
                Expect.equal (shape y1) (List.ofArray (Array.append lead [| n |])) (tag + ": shape")
                Expect.isLessThan (relDiff y1 y0) 1e-5f (tag + ": values")
                Expect.isLessThan (relDiff gx1 gx0) 1e-5f (tag + ": input gradient")
                Expect.isLessThan (relDiff gw1 gw0) 1e-5f (tag + ": weight gradient")
                if bias then Expect.isLessThan (relDiff gb1 gb0) 1e-5f (tag + ": bias gradient")
        }

        test "every product shape is checked once and some run on oneDNN" {
            use _ = torch.NewDisposeScope()
            let x = torch.ones(70L, 64L)
            let w = torch.ones(128L, 64L)
            withKernels true (fun () -> Kernels.Linear(x, w, null) |> ignore)
            let line = Kernels.CheckedShapes |> Array.tryFind (fun s -> s.StartsWith "70x64x128,")
            Expect.isSome line "70x64x128 was checked"
            if expectOneDnn then
                Expect.isTrue (Kernels.CheckedShapes |> Array.exists (fun s -> s.EndsWith "oneDNN")) "some shape runs on oneDNN"
            let before = Kernels.CheckedShapes.Length
            withKernels false (fun () -> Kernels.Linear(torch.ones(71L, 64L), w, null) |> ignore)
            Expect.equal Kernels.CheckedShapes.Length before "with oneDNN off nothing is checked (or run) on it"
        }

        test "Kernels.Mlp equals the composed GELU MLP in value and in every gradient" {
            use _ = torch.NewDisposeScope()
            use g = gen 72
            // [rows, inputs, hidden, outputs]: hidden 96 is a width oneDNN gets wrong here (two products)
            for (lead, k, h, n) in [ [| 5L; 40L |], 64L, 256L, 64L; [| 350L |], 32L, 96L, 32L; [| 2L; 3L; 7L |], 48L, 192L, 48L ] do
                let x = torch.randn(Array.append lead [| k |], generator = g)
                let ps = [| torch.randn([| h; k |], generator = g); torch.randn([| h |], generator = g)
                            torch.randn([| n; h |], generator = g); torch.randn([| n |], generator = g) |]
                let gy = torch.randn(Array.append lead [| n |], generator = g)
                let run (oneDnn: bool) =
                    withKernels oneDnn (fun () ->
                        let leaves = Array.append [| x |] ps |> Array.map (fun t -> t.detach().requires_grad_(true))
                        let y = Kernels.Mlp(leaves.[0], leaves.[1], leaves.[2], leaves.[3], leaves.[4])
                        y.backward([| gy |])
                        y.detach() :: [ for t in leaves -> t.grad ])
                let tag = sprintf "%A x %d -> %d -> %d" lead k h n
                let on, off = run true, run false
                Expect.equal (shape on.Head) (List.ofArray (Array.append lead [| n |])) (tag + ": shape")
                List.iteri2 (fun i a b -> Expect.isLessThan (relDiff a b) 1e-5f (sprintf "%s: %s" tag (if i = 0 then "values" else sprintf "gradient %d" i))) on off
            if expectOneDnn then
                Expect.isTrue (Kernels.CheckedShapes |> Array.exists (fun l -> l.StartsWith "mlp 200x64x256x64," && l.EndsWith ": fused"))
                    "the 200x64x256x64 MLP runs fused"
        }

        test "an MAE step gives the same loss and gradients with oneDNN on and off, and repeats exactly" {
            let cfg = { small with EmbedDim = 64; DecoderEmbedDim = 64 }
            let step (oneDnn: bool) =
                withKernels oneDnn (fun () ->
                    use m = MaskedAutoencoder.Create(cfg, 3L)
                    m.train ()
                    use g = gen 9
                    let imgs = torch.randn([| 6L; 1L; 28L; 28L |], generator = g)
                    let out = m.Forward(imgs, g)
                    out.Loss.backward()
                    out.Loss.item<float32>(),
                    [ for struct (name, p) in m.named_parameters() do
                          if not (isNull p.grad) then yield name, p.grad.detach().clone() ])
            let loss1, grads1 = step true
            let loss1', grads1' = step true
            let loss0, grads0 = step false
            Expect.equal loss1' loss1 "oneDNN steps repeat bit for bit"
            for (name, a), (_, b) in List.zip grads1 grads1' do
                Expect.isTrue (a.eq(b).all().item<bool>()) (sprintf "%s gradient repeats bit for bit" name)
            Expect.floatClose Accuracy.medium (float loss1) (float loss0) "the same loss as with linear"
            Expect.equal (List.map fst grads1) (List.map fst grads0) "the same parameters get gradients"
            for (name, a), (_, b) in List.zip grads1 grads0 do
                Expect.isTrue (a.allclose(b, rtol = 1e-3, atol = 1e-6)) (sprintf "%s's gradient matches linear's" name)
        }
        test "products of more rows than OneDnnMaxRows stay on libtorch's linear (oneDNN corrupted the heap there)" {
            use _ = torch.no_grad()
            use g = gen 5
            use x = torch.randn([| Kernels.OneDnnMaxRows + 4096L; 32L |], generator = g)
            use w = torch.randn([| 96L; 32L |], generator = g)
            use b = torch.randn([| 96L |], generator = g)
            for _ in 1 .. 3 do
                use y = Kernels.Linear(x, w, b)
                use r = torch.nn.functional.linear(x, w, b)
                Expect.isTrue (same y r) "bit-identical to linear"
            Expect.isFalse (Kernels.CheckedShapes |> Array.exists (fun s -> s.StartsWith(sprintf "%dx" (Kernels.OneDnnMaxRows + 4096L))))
                "the shape never reached oneDNN's check"
        }
    ]
