/// Checks of the kernels Mae chooses at run time: Kernels.Linear (oneDNN) against libtorch's
/// linear, values, gradients and Steps.time (`dnnl`); the raw oneDNN product on 1,224 shapes, which lists
/// those this machine's oneDNN gets wrong (`dnnlcheck`); and whether attention and the fused MLP
/// repeat their gradients bit for bit (`scriptrepeat`).
module Mae.Benchmarks.KernelProbes

open System
open TorchSharp
open Mae

/// Kernels.Linear (oneDNN where trusted) against linear (MKL): values, gradients and time.
let dnnl () =
    let shapes =
        match Environment.GetEnvironmentVariable "DNNL_SHAPES" with
        | null -> [ (4160L, 128L, 384L); (4160L, 128L, 512L); (4160L, 512L, 128L); (1088L, 192L, 576L); (1088L, 192L, 768L); (1088L, 768L, 192L); (1576L, 128L, 512L); (400L, 192L, 768L) ]
        | s -> [ for t in s.Split(' ') -> let p = t.Split('x') in int64 p.[0], int64 p.[1], int64 p.[2] ]
    for (m, k, n) in shapes do
        let x = torch.randn(m, k).requires_grad_(true)
        let w = torch.randn(n, k).requires_grad_(true)
        let b = torch.randn(n).requires_grad_(true)
        let g = torch.randn(m, n)
        let lin () = torch.nn.functional.linear(x, w, b)
        let dn () = Kernels.Linear(x, w, b)
        let grads (f: unit -> torch.Tensor) =
            x.grad <- null; w.grad <- null; b.grad <- null
            let y = f ()
            y.backward([| g |])
            y.detach().clone(), x.grad.clone(), w.grad.clone(), b.grad.clone()
        let y0, gx0, gw0, gb0 = grads lin
        let y1, gx1, gw1, gb1 = grads dn
        let rel (a: torch.Tensor) (r: torch.Tensor) = ((a - r).abs().max() / r.abs().max()).item<float32>()
        eprintfn "%dx%dx%d rel diff y %.1e gx %.1e gw %.1e gb %.1e" m k n (rel y1 y0) (rel gx1 gx0) (rel gw1 gw0) (rel gb1 gb0)
        let fl = 6.0 * float (m * k * n) / 1e6
        for name, f in [ "linear", lin; "onednn", dn ] do
            Steps.time (sprintf "  %s f+b" name) 30 (fun () -> use _ = torch.NewDisposeScope() in (f ()).backward([| g |]))
        Steps.time "  onednn fwd" 30 (fun () -> use _ = torch.NewDisposeScope() in dn () |> ignore)
        Steps.time "  onednn fwd no-grad" 30 (fun () -> use _ = torch.NewDisposeScope() in use _ = torch.no_grad() in dn () |> ignore)
        let wt = w.detach().t().contiguous()
        let gd = g.contiguous()
        let xd = x.detach()
        Steps.time "  gx (linear g W^T-weight)" 30 (fun () -> use _ = torch.NewDisposeScope() in use _ = torch.no_grad() in Kernels.Linear(gd, wt, null) |> ignore)
        Steps.time "  gx mkl" 30 (fun () -> use _ = torch.NewDisposeScope() in gd.mm(w.detach()) |> ignore)
        Steps.time "  gw mkl" 30 (fun () -> use _ = torch.NewDisposeScope() in gd.t().mm(xd) |> ignore)
        Steps.time "  linear fwd" 30 (fun () -> use _ = torch.NewDisposeScope() in lin () |> ignore)

/// oneDNN linear against libtorch's linear: the same model's features by batch size, and products.
let dnnlCheck () =
    let small = { MaeConfig.tiny with EmbedDim = 32; Depth = 2; Heads = 2; DecoderEmbedDim = 32; DecoderDepth = 1; DecoderHeads = 2 }
    eprintfn "available %b" Kernels.OneDnnAvailable
    Kernels.OneDnnMinMacs <- 0L
    use m = MaskedAutoencoder.Create(small, 0L)
    m.eval ()
    let g = new Generator(34UL, torch.CPU)
    let imgs = torch.randn([| 7L; 1L; 28L; 28L |], generator = g)
    use _ = torch.no_grad()
    for on in [ true; false ] do
        Kernels.OneDnnLinear <- on
        let a = m.Features(imgs, false)
        let b = torch.cat([| m.Features(imgs.narrow(0L, 0L, 3L), false); m.Features(imgs.narrow(0L, 3L, 3L), false); m.Features(imgs.narrow(0L, 6L, 1L), false) |], 0L)
        eprintfn "onednn %b: batch 7 vs 3+3+1 max diff %g (max abs %g)" on ((a - b).abs().max().item<float32>()) (a.abs().max().item<float32>())
    Kernels.OneDnnLinear <- true
    // the raw oneDNN call (what Kernels checks before use) and Kernels.Linear itself
    let cu = torch.jit.compile("def lin(x: Tensor, w: Tensor) -> Tensor:\n    return torch.mkldnn_linear(x.to_mkldnn(), w, None).to_dense()\n")
    for name, f in [ "raw mkldnn_linear", (fun (x: torch.Tensor) (w: torch.Tensor) -> cu.invoke<torch.Tensor>("lin", x, w))
                     "Kernels.Linear", (fun x w -> Kernels.Linear(x, w, null)) ] do
        let bad = ResizeArray()
        let mutable total = 0
        for mm in [ 1L; 7L; 16L; 50L; 64L; 100L; 128L; 150L; 200L; 256L; 350L; 400L; 512L; 1000L; 1088L; 1576L; 4160L ] do
            for k in [ 16L; 32L; 48L; 64L; 128L; 192L; 512L; 768L ] do
                for n in [ 32L; 48L; 96L; 128L; 192L; 384L; 512L; 576L; 768L ] do
                    use _ = torch.NewDisposeScope()
                    let x = torch.randn(mm, k)
                    let w = torch.randn(n, k)
                    let y1 = f x w
                    let y0 = torch.nn.functional.linear(x.double(), w.double())
                    let r = ((y1.double() - y0).abs().max() / y0.abs().max()).item<float>()
                    total <- total + 1
                    if r > 1e-5 then bad.Add(sprintf "%dx%dx%d" mm k n)
        eprintfn "%s, threads %d: %d of %d wrong: %s" name (torch.get_num_threads ()) bad.Count total (String.Join(" ", bad))
    for (mm, k, n, reps) in [ (350L, 32L, 96L, 30); (350L, 32L, 128L, 300); (4160L, 128L, 512L, 50); (1088L, 192L, 576L, 100); (1L, 32L, 128L, 100); (7L, 32L, 128L, 100) ] do
        let mutable wrong = 0
        for _ in 1 .. reps do
            use _ = torch.NewDisposeScope()
            let x = torch.randn(mm, k)
            let w = torch.randn(n, k)
            let b = torch.randn(n)
            let y1 = Kernels.Linear(x, w, b)
            let y0 = torch.nn.functional.linear(x.double(), w.double(), b.double())
            if ((y1.double() - y0).abs().max() / y0.abs().max()).item<float>() > 1e-5 then wrong <- wrong + 1
        eprintfn "%dx%dx%d: wrong %d of %d" mm k n wrong reps
    for (mm, k, n) in [ (350L, 32L, 96L); (150L, 32L, 96L); (50L, 32L, 96L); (17L, 32L, 96L); (1L, 32L, 96L); (5L, 3L, 2L); (7L, 32L, 128L); (3L, 32L, 32L); (1L, 32L, 32L); (4160L, 128L, 512L) ] do
        let x = torch.randn(mm, k)
        let w = torch.randn(n, k)
        let b = torch.randn(n)
        let y1 = Kernels.Linear(x, w, b)
        let y0 = torch.nn.functional.linear(x.double(), w.double(), b.double())
        eprintfn "%dx%dx%d rel diff %g" mm k n (((y1.double() - y0).abs().max() / y0.abs().max()).item<float>())

/// Do attention and the (fused) MLP give the same gradients on every call? (A resumed run must be
/// bit-identical to an uninterrupted one.)
let scriptRepeat () =
    let x0 = torch.randn(8L, 50L, 192L)
    use att = new Attention(192, 3, true, Math)
    use mlp = new Mlp(192, 768)
    for label, (m: torch.nn.Module<torch.Tensor, torch.Tensor>) in [ "attention", (att :> torch.nn.Module<torch.Tensor, torch.Tensor>); "mlp", (mlp :> torch.nn.Module<torch.Tensor, torch.Tensor>) ] do
        let ps = m.parameters() |> Array.ofSeq
        let grads () =
            use _ = torch.NewDisposeScope()
            let x = x0.detach().requires_grad_(true)
            for p in ps do p.grad <- null
            let y = m.forward x
            y.square().sum().backward()
            (x.grad :: [ for p in ps -> p.grad ]) |> List.map (fun t -> t.clone().DetachFromDisposeScope())
        let first = grads ()
        for i in 2 .. 8 do
            let now = grads ()
            let same = List.forall2 (fun (a: torch.Tensor) (b: torch.Tensor) -> a.eq(b).all().item<bool>()) first now
            let diff = List.map2 (fun (a: torch.Tensor) (b: torch.Tensor) -> (a - b).abs().max().item<float32>()) first now |> List.max
            eprintfn "%s call %d: same gradients as call 1: %b (max diff %g)" label i same diff
