/// Which libtorch kernels compute Mae's fp32 linear layers on the CPU.
///
/// libtorch sends an fp32 `linear` to its BLAS (MKL). MKL picks its kernels by CPU vendor, and on
/// AMD CPUs its fp32 GEMM takes a generic AVX2 path. oneDNN, also inside libtorch, picks kernels by
/// instruction set: on the AVX-512 AMD EPYC used for Mae's benchmarks its fp32 inner product is
/// 1.5-2x faster at transformer shapes (benchmarks/README.md). libtorch reaches oneDNN for fp32
/// linear layers only through `mkldnn_linear`, which TorchSharp does not bind, so Mae calls it from
/// small TorchScript functions.
///
/// libtorch 2.10's oneDNN (3.7.1) returns wrong products on that CPU for some shapes (those whose
/// blocked weight layout needs padding, e.g. 96 or 48 outputs; which ones also depends on the
/// thread count). The failure is a fixed property of the shape, so every (rows, inputs, outputs,
/// bias, threads) is checked once, on generated data against BLAS, before oneDNN is trusted with
/// it: the forward product and both halves of its backward (libtorch's autograd formula for
/// `mkldnn_linear`: `mkldnn_linear_backward_input` and `_weights`). A shape that fails any of the
/// three stays on `linear`.
namespace Mae

open System
open System.Collections.Concurrent
open TorchSharp

/// The oneDNN product itself and the per-shape check (internal; Kernels below is the API).
module internal OneDnn =
    let private source =
        String.concat "\n" [
            "def linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:"
            "    return torch.mkldnn_linear(x.to_mkldnn(), w, b).to_dense()"
            "def linear_nobias(x: Tensor, w: Tensor) -> Tensor:"
            "    return torch.mkldnn_linear(x.to_mkldnn(), w, None).to_dense()"
            // the two halves of mkldnn_linear's backward, as its autograd calls them
            "def input_grad(x: Tensor, g: Tensor, w: Tensor) -> Tensor:"
            "    return torch.mkldnn_linear_backward_input(x.size(), g.to_mkldnn(), w).to_dense()"
            "def weight_grad(g: Tensor, x: Tensor, w: Tensor, bias: bool) -> Tensor:"
            "    gw, gb = torch.mkldnn_linear_backward_weights(g.to_mkldnn(), x.to_mkldnn(), w, bias)"
            "    return gw"
            "def bias_grad(g: Tensor, x: Tensor, w: Tensor) -> Tensor:"
            "    gw, gb = torch.mkldnn_linear_backward_weights(g.to_mkldnn(), x.to_mkldnn(), w, True)"
            "    return gb"
            // a GELU MLP whose hidden activations stay in oneDNN's layout (no copy out and back)
            "def mlp(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:"
            "    return torch.mkldnn_linear(torch.gelu(torch.mkldnn_linear(x.to_mkldnn(), w1, b1)), w2, b2).to_dense()"
            "def mlp_reference(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:"
            "    return torch.linear(torch.gelu(torch.linear(x, w1, b1)), w2, b2)"
            "" ]

    /// The compiled functions; None where libtorch has no oneDNN or anything else fails.
    let unit : Lazy<torch.jit.CompilationUnit option> =
        lazy
            (try
                let cu = torch.jit.compile(source)
                use _ = torch.NewDisposeScope()
                use _ = torch.no_grad()
                // fixed values: nothing here may move the global generator
                let x = (torch.arange(15L, dtype = ScalarType.Float32).reshape(3L, 5L) - 7.0) / 5.0
                let w = (torch.arange(20L, dtype = ScalarType.Float32).reshape(4L, 5L) - 9.5) / 7.0
                cu.invoke<Tensor>("linear_nobias", x, w) |> ignore
                Some cu
             with _ -> None)

    /// x [m, k] (contiguous) W^T + b (b may be null) on oneDNN, unchecked.
    let raw (cu: torch.jit.CompilationUnit) (x: Tensor) (w: Tensor) (b: Tensor) =
        if isNull b then cu.invoke<Tensor>("linear_nobias", x, w) else cu.invoke<Tensor>("linear", x, w, b)

    // (rows, inputs, outputs, bias, threads) -> oneDNN's forward and both backward products are
    // right for this shape
    let private verdicts = ConcurrentDictionary<struct (int64 * int64 * int64 * bool * int), bool>()
    let private checkGen = lazy (new torch.Generator(20261124UL, torch.CPU))

    /// Every shape checked so far and its verdict.
    let checkedShapes () =
        verdicts
        |> Seq.map (fun kv -> let struct (m, k, n, b, t) = kv.Key in (m, k, n, b, t), kv.Value)
        |> Seq.sortBy fst
        |> Array.ofSeq

    let private close (a: Tensor) (reference: Tensor) =
        let scale = reference.abs().max().item<float32>() + 1e-6f
        (a - reference).abs().max().item<float32>() <= 1e-4f * scale

    /// The verdict of `check` for `key`, run once (on the private generator, in its own dispose
    /// scope; an exception counts as a failure) and remembered.
    let private checkOnce (known: ConcurrentDictionary<'k, bool>) (key: 'k) (check: torch.Generator -> bool) =
        known.GetOrAdd(key, fun _ ->
            lock checkGen (fun () ->
                use _ = torch.NewDisposeScope()
                try check checkGen.Value with _ -> false))

    /// Whether oneDNN computes an [m, k] x [n, k]^T (+ bias) product and its gradients (input,
    /// weight, bias) right here: checked on generated data against BLAS the first time the shape
    /// is seen with this thread count.
    let trusted (cu: torch.jit.CompilationUnit) (m: int64) (k: int64) (n: int64) (bias: bool) =
        checkOnce verdicts (struct (m, k, n, bias, torch.get_num_threads ())) (fun gen ->
            use _ = torch.no_grad()
            let x = torch.randn([| m; k |], generator = gen)
            let w = torch.randn([| n; k |], generator = gen)
            let b = if bias then torch.randn([| n |], generator = gen) else null
            let g = torch.randn([| m; n |], generator = gen)
            let forwardOk = close (raw cu x w b) (torch.nn.functional.linear(x, w, b))
            let inputOk = close (cu.invoke<Tensor>("input_grad", x, g, w)) (g.mm(w))
            let weightOk =
                close (cu.invoke<Tensor>("weight_grad", g, x, w, bias)) (g.t().mm(x))
                && (not bias || close (cu.invoke<Tensor>("bias_grad", g, x, w)) (g.sum(0L)))
            forwardOk && inputOk && weightOk)

    // (rows, inputs, hidden, outputs, threads) -> the fused MLP (oneDNN GELU between the two
    // products) gives the composed result and gradients for this shape
    let private mlpVerdicts = ConcurrentDictionary<struct (int64 * int64 * int64 * int64 * int), bool>()

    /// Whether `mlp` equals `mlp_reference` here (value and every gradient), checked once per shape
    /// on generated data.
    let trustedMlp (cu: torch.jit.CompilationUnit) (m: int64) (k: int64) (hidden: int64) (n: int64) =
        checkOnce mlpVerdicts (struct (m, k, hidden, n, torch.get_num_threads ())) (fun gen ->
            use _ = torch.enable_grad()
            let leaf (shape: int64[]) = torch.randn(shape, generator = gen).requires_grad_(true)
            let leaves = [| leaf [| m; k |]; leaf [| hidden; k |]; leaf [| hidden |]; leaf [| n; hidden |]; leaf [| n |] |]
            let g = torch.randn([| m; n |], generator = gen)
            let run (name: string) =
                for t in leaves do t.grad <- null
                let y = cu.invoke<Tensor>(name, leaves |> Array.map box)
                y.backward([| g |])
                Array.append [| y.detach() |] (leaves |> Array.map (fun t -> t.grad.detach()))
            Array.forall2 close (run "mlp") (run "mlp_reference"))

    /// Every fused-MLP shape checked so far and its verdict.
    let checkedMlpShapes () =
        mlpVerdicts
        |> Seq.map (fun kv -> let struct (m, k, h, n, t) = kv.Key in (m, k, h, n, t), kv.Value)
        |> Seq.sortBy fst
        |> Array.ofSeq

/// Kernel choices for the CPU (process-wide).
[<AbstractClass; Sealed>]
type Kernels private () =
    /// Whether fp32 linear layers on the CPU run through oneDNN (for the shapes where it checks
    /// out). Default true; false sends them all to libtorch's `linear` (its BLAS).
    static member val OneDnnLinear = true with get, set

    /// Whether an fp32 GELU MLP whose two products run on oneDNN is computed in one TorchScript
    /// call, its hidden activations staying in oneDNN's layout (no copy out and back). Default
    /// true; false computes it op by op, each product still on oneDNN where trusted. Same results.
    static member val FusedMlp = true with get, set

    /// The smallest product (rows x inputs x outputs multiply-adds) sent to oneDNN; smaller ones
    /// stay on `linear`, where the TorchScript call's fixed cost (~0.1 ms) would outweigh the gain.
    static member val OneDnnMinMacs = 4_000_000L with get, set

    /// The most rows (tokens in a batch) sent to oneDNN; larger products stay on `linear`. With
    /// libtorch 2.10's oneDNN on this 2-core AMD EPYC, `mkldnn_linear` corrupted the native heap
    /// (glibc: "corrupted double-linked list", "double free", or a silent crash) now and then for
    /// products of 7,000 rows and more (e.g. 7000x32x96, 8704x32x96, 8704x128x192, 12000x32x32,
    /// all fine with `linear`; the same shapes passed on other tries), never in the millions of
    /// products of up to 4,352 rows that training runs make (benchmarks/README.md, "oneDNN").
    /// Default 4,608; a value check cannot catch a memory error, so the bound keeps them off.
    static member val OneDnnMaxRows = 4_608L with get, set

    /// The product shapes checked so far in this process, as "rows x inputs x outputs (bias),
    /// threads: oneDNN|linear" (where each runs).
    static member CheckedShapes : string[] =
        Array.append
            (OneDnn.checkedShapes ()
             |> Array.map (fun ((m, k, n, b, t), ok) ->
                 sprintf "%dx%dx%d%s, %d threads: %s" m k n (if b then " +bias" else "") t (if ok then "oneDNN" else "linear")))
            (OneDnn.checkedMlpShapes ()
             |> Array.map (fun ((m, k, h, n, t), ok) ->
                 sprintf "mlp %dx%dx%dx%d, %d threads: %s" m k h n t (if ok then "fused" else "two products")))

    /// Whether this libtorch can run linear layers through oneDNN (checked once, on first use).
    static member OneDnnAvailable = OneDnn.unit.Force().IsSome

    /// Whether x (fp32 on the CPU, not empty) may go to oneDNN at all.
    static member private Eligible(x: Tensor) =
        Kernels.OneDnnLinear
        && x.device_type = DeviceType.CPU
        && x.dtype = ScalarType.Float32
        && x.dim() >= 2L
        && x.numel() > 0L

    /// The oneDNN functions, where an [m, k] x [n, k]^T (+ bias) product with these parameters
    /// fits, is big enough and is checked for its shape (the input already found Eligible).
    static member private OneDnnFor(m: int64, k: int64, weight: Tensor, bias: Tensor) =
        let fits =
            weight.dtype = ScalarType.Float32
            && weight.device_type = DeviceType.CPU
            && weight.dim() = 2L
            && weight.shape.[1] = k
            && (isNull bias || (bias.dtype = ScalarType.Float32 && bias.dim() = 1L && bias.shape.[0] = weight.shape.[0]))
        if not fits then None
        else
            let n = weight.shape.[0]
            if m * k * n < Kernels.OneDnnMinMacs || m > Kernels.OneDnnMaxRows then None
            else OneDnn.unit.Force() |> Option.filter (fun cu -> OneDnn.trusted cu m k n (not (isNull bias)))

    /// OneDnnFor for x W^T + b.
    static member private OneDnnFor(x: Tensor, weight: Tensor, bias: Tensor) =
        if not (Kernels.Eligible x) then None
        else
            let k = x.shape.[x.shape.Length - 1]
            Kernels.OneDnnFor(x.numel() / k, k, weight, bias)

    /// GELU MLP: (gelu(x W1^T + b1)) W2^T + b2. Where both products run on oneDNN, one call keeps
    /// the hidden activations in oneDNN's layout (checked once per shape against the composition);
    /// otherwise each product goes through Kernels.Linear. Differentiable in every input.
    static member Mlp(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) : Tensor =
        let fused =
            match (if Kernels.FusedMlp then Kernels.OneDnnFor(x, w1, b1) else None) with
            | Some cu when not (isNull b1) && not (isNull b2) && w2.dim() = 2L ->
                let k, h = w1.shape.[1], w1.shape.[0]
                let m = x.numel() / k
                match Kernels.OneDnnFor(m, h, w2, b2) with
                | Some _ when OneDnn.trustedMlp cu m k h w2.shape.[0] -> Some cu
                | _ -> None
            | _ -> None
        match fused with
        | Some cu ->
            let k = w1.shape.[1]
            let y = cu.invoke<Tensor>("mlp", x.reshape(-1L, k).contiguous(), w1.contiguous(), b1, w2.contiguous(), b2)
            let shape = Array.copy x.shape
            shape.[shape.Length - 1] <- w2.shape.[0]
            y.view(shape)
        | None -> Kernels.Linear(torch.nn.functional.gelu(Kernels.Linear(x, w1, b1)), w2, b2)

    /// x W^T + b (bias may be null) with the kernel chosen for x's device, dtype and shape:
    /// oneDNN for fp32 on the CPU where it is enabled, available and checked for the shape,
    /// libtorch's `linear` otherwise. Differentiable in x, weight and bias either way.
    static member Linear(x: Tensor, weight: Tensor, bias: Tensor) : Tensor =
        match Kernels.OneDnnFor(x, weight, bias) with
        | Some cu ->
            let k = weight.shape.[1]
            let y = OneDnn.raw cu (x.reshape(-1L, k).contiguous()) (weight.contiguous()) bias
            let shape = Array.copy x.shape
            shape.[shape.Length - 1] <- weight.shape.[0]
            y.view(shape)
        | None -> torch.nn.functional.linear(x, weight, bias)
