/// Whole training-step timings for the cases of ../shared/peer/bench_mae.py (same shapes, batch,
/// mask ratio, norm-pix, AdamW settings), the machine's matmul peak, and the step's GFLOP/s.
module Mae.Benchmarks.Steps

open System
open System.Diagnostics
open TorchSharp
open Mae

/// Resident memory of this process in MiB.
let rssMiB () =
    use p = Process.GetCurrentProcess()
    p.Refresh()
    float p.WorkingSet64 / 1048576.0

let private vit img patch d depth heads dd ddepth dheads ratio =
    { MaeConfig.withImage (img, img) (patch, patch) 3 MaeConfig.tiny with
        EmbedDim = d; Depth = depth; Heads = heads
        DecoderEmbedDim = dd; DecoderDepth = ddepth; DecoderHeads = dheads
        Masking = RandomPerSample ratio; NormPixLoss = true }

/// tiny-224: 224² RGB, patch 16, 192 x 12 (3 heads), decoder 128 x 4 (4 heads).
let tiny224 = vit 224 16 192 12 3 128 4 4 0.75
/// small-32: 32² RGB, patch 4, 192 x 6, decoder 128 x 2.
let small32 = vit 32 4 192 6 3 128 2 4 0.75

type Mode =
    /// MAE: the encoder sees the visible tokens only.
    | Mae
    /// SimMIM-style: the encoder sees all L tokens, hidden ones replaced by a learned mask token.
    | AllTokens
    /// Encoder-only inference, no masking, no gradients.
    | EncoderOnly

type Case = { Name: string; Config: MaeConfig; Batch: int; Mode: Mode; Precision: Precision }

let cases =
    [ { Name = "tiny-224"; Config = tiny224; Batch = 8; Mode = Mae; Precision = Float32 }
      { Name = "tiny-224-all-tokens"; Config = tiny224; Batch = 8; Mode = AllTokens; Precision = Float32 }
      { Name = "small-32"; Config = small32; Batch = 64; Mode = Mae; Precision = Float32 }
      { Name = "encoder-224"; Config = tiny224; Batch = 32; Mode = EncoderOnly; Precision = Float32 }
      { Name = "tiny-224-bf16"; Config = tiny224; Batch = 8; Mode = Mae; Precision = BFloat16 }
      { Name = "small-32-bf16"; Config = small32; Batch = 64; Mode = Mae; Precision = BFloat16 }
      // ./build.sh demo's step: the tiny preset (28x28 grey, patch 7, 128 x 4, decoder 128 x 1), batch 256
      { Name = "mnist-demo"; Config = MaeConfig.tiny; Batch = 256; Mode = Mae; Precision = Float32 } ]

/// Multiply-add FLOPs (x2) of one forward pass as Mae computes it: linear layers and attention
/// matmuls of every block, patch embedding (of the encoder's tokens only: Mae embeds the visible
/// patches alone) and prediction. Backward is counted as twice the forward.
let forwardFlops (c: MaeConfig) (batch: int) (encoderTokens: int) (withDecoder: bool) =
    let block d tokens = 2.0 * float tokens * (12.0 * float d * float d) + 2.0 * 2.0 * float tokens * float tokens * float d
    let l = c.NumTokens
    let cls = if c.ClsToken then 1 else 0
    let enc = float c.Depth * block c.EmbedDim (encoderTokens + cls) + 2.0 * float encoderTokens * float c.Image.PatchDim * float c.EmbedDim
    let dec =
        if withDecoder then
            2.0 * float (encoderTokens + cls) * float c.EmbedDim * float c.DecoderEmbedDim
            + float c.DecoderDepth * block c.DecoderEmbedDim (l + cls)
            + 2.0 * float l * float c.DecoderEmbedDim * float c.Image.PatchDim
        else 0.0
    float batch * (enc + dec)

/// GFLOP/s of a 2048² product on this machine: libtorch's `matmul` (its BLAS: MKL) and, for fp32,
/// Kernels.Linear (oneDNN where trusted, the fastest fp32 product Mae has). Returns (matmul, best).
let matmulPeak (dtype: ScalarType) =
    use _ = torch.NewDisposeScope()
    let n = 2048L
    let a = torch.randn(n, n).to_type(dtype)
    let b = torch.randn(n, n).to_type(dtype)
    let rate (f: unit -> unit) =
        for _ in 1 .. 3 do f ()
        let reps = 10
        let sw = Stopwatch.StartNew()
        for _ in 1 .. reps do f ()
        2.0 * float n ** 3.0 * float reps / sw.Elapsed.TotalSeconds / 1e9
    let blas = rate (fun () -> use _ = torch.NewDisposeScope() in a.matmul(b) |> ignore)
    if dtype = ScalarType.Float32 then
        blas, max blas (rate (fun () -> use _ = torch.NewDisposeScope() in Kernels.Linear(a, b, null) |> ignore))
    else blas, blas

/// The case named `name`.
let find (name: string) = cases |> List.find (fun c -> c.Name = name)

/// A case's model (seed 0), random images of its batch and the masking generator.
let inputs (c: Case) =
    let model = MaskedAutoencoder.Create(c.Config, 0L)
    let h, w = c.Config.Image.ImageSize
    let images = torch.randn(int64 c.Batch, int64 c.Config.Image.Channels, int64 h, int64 w)
    model, images, new Generator(0UL, torch.CPU)

/// Runs `f` with the step of case `c` (model seed 0, its images, AdamW 1.5e-4 / (0.9, 0.95) with
/// weight decay 0.05): forward, loss, `.item()`, backward, AdamW step, zero grad and
/// Runtime.endOfStep, as Pretrain.run does; encoder-only inference for EncoderOnly.
let withStep (c: Case) (f: (unit -> unit) -> 'a) : 'a =
    Runtime.tuneAllocator ()
    torch.manual_seed(0L) |> ignore
    let model, images, gen = inputs c
    use model = model
    use images = images
    use gen = gen
    use maskToken = new Modules.Parameter(torch.zeros(1L, 1L, int64 c.Config.EmbedDim).normal_(0.0, 0.02), true)
    let groups = Optim.decayGroups 0.05 model
    let groups =
        if c.Mode = AllTokens then Array.append groups [| { Optim.Parameters = [| maskToken |]; Optim.WeightDecay = 0.0; Optim.LrScale = 1.0 } |]
        else groups
    use opt = Optim.adamW 1.5e-4 (0.9, 0.95) groups
    let allTokens (x: Tensor) : MaskResult =
        let m = Masking.random gen c.Config.MaskRatio x
        let n, l = x.shape.[0], x.shape.[1]
        let ids = torch.arange(l).unsqueeze(0L).expand(n, l)
        let hidden = m.Mask.unsqueeze(-1L)
        { Visible = x * (1.0 - hidden) + maskToken * hidden; Mask = m.Mask; IdsKeep = ids; IdsRestore = ids }
    let stepBody () =
        use _ = torch.NewDisposeScope()
        match c.Mode with
        | EncoderOnly ->
            use _ = torch.no_grad()
            model.Encode(images) |> ignore
        | Mae | AllTokens ->
            let out =
                use _ = Precision.scope c.Precision
                if c.Mode = Mae then model.Forward(images, gen) else model.Forward(images, allTokens)
            out.Loss.item<float32>() |> ignore
            out.Loss.backward()
            opt.Step()
            opt.ZeroGrad()
    let step () =
        stepBody ()
        if c.Mode <> EncoderOnly then Runtime.endOfStep ()
    if c.Mode = EncoderOnly then model.eval () else model.train ()
    f step

/// Milliseconds of each of `n` calls of `step`.
let timed (step: unit -> unit) (n: int) =
    [| for _ in 1 .. n do
           let sw = Stopwatch.StartNew()
           step ()
           yield sw.Elapsed.TotalMilliseconds |]

/// Prints the median and the fastest of `reps` calls of `f` (after 3 warm-up calls), in ms.
let time (label: string) (reps: int) (f: unit -> unit) =
    timed f 3 |> ignore
    let ts = Array.sort (timed f reps)
    eprintfn "%-28s %8.2f ms (min %.2f)" label ts.[reps / 2] ts.[0]

/// Times one case: `warmup` steps, then at least `minSteps` timed ones (up to 60 within a 45 s
/// budget, as ../shared/peer/bench_mae.py does); one JSON object.
let run (c: Case) (warmup: int) (minSteps: int) (fp32Matmul: float, fp32Best: float) =
    let steps, times, rss =
        withStep c (fun step ->
            let warm = timed step warmup
            // as the reference does: as many steps as fit in a 45 s budget at the pace of the warm-up's
            // second half, at least `minSteps`, at most 60 (a longer window makes the median less sensitive to a slow spell)
            let settled = Array.sort warm.[warm.Length / 2 ..]
            let est = settled.[settled.Length / 2]
            let steps = max minSteps (min 60 (int (45000.0 / max est 1e-3)))
            let times = timed step steps
            steps, times, rssMiB ())
    if not (isNull (Environment.GetEnvironmentVariable "MAE_BENCH_TIMES")) then
        eprintfn "%s times: %s" c.Name (String.Join(" ", times |> Array.map (sprintf "%.0f")))
        eprintfn "%s" (String.Join("\n", Kernels.CheckedShapes))
    let sorted = Array.sort times
    let median = sorted.[sorted.Length / 2]
    let l = c.Config.NumTokens
    let encTokens =
        match c.Mode with
        | Mae -> Masking.keepCount l c.Config.MaskRatio
        | AllTokens | EncoderOnly -> l
    let fwd = forwardFlops c.Config c.Batch encTokens (c.Mode <> EncoderOnly)
    let flops = if c.Mode = EncoderOnly then fwd else 3.0 * fwd
    let gflops = flops / (median / 1000.0) / 1e9
    sprintf "{\"case\":\"%s\",\"precision\":\"%s\",\"batch\":%d,\"steps\":%d,\"median_ms\":%.1f,\"min_ms\":%.1f,\"max_ms\":%.1f,\"images_per_s\":%.1f,\"gflops\":%.1f,\"fraction_of_fp32_matmul_peak\":%.3f,\"fraction_of_fp32_best_peak\":%.3f,\"process_rss_mib\":%.0f,\"threads\":%d}"
        c.Name (if c.Precision = BFloat16 then "bf16" else "fp32") c.Batch steps median sorted.[0] sorted.[sorted.Length - 1] (float c.Batch / (median / 1000.0)) gflops (gflops / fp32Matmul) (gflops / fp32Best) rss (torch.get_num_threads ())

/// A/B in one process: the MAE step of case `c` timed in alternating blocks of 5 steps under
/// settings `a` and `b` (each applied before its block), after 10 warm-up steps of each; the
/// median step time of each. Slow spells of a shared machine then hit both sides alike.
let ab (c: Case) (rounds: int) (a: unit -> unit) (b: unit -> unit) =
    withStep c (fun step ->
        let block (set: unit -> unit) n =
            set ()
            timed step n
        block a 10 |> ignore
        block b 10 |> ignore
        let ta, tb = Collections.Generic.List<float>(), Collections.Generic.List<float>()
        let verbose = not (isNull (Environment.GetEnvironmentVariable "MAE_BENCH_TIMES"))
        for r in 1 .. rounds do
            let xa, xb = block a 5, block b 5
            if verbose then eprintfn "round %d: %s | %s" r (String.Join(" ", xa |> Array.map (sprintf "%.0f"))) (String.Join(" ", xb |> Array.map (sprintf "%.0f")))
            ta.AddRange xa
            tb.AddRange xb
        let median (xs: seq<float>) = let s = Array.sort (Array.ofSeq xs) in s.[s.Length / 2]
        median ta, median tb)
