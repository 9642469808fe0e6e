module Mae.Benchmarks.Program

open System
open System.Diagnostics
open TorchSharp
open Mae

let time (label: string) (reps: int) (f: unit -> unit) =
    for _ in 1 .. 3 do f ()
    let ts =
        Array.init reps (fun _ ->
            let sw = Stopwatch.StartNew()
            f ()
            sw.Elapsed.TotalMilliseconds)
        |> Array.sort
    eprintfn "%-28s %8.2f ms (min %.2f)" label ts.[reps / 2] ts.[0]

let profile (kernel: AttentionKernel) =
    let cfg = { MaeConfig.tiny with Attention = kernel }
    use model = MaskedAutoencoder.Create(cfg, 0L)
    let x = torch.randn(256L, 1L, 28L, 28L)
    use g = new Generator(0UL, torch.CPU)
    use opt = Optim.adamW 1e-3 (0.9, 0.95) (Optim.decayGroups 0.05 model)
    eprintfn "attention %A" kernel
    time "patch_embed fwd" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Embed(x) |> ignore)
    time "mask" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Mask(model.Embed(x), g) |> ignore)
    time "forward" 10 (fun () -> use _ = torch.NewDisposeScope() in model.Forward(x, g) |> ignore)
    time "forward+backward" 10 (fun () ->
        use _ = torch.NewDisposeScope()
        model.Forward(x, g).Loss.backward())
    model.Forward(x, g).Loss.backward()
    time "adamw step" 10 (fun () -> use _ = torch.NewDisposeScope() in opt.Step())
    opt.ZeroGrad()
    time "full step" 10 (fun () ->
        use _ = torch.NewDisposeScope()
        model.Forward(x, g).Loss.backward()
        opt.Step()
        opt.ZeroGrad())

/// Where a training step's time goes for one case: forward (to the loss value), backward,
/// AdamW step, zero grad; medians over `steps` steps after warm-up.
let breakdown (name: string) (steps: int) =
    let c = Steps.find name
    let model, images, gen = Steps.inputs c
    use model = model
    use images = images
    use gen = gen
    use opt = Optim.adamW 1.5e-4 (0.9, 0.95) (Optim.decayGroups 0.05 model)
    let parts = Array.init 4 (fun _ -> Collections.Generic.List<float>())
    let sw = Stopwatch()
    let lap i = parts.[i].Add sw.Elapsed.TotalMilliseconds; sw.Restart()
    for s in 1 .. steps + 10 do
        use _ = torch.NewDisposeScope()
        sw.Restart()
        let out = (use _ = Precision.scope c.Precision in model.Forward(images, gen))
        out.Loss.item<float32>() |> ignore
        lap 0
        out.Loss.backward()
        lap 1
        opt.Step()
        lap 2
        opt.ZeroGrad()
        lap 3
        if s = 10 then for p in parts do p.Clear()
    let med (xs: Collections.Generic.List<float>) = (Seq.sort xs |> Array.ofSeq).[xs.Count / 2]
    eprintfn "%s: forward %.1f  backward %.1f  adamw %.1f  zero_grad %.1f ms" name (med parts.[0]) (med parts.[1]) (med parts.[2]) (med parts.[3])

/// The forward pass of one case cut into its stages (no gradients kept between stages' timings).
let forwardParts (name: string) =
    let model, images, gen = Steps.inputs (Steps.find name)
    use model = model
    use images = images
    use gen = gen
    eprintfn "%s" name
    time "embed" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Embed(images) |> ignore)
    let x = model.Embed(images).detach()
    time "mask" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Mask(x, gen) |> ignore)
    time "encoder" 20 (fun () -> use _ = torch.NewDisposeScope() in model.ForwardEncoder(images, gen) |> ignore)
    let enc = model.ForwardEncoder(images, gen)
    let latent = enc.Latent.detach().requires_grad_(true)
    time "decoder" 20 (fun () -> use _ = torch.NewDisposeScope() in model.ForwardDecoder({ enc with Latent = latent }) |> ignore)
    let pred = model.ForwardDecoder({ enc with Latent = latent }).detach().requires_grad_(true)
    time "loss" 20 (fun () -> use _ = torch.NewDisposeScope() in model.ForwardLoss(images, pred, enc.Masking.Mask) |> ignore)
    time "forward" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Forward(images, gen) |> ignore)
    time "patchify" 20 (fun () -> use _ = torch.NewDisposeScope() in model.Target(images) |> ignore)
    let t = model.Target(images)
    time "mean" 20 (fun () -> use _ = torch.NewDisposeScope() in t.mean([| -1L |], keepdim = true) |> ignore)
    time "var" 20 (fun () -> use _ = torch.NewDisposeScope() in t.var(-1L, unbiased = true, keepdim = true) |> ignore)
    time "normpix" 20 (fun () -> use _ = torch.NewDisposeScope() in Losses.normPixTarget 1e-6 t |> ignore)
    time "mse" 20 (fun () -> use _ = torch.NewDisposeScope() in Losses.maskedMse pred t enc.Masking.Mask |> ignore)

/// GEMM layouts compared at the step's shapes: linear (x W^T, the weight transposed: NT) against a
/// pre-transposed weight (NN). Measured here: NT as fast or faster at every shape.
let gemms () =
    for (m, k, n) in [ (400L, 192L, 576L); (400L, 768L, 192L); (1576L, 128L, 384L); (1576L, 512L, 128L); (1088L, 192L, 576L); (4160L, 128L, 512L) ] do
        let x = torch.randn(m, k).requires_grad_(true)
        let w = torch.randn(n, k).requires_grad_(true)
        let b = torch.randn(n).requires_grad_(true)
        let wt = w.detach().t().contiguous().requires_grad_(true)
        time (sprintf "x@Wt(NN) %dx%dx%d fwd+bwd" m k n) 50 (fun () -> use _ = torch.NewDisposeScope() in torch.addmm(b, x, wt, 1.0f, 1.0f).sum().backward())
        time (sprintf "x@W.t(NT) %dx%dx%d fwd+bwd" m k n) 50 (fun () -> use _ = torch.NewDisposeScope() in torch.addmm(b, x, w.t(), 1.0f, 1.0f).sum().backward())
        time (sprintf "linear %dx%dx%d fwd+bwd" m k n) 50 (fun () -> use _ = torch.NewDisposeScope() in torch.nn.functional.linear(x, w, b).sum().backward())
    let n = 2048L
    let a = torch.randn(n, n)
    let w = torch.randn(n, n)
    time "linear 2048^3" 10 (fun () -> use _ = torch.NewDisposeScope() in torch.nn.functional.linear(a, w) |> ignore)

/// A linear layer run as a 1x1 convolution (oneDNN in libtorch) against linear (MKL): time and error.
let linconv () =
    for (m, k, n) in [ (400L, 192L, 576L); (400L, 768L, 192L); (1576L, 128L, 384L); (1576L, 512L, 128L); (1088L, 192L, 576L); (1088L, 192L, 768L); (1088L, 768L, 192L); (4160L, 128L, 384L); (4160L, 128L, 512L); (4160L, 512L, 128L) ] do
        let x = torch.randn(m, k).requires_grad_(true)
        let w = torch.randn(n, k).requires_grad_(true)
        let b = torch.randn(n).requires_grad_(true)
        let lin () = torch.nn.functional.linear(x, w, b)
        let conv () = torch.nn.functional.conv2d(x.view(m, k, 1L, 1L), w.view(n, k, 1L, 1L), b).view(m, n)
        let g = torch.randn(m, n)
        let grads (f: unit -> torch.Tensor) =
            x.grad <- null; w.grad <- null; b.grad <- null
            let y = f ()
            y.backward([| g |])
            y.detach().clone(), x.grad.clone(), w.grad.clone(), b.grad.clone()
        let y0 = torch.nn.functional.linear(x.detach().double(), w.detach().double(), b.detach().double())
        let gx0 = g.double().matmul(w.detach().double())
        let gw0 = g.double().t().matmul(x.detach().double())
        let rel (a: torch.Tensor) (r: torch.Tensor) = ((a.double() - r).abs().max() / r.abs().max()).item<float>()
        for name, f in [ "linear", lin; "conv1x1", conv ] do
            let y, gx, gw, _ = grads f
            let err = max (rel y y0) (max (rel gx gx0) (rel gw gw0))
            time (sprintf "%s %dx%dx%d (err %.1e)" name m k n err) 30 (fun () -> use _ = torch.NewDisposeScope() in (f ()).backward([| g |]))

/// One block's forward+backward at the step's shapes, whole and cut into its operations.
let blockParts () =
    for (n, l, d, h) in [ (64L, 65L, 128L, 4L); (64L, 17L, 192L, 3L); (8L, 197L, 128L, 4L); (8L, 50L, 192L, 3L) ] do
        use blk = Block.Standard(int d, int h, 4.0, Math)
        let x = torch.randn(n, l, d).requires_grad_(true)
        let gy = torch.randn(n, l, d)
        let tag = sprintf "%dx%dx%d" n l d
        let fb (f: unit -> torch.Tensor) (g: torch.Tensor) () = use _ = torch.NewDisposeScope() in (f ()).backward([| g |])
        let flops = 3.0 * 2.0 * float (n * l) * (12.0 * float (d * d) + 2.0 * float (l * d))
        let reps = 30
        for _ in 1 .. 3 do fb (fun () -> blk.forward x) gy ()
        let sw = Stopwatch.StartNew()
        for _ in 1 .. reps do fb (fun () -> blk.forward x) gy ()
        let ms = sw.Elapsed.TotalMilliseconds / float reps
        eprintfn "block %s fwd+bwd %.2f ms, %.1f GFLOP/s" tag ms (flops / ms / 1e6)
        let ln = torch.nn.LayerNorm(d, eps = 1e-6)
        time (sprintf "  layernorm %s" tag) reps (fb (fun () -> ln.forward x) gy)
        let h4 = torch.randn(n, l, 4L * d).requires_grad_(true)
        let g4 = torch.randn(n, l, 4L * d)
        time (sprintf "  gelu %s" tag) reps (fb (fun () -> torch.nn.functional.gelu h4) g4)
        time (sprintf "  add %s" tag) reps (fb (fun () -> x + x) gy)
        let att = new Attention(int d, int h, true, Math)
        let qkv = torch.randn(n, l, 3L * d).requires_grad_(true)
        let hd = d / h
        let core () =
            let parts = qkv.reshape(n, l, 3L, h, hd).permute(2L, 0L, 3L, 1L, 4L).unbind(0L)
            let q, k, v = parts.[0], parts.[1], parts.[2]
            let o = (q * (1.0 / sqrt (float hd))).matmul(k.transpose(-2L, -1L)).softmax(-1L, ScalarType.Float32).matmul(v)
            o.transpose(1L, 2L).reshape(n, l, d)
        time (sprintf "  attention core %s" tag) reps (fb core gy)
        time (sprintf "  attention whole %s" tag) reps (fb (fun () -> att.forward x) gy)
        for (kk, nn) in [ (d, 3L * d); (d, d); (d, 4L * d); (4L * d, d) ] do
            let xi = torch.randn(n * l, kk).requires_grad_(true)
            let w = torch.randn(nn, kk).requires_grad_(true)
            let b = torch.randn(nn).requires_grad_(true)
            let go = torch.randn(n * l, nn)
            time (sprintf "  linear %dx%dx%d" (n * l) kk nn) reps (fb (fun () -> torch.nn.functional.linear(xi, w, b)) go)

/// The attention core cut at growing prefixes, forward+backward with a real upstream gradient.
let corePrefix () =
    for (n, l, d, h) in [ (64L, 65L, 128L, 4L); (8L, 197L, 128L, 4L) ] do
        let hd = d / h
        let tag = sprintf "%dx%dx%d" n l d
        let qkv = torch.randn(n, l, 3L * d).requires_grad_(true)
        let fb (f: unit -> torch.Tensor) =
            let g = (f ()).detach().randn_like()
            fun () ->
                use _ = torch.NewDisposeScope()
                (f ()).backward([| g |])
        let split () =
            let parts = qkv.reshape(n, l, 3L, h, hd).permute(2L, 0L, 3L, 1L, 4L).unbind(0L)
            parts.[0], parts.[1], parts.[2]
        let sc = 1.0 / sqrt (float hd)
        time (sprintf "split %s" tag) 30 (fb (fun () -> let q, k, v = split () in q + k + v))
        time (sprintf "scores %s" tag) 30 (fb (fun () -> let q, k, _ = split () in (q * sc).matmul(k.transpose(-2L, -1L))))
        time (sprintf "softmax %s" tag) 30 (fb (fun () -> let q, k, _ = split () in (q * sc).matmul(k.transpose(-2L, -1L)).softmax(-1L)))
        time (sprintf "softmax f32 %s" tag) 30 (fb (fun () -> let q, k, _ = split () in (q * sc).matmul(k.transpose(-2L, -1L)).softmax(-1L, ScalarType.Float32)))
        time (sprintf "pv %s" tag) 30 (fb (fun () -> let q, k, v = split () in (q * sc).matmul(k.transpose(-2L, -1L)).softmax(-1L).matmul(v)))
        time (sprintf "no-softmax pv %s" tag) 30 (fb (fun () -> let q, k, v = split () in (q * sc).matmul(k.transpose(-2L, -1L)).matmul(v)))
        let q0 = torch.randn(n, h, l, hd).requires_grad_(true)
        let k0 = torch.randn(n, h, l, hd).requires_grad_(true)
        let v0 = torch.randn(n, h, l, hd).requires_grad_(true)
        let full (sm: torch.Tensor -> torch.Tensor) (tail: torch.Tensor -> torch.Tensor) () =
            let q, k, v = split ()
            let p = sm ((q * sc).matmul(k.transpose(-2L, -1L)))
            tail (p.matmul(v))
        let f32 (x: torch.Tensor) = x.softmax(-1L, ScalarType.Float32)
        let plain (x: torch.Tensor) = x.softmax(-1L)
        let tr (o: torch.Tensor) = o.transpose(1L, 2L).reshape(n, l, d)
        let trc (o: torch.Tensor) = o.transpose(1L, 2L).contiguous().view(n, l, d)
        let none (o: torch.Tensor) = o
        time (sprintf "core plain/none %s" tag) 30 (fb (full plain none))
        time (sprintf "core f32/none %s" tag) 30 (fb (full f32 none))
        time (sprintf "core plain/transpose %s" tag) 30 (fb (full plain tr))
        time (sprintf "core f32/transpose %s" tag) 30 (fb (full f32 tr))
        time (sprintf "core f32/contig %s" tag) 30 (fb (full f32 trc))
        time (sprintf "pv leafs %s" tag) 30 (fb (fun () -> (q0 * sc).matmul(k0.transpose(-2L, -1L)).softmax(-1L).matmul(v0)))
        time (sprintf "pv leafs nosm %s" tag) 30 (fb (fun () -> (q0 * sc).matmul(k0.transpose(-2L, -1L)).matmul(v0)))
        time (sprintf "pv leafs noscale %s" tag) 30 (fb (fun () -> q0.matmul(k0.transpose(-2L, -1L)).softmax(-1L).matmul(v0)))

/// A whole block as one TorchScript function (oneDNN or MKL products) against the Block module.
let scriptBlock () =
    let src =
        String.concat "\n" [
            "def lin(x: Tensor, w: Tensor, b: Tensor, dnn: bool) -> Tensor:"
            "    if dnn:"
            "        return torch.mkldnn_linear(x.to_mkldnn(), w, b).to_dense()"
            "    return torch.linear(x, w, b)"
            "def block(x: Tensor, n1w: Tensor, n1b: Tensor, qkvw: Tensor, qkvb: Tensor, pw: Tensor, pb: Tensor, n2w: Tensor, n2b: Tensor, f1w: Tensor, f1b: Tensor, f2w: Tensor, f2b: Tensor, heads: int, dnn: bool, fusemlp: bool) -> Tensor:"
            "    N = x.size(0)"
            "    L = x.size(1)"
            "    D = x.size(2)"
            "    hd = D // heads"
            "    h = torch.layer_norm(x, [D], n1w, n1b, 1e-6).reshape(N * L, D)"
            "    parts = lin(h, qkvw, qkvb, dnn).reshape(N, L, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)"
            "    q = parts[0] * (1.0 / float(hd) ** 0.5)"
            "    s = torch.matmul(q, parts[1].transpose(-2, -1)).softmax(-1)"
            "    o = torch.matmul(s, parts[2]).transpose(1, 2).reshape(N * L, D)"
            "    x = x + lin(o, pw, pb, dnn).view(N, L, D)"
            "    h = torch.layer_norm(x, [D], n2w, n2b, 1e-6).reshape(N * L, D)"
            "    if fusemlp:"
            "        m = torch.mkldnn_linear(torch.gelu(torch.mkldnn_linear(h.to_mkldnn(), f1w, f1b)), f2w, f2b).to_dense()"
            "    else:"
            "        m = lin(torch.gelu(lin(h, f1w, f1b, dnn)), f2w, f2b, dnn)"
            "    return x + m.view(N, L, D)"
            "" ]
    let cu = torch.jit.compile src
    for (n, l, d, h) in [ (8L, 50L, 192L, 3L); (8L, 197L, 128L, 4L); (64L, 65L, 128L, 4L) ] do
        use blk = Block.Standard(int d, int h, 4.0, Math)
        let ps = blk.parameters() |> Array.ofSeq
        let x = torch.randn(n, l, d).requires_grad_(true)
        let gy = torch.randn(n, l, d)
        let tag = sprintf "%dx%dx%d" n l d
        let fb (f: unit -> torch.Tensor) () = use _ = torch.NewDisposeScope() in (f ()).backward([| gy |])
        let script dnn fuse () =
            let args : obj[] = Array.concat [ [| box x |]; ps |> Array.map box; [| box h; box dnn; box fuse |] ]
            cu.invoke<torch.Tensor>("block", args)
        // same values and gradients?
        let grads (f: unit -> torch.Tensor) =
            x.grad <- null
            for p in ps do p.grad <- null
            let y = f ()
            y.backward([| gy |])
            y.detach().clone() :: x.grad.clone() :: [ for p in ps -> p.grad.clone() ]
        let r0 = grads (fun () -> blk.forward x)
        for label, f in [ "mkl", script false false; "dnn", script true false; "dnn fused mlp", script true true ] do
            let r1 = grads f
            let err = List.map2 (fun (a: torch.Tensor) (b: torch.Tensor) -> ((a - b).abs().max().item<float32>()) / (b.abs().max().item<float32>() + 1e-6f)) r1 r0 |> List.max
            eprintfn "%s script %s: max rel error %.1e" tag label err
        for _ in 1 .. 2 do
            time (sprintf "%s module" tag) 40 (fb (fun () -> blk.forward x))
            time (sprintf "%s script mkl" tag) 40 (fb (script false false))
            time (sprintf "%s script dnn" tag) 40 (fb (script true false))
            time (sprintf "%s script dnn+mlp" tag) 40 (fb (script true true))

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
            time (sprintf "  %s f+b" name) 30 (fun () -> use _ = torch.NewDisposeScope() in (f ()).backward([| g |]))
        time "  onednn fwd" 30 (fun () -> use _ = torch.NewDisposeScope() in dn () |> ignore)
        time "  onednn fwd no-grad" 30 (fun () -> use _ = torch.NewDisposeScope() in use _ = torch.no_grad() in dn () |> ignore)
        let wt = w.detach().t().contiguous()
        let gd = g.contiguous()
        let xd = x.detach()
        time "  gx (linear g W^T-weight)" 30 (fun () -> use _ = torch.NewDisposeScope() in use _ = torch.no_grad() in Kernels.Linear(gd, wt, null) |> ignore)
        time "  gx mkl" 30 (fun () -> use _ = torch.NewDisposeScope() in gd.mm(w.detach()) |> ignore)
        time "  gw mkl" 30 (fun () -> use _ = torch.NewDisposeScope() in gd.t().mm(xd) |> ignore)
        time "  linear fwd" 30 (fun () -> use _ = torch.NewDisposeScope() in lin () |> ignore)

/// The pieces of a linear layer's backward through oneDNN and MKL, no autograd.
let dnnlParts () =
    let src =
        String.concat "\n" [
            "def fwd(x: Tensor, w: Tensor, b: Tensor) -> Tensor:"
            "    return torch.mkldnn_linear(x.to_mkldnn(), w, b).to_dense()"
            "def gin(g: Tensor, wt: Tensor) -> Tensor:"
            "    return torch.mkldnn_linear(g.to_mkldnn(), wt, None).to_dense()"
            "def gin2(x: Tensor, g: Tensor, w: Tensor) -> Tensor:"
            "    return torch.mkldnn_linear_backward_input(x.size(), g.to_mkldnn(), w).to_dense()"
            "def gw(g: Tensor, x: Tensor, w: Tensor) -> Tensor:"
            "    a, b = torch.mkldnn_linear_backward_weights(g.to_mkldnn(), x.to_mkldnn(), w, True)"
            "    return a"
            "def gwt(gt: Tensor, xt: Tensor) -> Tensor:"
            "    return torch.mkldnn_linear(gt.to_mkldnn(), xt, None).to_dense()"
            "" ]
    let cu = torch.jit.compile(src)
    for (m, k, n) in [ (4160L, 128L, 384L); (4160L, 128L, 512L); (4160L, 512L, 128L); (1088L, 192L, 768L); (1088L, 768L, 192L) ] do
        use _ = torch.no_grad()
        let x = torch.randn(m, k)
        let w = torch.randn(n, k)
        let b = torch.randn(n)
        let g = torch.randn(m, n)
        let wt = w.t().contiguous()
        let rel (a: torch.Tensor) (r: torch.Tensor) = ((a - r).abs().max() / r.abs().max()).item<float32>()
        let gin0 = g.mm(w)
        let gw0 = g.t().mm(x)
        eprintfn "%dx%dx%d  gin %.1e gin2 %.1e gw %.1e gwt %.1e" m k n
            (rel (cu.invoke<torch.Tensor>("gin", g, wt)) gin0) (rel (cu.invoke<torch.Tensor>("gin2", x, g, w)) gin0)
            (rel (cu.invoke<torch.Tensor>("gw", g, x, w)) gw0) (rel (cu.invoke<torch.Tensor>("gwt", g.t().contiguous(), x.t().contiguous())) gw0)
        let t name f = time (sprintf "  %s" name) 30 (fun () -> use _ = torch.NewDisposeScope() in f () |> ignore)
        t "mkl fwd" (fun () -> torch.nn.functional.linear(x, w, b))
        t "dnnl fwd" (fun () -> cu.invoke<torch.Tensor>("fwd", x, w, b))
        t "mkl gin g@w" (fun () -> g.mm(w))
        t "dnnl gin (fwd on wT)" (fun () -> cu.invoke<torch.Tensor>("gin", g, wt))
        t "dnnl gin2 (bwd data)" (fun () -> cu.invoke<torch.Tensor>("gin2", x, g, w))
        t "wT contiguous" (fun () -> w.t().contiguous())
        t "mkl gw gT@x" (fun () -> g.t().mm(x))
        t "dnnl gw (bwd weights)" (fun () -> cu.invoke<torch.Tensor>("gw", g, x, w))
        t "dnnl gw (fwd on transposes)" (fun () -> cu.invoke<torch.Tensor>("gwt", g.t().contiguous(), x.t().contiguous()))
        t "gb sum" (fun () -> g.sum(0L))

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

/// Attention cores (after the qkv linear, before proj) on [N, L, 3D] fwd+bwd.
let cores () =
    for (n, l, d, h) in [ (64L, 65L, 128L, 4L); (64L, 17L, 192L, 3L); (8L, 197L, 128L, 4L); (8L, 50L, 192L, 3L) ] do
        let hd = d / h
        let s = 1.0 / sqrt (float hd)
        let qkv = torch.randn(n, l, 3L * d).requires_grad_(true)
        let v0 () =
            let parts = qkv.reshape(n, l, 3L, h, hd).permute(2L, 0L, 3L, 1L, 4L)
            let q, k, v = parts.[0], parts.[1], parts.[2]
            let o = (q * s).matmul(k.transpose(-2L, -1L)).softmax(-1L).matmul(v)
            o.transpose(1L, 2L).reshape(n, l, d)
        let v1 () =
            let parts = qkv.reshape(n, l, 3L, h, hd).permute(2L, 0L, 3L, 1L, 4L).contiguous().view(3L, n * h, l, hd)
            let q, k, v = parts.[0], parts.[1], parts.[2]
            let scores = torch.bmm(q * s, k.transpose(1L, 2L))
            let o = torch.bmm(scores.softmax(-1L), v)
            o.view(n, h, l, hd).transpose(1L, 2L).reshape(n, l, d)
        let v2 () =
            let parts = qkv.reshape(n, l, 3L, h, hd).permute(2L, 0L, 3L, 1L, 4L)
            let q, k, v = parts.[0], parts.[1], parts.[2]
            let o = q.matmul(k.transpose(-2L, -1L)).mul_(s.ToScalar()).softmax(-1L).matmul(v)
            o.transpose(1L, 2L).reshape(n, l, d)
        let v3 () =
            let parts = qkv.reshape(n, l, 3L, h, hd).permute(2L, 0L, 3L, 1L, 4L).unbind(0L)
            let q, k, v = parts.[0], parts.[1], parts.[2]
            let o = (q * s).matmul(k.transpose(-2L, -1L)).softmax(-1L).matmul(v)
            o.transpose(1L, 2L).reshape(n, l, d)
        let v4 () =
            let parts = qkv.reshape(n, l, 3L, h, hd).unbind(2L)
            let q, k, v = parts.[0].transpose(1L, 2L), parts.[1].transpose(1L, 2L), parts.[2].transpose(1L, 2L)
            let o = (q * s).matmul(k.transpose(-2L, -1L)).softmax(-1L).matmul(v)
            o.transpose(1L, 2L).reshape(n, l, d)
        let diff = (v0 () - v3 ()).abs().max().item<float32>() + (v0 () - v4 ()).abs().max().item<float32>()
        for name, f in [ "v0 scale q", v0; "v1 contiguous", v1; "v2 mul_ scores", v2; "v3 unbind", v3; "v4 unbind first", v4 ] do
            time (sprintf "core %dx%dx%d h%d %s (%.0e)" n l d h name diff) 50 (fun () -> use _ = torch.NewDisposeScope() in (f ()).sum().backward())

/// The attention core's operations one by one (no autograd), small-32 encoder / decoder shapes.
let coreOps () =
    for (b, l, hd) in [ (192L, 17L, 64L); (256L, 65L, 32L); (32L, 197L, 32L); (24L, 50L, 64L) ] do
        let q = torch.randn(b, l, hd)
        let k = torch.randn(b, l, hd)
        let kt = k.transpose(1L, 2L)
        let ktc = kt.contiguous()
        let sc = torch.randn(b, l, l)
        let tag = sprintf "%dx%dx%d" b l hd
        time (sprintf "bmm q kT (strided) %s" tag) 200 (fun () -> use _ = torch.NewDisposeScope() in torch.bmm(q, kt) |> ignore)
        time (sprintf "bmm q kT (contig) %s" tag) 200 (fun () -> use _ = torch.NewDisposeScope() in torch.bmm(q, ktc) |> ignore)
        time (sprintf "bmm p v %s" tag) 200 (fun () -> use _ = torch.NewDisposeScope() in torch.bmm(sc, q) |> ignore)
        time (sprintf "bmm pT v %s" tag) 200 (fun () -> use _ = torch.NewDisposeScope() in torch.bmm(sc.transpose(1L, 2L), q) |> ignore)
        time (sprintf "softmax %s" tag) 200 (fun () -> use _ = torch.NewDisposeScope() in sc.softmax(-1L) |> ignore)
        time (sprintf "q*s %s" tag) 200 (fun () -> use _ = torch.NewDisposeScope() in (q * 0.125) |> ignore)
        let hh = (if hd = 64L then 3L else 4L) in let x = torch.randn([| b / hh; l; 3L; hh; hd |])
        time (sprintf "permute copy %s" tag) 200 (fun () -> use _ = torch.NewDisposeScope() in x.permute(2L, 0L, 3L, 1L, 4L).contiguous() |> ignore)

/// Single kernels at the shapes of tiny-224's encoder (batch 8, 50 tokens, width 192).
let kernels () =
    let linear (m: int64) (k: int64) (nOut: int64) =
        let a = torch.randn(m, k)
        let w = torch.randn(nOut, k)
        let b = torch.randn(nOut)
        time (sprintf "linear %dx%dx%d" m k nOut) 200 (fun () -> use _ = torch.NewDisposeScope() in torch.nn.functional.linear(a, w, b) |> ignore)
    linear 400L 192L 576L
    linear 400L 768L 192L
    linear 400L 192L 768L
    let blk = Block.Standard(192, 3, 4.0, Math)
    let h = torch.randn(8L, 50L, 192L).requires_grad_(true)
    let gx = torch.randn(4160L, 512L).requires_grad_(true)
    let gg = torch.randn(4160L, 512L)
    time "gelu fwd 4160x512" 50 (fun () -> use _ = torch.NewDisposeScope() in torch.nn.functional.gelu(gx) |> ignore)
    time "gelu fwd+bwd 4160x512" 50 (fun () -> use _ = torch.NewDisposeScope() in torch.nn.functional.gelu(gx).backward([| gg |]))
    let bq = torch.randn(256L, 65L, 32L).requires_grad_(true)
    let bk = torch.randn(256L, 32L, 65L).requires_grad_(true)
    let bg = torch.randn(256L, 65L, 65L)
    time "bmm fwd 256x65x32x65" 50 (fun () -> use _ = torch.NewDisposeScope() in torch.bmm(bq, bk) |> ignore)
    time "bmm fwd+bwd 256x65x32x65" 50 (fun () -> use _ = torch.NewDisposeScope() in torch.bmm(bq, bk).backward([| bg |]))
    let one = torch.ones(1L)
    time "1000 tiny adds" 20 (fun () -> use _ = torch.NewDisposeScope() in (for _ in 1 .. 1000 do (one + one) |> ignore))
    time "1000 tiny adds no scope" 20 (fun () -> for _ in 1 .. 1000 do (use t = one + one in ()))
    time "1000 shape" 20 (fun () -> for _ in 1 .. 1000 do h.shape |> ignore)
    let hn = torch.randn(8L, 50L, 192L)
    let ln = torch.nn.LayerNorm(192L, eps = 1e-6)
    time "layernorm" 200 (fun () -> use _ = torch.NewDisposeScope() in ln.forward(hn) |> ignore)
    let g = torch.randn(8L, 50L, 768L)
    time "gelu" 200 (fun () -> use _ = torch.NewDisposeScope() in torch.nn.functional.gelu(g) |> ignore)
    let q = torch.randn(8L, 3L, 50L, 64L)
    time "attn math" 200 (fun () -> use _ = torch.NewDisposeScope() in (q.matmul(q.transpose(-2L, -1L)) * 0.125).softmax(-1L).matmul(q) |> ignore)
    time "add 8x50x192" 200 (fun () -> use _ = torch.NewDisposeScope() in (hn + hn) |> ignore)
    let attn = new Attention(192, 3, true, Math)
    let mlp = new Mlp(192, 768)
    time "attn fwd" 100 (fun () -> use _ = torch.NewDisposeScope() in attn.forward(h) |> ignore)
    time "mlp fwd" 100 (fun () -> use _ = torch.NewDisposeScope() in mlp.forward(h) |> ignore)
    time "attn fwd+bwd" 100 (fun () -> use _ = torch.NewDisposeScope() in attn.forward(h).sum().backward())
    time "mlp fwd+bwd" 100 (fun () -> use _ = torch.NewDisposeScope() in mlp.forward(h).sum().backward())
    // blocks and attentions of tiny-224 (enc [8,50,192], dec [8,197,128]) and small-32 (enc [64,17,192], dec [64,65,128])
    let shapes =
        [ "enc", h, 192, 3; "dec", torch.randn(8L, 197L, 128L).requires_grad_(true), 128, 4
          "small enc", torch.randn(64L, 17L, 192L).requires_grad_(true), 192, 3
          "small dec", torch.randn(64L, 65L, 128L).requires_grad_(true), 128, 4 ]
    for k in [ Math; Sdpa ] do
        for label, x, dim, heads in shapes do
            let block = Block.Standard(dim, heads, 4.0, k)
            time (sprintf "%s block %A fwd+bwd" label k) 50 (fun () -> use _ = torch.NewDisposeScope() in block.forward(x).sum().backward())
            let attention = new Attention(dim, heads, true, k)
            time (sprintf "%s attn %A fwd+bwd" label k) 50 (fun () -> use _ = torch.NewDisposeScope() in attention.forward(x).sum().backward())
    time "block fwd" 100 (fun () -> use _ = torch.NewDisposeScope() in blk.forward(h) |> ignore)
    time "block fwd+bwd" 100 (fun () -> use _ = torch.NewDisposeScope() in blk.forward(h).sum().backward())

let rssMiB = Steps.rssMiB

/// glibc's allocator statistics (mallinfo2), all in bytes.
[<Struct; Runtime.InteropServices.StructLayout(Runtime.InteropServices.LayoutKind.Sequential)>]
type MallInfo2 =
    val Arena: unativeint     // non-mmapped space obtained from the OS
    val Ordblks: unativeint   // free chunks
    val Smblks: unativeint
    val Hblks: unativeint     // mmapped regions
    val Hblkhd: unativeint    // bytes in mmapped regions
    val Usmblks: unativeint
    val Fsmblks: unativeint
    val Uordblks: unativeint  // allocated (in use)
    val Fordblks: unativeint  // free
    val Keepcost: unativeint  // releasable at the top

[<Runtime.InteropServices.DllImport("libc", EntryPoint = "mallinfo2")>]
extern MallInfo2 private mallinfo2()

[<Runtime.InteropServices.DllImport("libc", EntryPoint = "mallopt")>]
extern int private mallopt(int param, int value)

/// Native bytes in use (glibc heap and mmapped blocks).
let nativeInUse () =
    let m = mallinfo2 ()
    float (uint64 m.Uordblks + uint64 m.Hblkhd)

/// For each operation: native memory that stays allocated after running it many times in dispose
/// scopes and is released only by a garbage collection (objects left to finalizers), per call.
let finalized () =
    let x = torch.randn(64L, 192L)
    let y = torch.randn(64L, 192L)
    use lin = torch.nn.Linear(192L, 192L)
    use ln = torch.nn.LayerNorm(192L)
    use att = new Attention(192, 3, true, Math)
    use mlp = new Mlp(192, 768)
    let x3 = torch.randn(2L, 50L, 192L)
    let xb = torch.randn(8L, 50L, 192L)
    use model = MaskedAutoencoder.Create({ MaeConfig.tiny with Depth = 1; DecoderDepth = 1 }, 0L)
    use g = new Generator(1UL, torch.CPU)
    let imgs = torch.randn(4L, 1L, 28L, 28L)
    use opt = Optim.adamW 1e-4 (0.9, 0.95) (Optim.decayGroups 0.05 model)
    let cases : (string * (unit -> unit)) list =
        [ "x * 0.5", (fun () -> x * 0.5 |> ignore)
          "x.mul(0.5)", (fun () -> x.mul(0.5.ToScalar()) |> ignore)
          "x.add(y, alpha)", (fun () -> x.add(y, alpha = (0.5).ToScalar()) |> ignore)
          "softmax f32", (fun () -> x.softmax(-1L, ScalarType.Float32) |> ignore)
          "linear module", (fun () -> lin.forward x |> ignore)
          "layernorm module", (fun () -> ln.forward x |> ignore)
          "Kernels.Linear", (fun () -> Kernels.Linear(x3, lin.weight, lin.bias) |> ignore)
          "attention fwd+bwd", (fun () -> let z = x3.detach().requires_grad_(true) in att.forward(z).sum().backward())
          "mlp fwd+bwd", (fun () -> let z = x3.detach().requires_grad_(true) in mlp.forward(z).sum().backward())
          "mae step", (fun () -> model.Forward(imgs, g).Loss.backward(); opt.Step(); opt.ZeroGrad())
          "no_grad", (fun () -> use _ = torch.no_grad() in ())
          "Kernels.Linear invoke", (fun () -> Kernels.Linear(xb, lin.weight, lin.bias) |> ignore)
          "Kernels.Linear invoke f+b", (fun () -> let z = xb.detach().requires_grad_(true) in Kernels.Linear(z, lin.weight, lin.bias).sum().backward())
          "Kernels.Mlp fwd", (fun () -> use _ = torch.no_grad() in mlp.forward x3 |> ignore)
          "sum().backward()", (fun () -> let z = x.detach().requires_grad_(true) in z.sum().backward())
          "x.data[0]", (fun () -> use d = x.sum().data<float32>() in d.[0L] |> ignore)
          "x.ToSingle", (fun () -> x.sum().ToSingle() |> ignore)
          "x.item", (fun () -> x.sum().item<float32>() |> ignore) ]
    // what Runtime.endOfStep costs after a (small) MAE step
    let costs =
        [| for _ in 1 .. 200 do
               (use _ = torch.NewDisposeScope() in model.Forward(imgs, g).Loss.backward(); opt.Step(); opt.ZeroGrad())
               let sw = Stopwatch.StartNew()
               Runtime.endOfStep ()
               yield sw.Elapsed.TotalMilliseconds |] |> Array.sort
    eprintfn "Runtime.endOfStep after a step: median %.3f ms, max %.3f ms" costs.[100] costs.[199]
    for name, f in cases do
        for _ in 1 .. 20 do (use _ = torch.NewDisposeScope() in f ())
        GC.Collect()
        GC.WaitForPendingFinalizers()
        GC.Collect()
        let n = 2000
        let before = nativeInUse ()
        for _ in 1 .. n do (use _ = torch.NewDisposeScope() in f ())
        let held = nativeInUse ()
        GC.Collect()
        GC.WaitForPendingFinalizers()
        GC.Collect()
        let after = nativeInUse ()
        eprintfn "%-20s held until GC: %7.1f bytes per call (in use +%.0f KiB before GC, +%.0f KiB after)" name ((held - after) / float n) ((held - before) / 1024.0) ((after - before) / 1024.0)

/// "heap A MiB (in use U, free F in C chunks), mmapped M MiB", or "" where there is no mallinfo2.
let heapInfo () =
    try
        let m = mallinfo2 ()
        let mib (x: unativeint) = float (uint64 x) / 1048576.0
        sprintf "heap %.1f MiB (in use %.1f, free %.1f in %d chunks), mmapped %.1f MiB in %d" (mib m.Arena) (mib m.Uordblks) (mib m.Fordblks) (uint64 m.Ordblks) (mib m.Hblkhd) (uint64 m.Hblks)
    with _ -> ""

/// Trains the tiny preset for `steps` optimizer steps on synthetic images and reports resident
/// memory at given steps: it must stay flat after warm-up (one dispose scope per step).
let soak (steps: int) (batch: int) (marks: int list) =
    let cfg = MaeConfig.tiny
    use model = MaskedAutoencoder.Create(cfg, 0L)
    let n = batch * 16
    use images = torch.randn(int64 n, 1L, 28L, 28L)
    let epochs = (steps + 15) / 16
    let options =
        { PretrainOptions.defaults with
            Epochs = epochs; BatchSize = batch; BaseLr = 1e-3; MaxIterations = steps }
    let seen = Collections.Generic.Dictionary<int, float>()
    let collect = not (isNull (Environment.GetEnvironmentVariable "MAE_BENCH_GC"))
    let report (p: PretrainProgress) =
        if collect then
            GC.Collect()
            GC.WaitForPendingFinalizers()
        if not (isNull (Environment.GetEnvironmentVariable "MAE_BENCH_HEAP")) && p.Step % 250 = 0 then
            eprintfn "step %5d  rss %.1f MiB  %s, gen0 GCs %d\n   %O" p.Step (rssMiB ()) (heapInfo ()) (GC.CollectionCount 0) (TorchSharp.DisposeScopeManager.Statistics)
        if List.contains p.Step marks then
            let rss = rssMiB ()
            seen.[p.Step] <- rss
            let gc = GC.GetGCMemoryInfo()
            eprintfn "step %5d  rss %.1f MiB  loss %.4f  (managed heap %.1f MiB, committed %.1f MiB)" p.Step rss p.Loss
                (float (GC.GetTotalMemory false) / 1048576.0) (float gc.TotalCommittedBytes / 1048576.0)
    let r = Pretrain.run model images options null report Threading.CancellationToken.None
    if not (isNull (Environment.GetEnvironmentVariable "MAE_BENCH_TIMES")) then
        eprintfn "%s" (String.Join("\n", Kernels.CheckedShapes))
    let parts = marks |> List.map (fun m -> sprintf "\"rss_mib_step_%d\":%.1f" m seen.[m]) |> String.concat ","
    let first, last = seen.[List.head marks], seen.[List.last marks]
    let line =
        sprintf "{\"case\":\"soak-tiny\",\"steps\":%d,\"batch\":%d,%s,\"growth_percent\":%.2f,\"seconds\":%.0f}"
            r.Steps batch parts ((last - first) / first * 100.0) r.Seconds
    printfn "%s" line
    line

/// Writes JSON lines as one array to benchmarks/results.json (from the repository root) or
/// ./benchmark-results.json elsewhere, atomically.
let writeResults (lines: string list) =
    let path =
        if IO.Directory.Exists "benchmarks" then IO.Path.GetFullPath "benchmarks/results.json"
        else IO.Path.GetFullPath "benchmark-results.json"
    Checkpoint.writeAtomically path (fun s ->
        let text = "[\n  " + String.Join(",\n  ", lines) + "\n]\n"
        let bytes = Text.Encoding.UTF8.GetBytes text
        s.Write(bytes, 0, bytes.Length))
    eprintfn "results: %s" path

/// Step timings of every case (or those named), the matmul peaks first; one JSON line each.
let steps (only: string list) =
    let fp32 = Steps.matmulPeak ScalarType.Float32
    let bf16, _ = Steps.matmulPeak ScalarType.BFloat16
    let peak =
        sprintf "{\"case\":\"matmul-peak-2048\",\"fp32_gflops\":%.1f,\"fp32_onednn_gflops\":%.1f,\"bf16_gflops\":%.1f,\"threads\":%d}"
            (fst fp32) (snd fp32) bf16 (torch.get_num_threads ())
    printfn "%s" peak
    let lines =
        [ for c in Steps.cases do
              if List.isEmpty only || List.contains c.Name only then
                  let line = Steps.run c 10 20 fp32
                  printfn "%s" line
                  yield line ]
    peak :: lines

[<EntryPoint>]
let main argv =
    torch.set_num_threads (match Environment.GetEnvironmentVariable "MAE_BENCH_THREADS" with null | "" -> 2 | s -> int s)
    Runtime.tuneAllocator ()
    // MAE_BENCH_MALLOPT="param=value ...": glibc mallopt settings after Mae's own (experiments)
    match Environment.GetEnvironmentVariable "MAE_BENCH_MALLOPT" with
    | null | "" -> ()
    | s ->
        for kv in s.Split(' ', StringSplitOptions.RemoveEmptyEntries) do
            let parts = kv.Split('=')
            eprintfn "mallopt(%s, %s) -> %d" parts.[0] parts.[1] (mallopt (int parts.[0], int parts.[1]))
    if Environment.GetEnvironmentVariable "MAE_BENCH_ONEDNN" = "0" then Kernels.OneDnnLinear <- false
    eprintfn "threads %d, oneDNN linear %b" (torch.get_num_threads ()) Kernels.OneDnnLinear
    match argv with
    | [| "profile" |] ->
        profile Sdpa
        profile Math
        0
    | a when a.Length >= 2 && a.[0] = "breakdown" ->
        for n in a.[1..] do breakdown n 20
        0
    | a when a.Length >= 2 && a.[0] = "forward" ->
        for n in a.[1..] do forwardParts n
        0
    | [| "kernels" |] ->
        kernels ()
        0
    | [| "cores" |] ->
        cores ()
        0
    | [| "coreops" |] ->
        coreOps ()
        0
    | [| "linconv" |] ->
        linconv ()
        0
    | [| "blockparts" |] ->
        blockParts ()
        0
    | [| "coreprefix" |] ->
        corePrefix ()
        0
    | a when a.Length >= 3 && a.[0] = "ab" ->
        // ab SETTING CASE [ROUNDS]: SETTING fusedmlp (Kernels.FusedMlp) or onednn (Kernels.OneDnnLinear)
        let set (v: bool) () =
            match a.[1] with
            | "fusedmlp" -> Kernels.FusedMlp <- v
            | "onednn" -> Kernels.OneDnnLinear <- v
            | s -> failwithf "unknown setting %s" s
        let rounds = if a.Length > 3 then int a.[3] else 8
        let on, off = Steps.ab (Steps.find a.[2]) rounds (set true) (set false)
        printfn "{\"case\":\"%s\",\"setting\":\"%s\",\"on_ms\":%.1f,\"off_ms\":%.1f,\"ratio\":%.3f}" a.[2] a.[1] on off (on / off)
        0
    | [| "finalized" |] ->
        finalized ()
        0
    | [| "scriptrepeat" |] ->
        // do attention and the (fused) MLP give the same gradients on every call?
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
        0
    | [| "scriptblock" |] ->
        scriptBlock ()
        0
    | [| "dnnl" |] ->
        dnnl ()
        0
    | [| "dnnlparts" |] ->
        dnnlParts ()
        0
    | [| "dnnlcheck" |] ->
        dnnlCheck ()
        0
    | [| "gemms" |] ->
        gemms ()
        0
    | [| "soak" |] ->
        soak 5000 128 [ 500; 2500; 5000 ] |> ignore
        0
    | [| "soak"; n |] ->
        let n = int n
        soak n 128 [ n / 10; n / 2; n ] |> ignore
        0
    | a when a.Length >= 1 && a.[0] = "steps" ->
        // steps alone (from the repository root) keeps its figures; `compare` children run elsewhere
        let lines = steps (List.ofArray a.[1..])
        if a.Length = 1 then writeResults lines
        0
    | a when a.Length >= 1 && (a.[0] = "compare" || a.[0] = "--compare-peer") ->
        // compare [--peer DIR] [--rounds N] [--peer-malloc tuned|default]
        let rec opt name def (xs: string list) =
            match xs with
            | n :: v :: _ when n = name -> v
            | _ :: rest -> opt name def rest
            | [] -> def
        let rest = List.ofArray a.[1..]
        Compare.run (opt "--peer" "../shared/peer" rest) (int (opt "--rounds" "5" rest)) (opt "--peer-malloc" "tuned" rest) |> ignore
        0
    | [||] ->
        // everything: the 5,000-step soak (first, so that its resident memory is the training
        // run's own), the step cases, and the reference comparison when present
        let soakLine = soak 5000 128 [ 500; 2500; 5000 ]
        let stepLines = steps []
        let compareLines =
            if IO.File.Exists "../shared/peer/bench_mae.py" && IO.File.Exists "/usr/bin/python3" then
                Compare.run "../shared/peer" 5 "tuned"
            else
                eprintfn "no ../shared/peer/bench_mae.py (or /usr/bin/python3): comparison skipped"
                []
        writeResults (stepLines @ [ soakLine ] @ compareLines)
        0
    | _ ->
        eprintfn "usage: Mae.Benchmarks [steps [CASE ...] | soak [STEPS] | compare|--compare-peer [--peer DIR] [--rounds N] [--peer-malloc tuned|default] | profile | breakdown CASE ... | forward CASE ... | kernels | cores | coreops | coreprefix | blockparts | gemms | linconv | dnnl | dnnlparts | dnnlcheck]"
        2
