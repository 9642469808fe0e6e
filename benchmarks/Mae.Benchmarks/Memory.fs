/// Native memory: what TorchSharp leaves to the garbage collector per operation (`finalized`) and
/// resident memory over a long training run (`soak`), with glibc's heap statistics.
module Mae.Benchmarks.Memory

open System
open System.Diagnostics
open TorchSharp
open Mae

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

/// MAE_BENCH_MALLOPT="PARAM=VALUE ...": glibc mallopt settings after Mae's own (experiments).
let applyMallopt (settings: string) =
    for kv in settings.Split(' ', StringSplitOptions.RemoveEmptyEntries) do
        let parts = kv.Split('=')
        eprintfn "mallopt(%s, %s) -> %d" parts.[0] parts.[1] (mallopt (int parts.[0], int parts.[1]))

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
            eprintfn "step %5d  rss %.1f MiB  %s, gen0 GCs %d\n   %O" p.Step (Steps.rssMiB ()) (heapInfo ()) (GC.CollectionCount 0) (TorchSharp.DisposeScopeManager.Statistics)
        if List.contains p.Step marks then
            let rss = Steps.rssMiB ()
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
