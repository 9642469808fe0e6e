/// Evaluation gives its native memory back as it goes, as training does: no tensor outlives a call,
/// and nothing native is left waiting for the garbage collector. TorchSharp leaves some native
/// objects to finalizers (Scalars made by operators from .NET numbers, `item()`); left across
/// calls they scatter small blocks over the native heap and resident memory grows (repeated
/// `KnnAccuracy` calls: 8–137 MB over 8–15 calls, flat with a collection after each).
module Mae.Tests.Unit.EvaluationMemoryTests

open System
open System.Runtime.InteropServices
open System.Threading
open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

/// glibc's allocator statistics (mallinfo2), in bytes.
[<Struct; StructLayout(LayoutKind.Sequential)>]
type MallInfo2 =
    val Arena: unativeint
    val Ordblks: unativeint
    val Smblks: unativeint
    val Hblks: unativeint
    val Hblkhd: unativeint // bytes in mmapped blocks
    val Usmblks: unativeint
    val Fsmblks: unativeint
    val Uordblks: unativeint // bytes in use on the heap
    val Fordblks: unativeint
    val Keepcost: unativeint

[<DllImport("libc", EntryPoint = "mallinfo2")>]
extern MallInfo2 private mallinfo2()

/// Native bytes in use (glibc heap and mmapped blocks); None without glibc's mallinfo2.
let private nativeInUse () =
    try
        let m = mallinfo2 ()
        Some(int64 (uint64 m.Uordblks + uint64 m.Hblkhd))
    with
    | :? DllNotFoundException
    | :? EntryPointNotFoundException -> None

let private collectAll () =
    GC.Collect()
    GC.WaitForPendingFinalizers()
    GC.Collect()
    GC.WaitForPendingFinalizers()

/// Native bytes that `calls` calls of `f` leave for finalizers: in use right after the calls,
/// minus in use after a full collection. After one warm-up call; the smallest of three tries, so
/// that another thread allocating meanwhile (the JIT) cannot make a clean function look leaky.
let private heldUntilCollection (calls: int) (f: unit -> unit) =
    f ()
    [ for _ in 1 .. 3 do
          collectAll ()
          for _ in 1 .. calls do
              f ()
          match nativeInUse () with
          | None -> ()
          | Some held ->
              collectAll ()
              yield held - (nativeInUse ()).Value ]
    |> function
        | [] -> skiptest "no glibc mallinfo2 on this platform"
        | tries -> List.min tries

/// Tensors made by `f` on this thread (in a dispose scope or not) and not disposed when it returns.
let private tensorsLeft (f: unit -> unit) =
    let live () =
        let s = DisposeScopeManager.Statistics.TensorStatistics
        s.CreatedInScopeCount + s.CreatedOutsideScopeCount - s.DisposedInScopeCount - s.DisposedOutsideScopeCount
    let before = live ()
    f ()
    live () - before

/// At most this many native bytes may wait for a collection after all the calls of a case: a
/// Scalar left to its finalizer holds 48 bytes, an `item()` 57, and every case makes dozens per
/// call when it leaves them.
let private slack = 256L

/// `f` (called `calls` times) leaves no tensor alive and no native memory for the finalizers.
let private releasesItsMemory (what: string) (calls: int) (f: unit -> unit) =
    f ()
    let left = tensorsLeft f
    Expect.equal left 0L (sprintf "%s: tensors left alive by one call" what)
    let held = heldUntilCollection calls f
    if not (isNull (Environment.GetEnvironmentVariable "MAE_TEST_MEMORY")) then
        eprintfn "%s: %d tensors left by a call, %d native bytes held until a collection after %d calls" what left held calls
    Expect.isLessThanOrEqual held slack (sprintf "%s: native bytes held until a collection after %d calls" what calls)

/// Features and labels around `classes` centres: x [n, d], y [n].
let private clustered (seed: int) (n: int) (d: int) (classes: int) =
    use g = gen seed
    let y = torch.randint(0L, int64 classes, [| int64 n |], generator = g)
    let centres = torch.randn([| int64 classes; int64 d |], generator = g) * 3.0
    centres.index_select(0L, y) + torch.randn([| int64 n; int64 d |], generator = g), y

let tests =
    testList "evaluation native memory" [
        test "the measures see a leaked tensor and Scalars left to finalizers (so they can fail)" {
            use x = torch.ones(4L)
            Expect.equal (tensorsLeft (fun () -> x.add(x) |> ignore)) 1L "a tensor made outside any scope and dropped"
            Expect.equal (tensorsLeft (fun () -> use _ = torch.NewDisposeScope() in x.add(x) |> ignore)) 0L "one disposed by its scope"
            match nativeInUse () with
            | None -> skiptest "no glibc mallinfo2 on this platform"
            | Some _ ->
                let scalars () = (use _ = torch.NewDisposeScope() in for _ in 1 .. 100 do (x * 0.5) |> ignore)
                Expect.isGreaterThan (heldUntilCollection 1 scalars) (4L * slack) "100 Scalars made from 0.5 wait for a collection"
                let collected () = scalars (); Runtime.endOfStep ()
                Expect.isLessThanOrEqual (heldUntilCollection 1 collected) slack "none once Runtime.endOfStep has run"
        }
        test "Probe.knn" {
            let trainX, trainY = clustered 51 300 16 5
            let testX, testY = clustered 52 8192 16 5 // 16 batches of 512
            releasesItsMemory "Probe.knn" 10 (fun () -> Probe.knn 10 0.07 5 trainX trainY testX testY |> ignore)
        }
        test "Probe.linear" {
            let trainX, trainY = clustered 53 256 16 4
            let testX, testY = clustered 54 128 16 4
            let o = { Probe.defaultLinearOptions with Epochs = 2; BatchSize = 64 }
            releasesItsMemory "Probe.linear" 5 (fun () -> Probe.linear o 4 trainX trainY testX testY |> ignore)
        }
        test "Probe.extract over an encoder" {
            use m = MaskedAutoencoder.Create(small, 0L)
            m.eval ()
            let imgs = smoothPatterns 55 24 3
            releasesItsMemory "Probe.extract" 5 (fun () ->
                use z = Probe.extract (fun x -> m.Features(x, false)) torch.CPU 4 imgs
                ())
        }
        test "FineTune.run and FineTune.evaluate" {
            torch.manual_seed 56L |> ignore
            use clf = new VitClassifier(small, 3)
            let imgs = smoothPatterns 57 16 3
            let labels = torch.tensor(Array.init 16 (fun i -> int64 (i % 3)))
            let o = { FineTune.defaults with Epochs = 1; BatchSize = 8 }
            releasesItsMemory "FineTune.run" 3 (fun () -> FineTune.run clf imgs labels o CancellationToken.None |> ignore)
            releasesItsMemory "FineTune.evaluate" 5 (fun () -> FineTune.evaluate clf imgs labels |> ignore)
        }
        test "Visualize.reconstruction" {
            use m = MaskedAutoencoder.Create(small, 0L)
            use g = gen 58
            use dir = new TempDir()
            let imgs = smoothPatterns 59 2 2
            releasesItsMemory "Visualize.reconstruction" 5 (fun () ->
                Visualize.reconstruction (dir.File "r.png") m g (fun x -> x.sigmoid()) imgs)
        }
        test "the C# Evaluation.KnnAccuracy and Evaluation.LinearProbe" {
            let imgs = smoothPatterns 60 96 4
            let labels = torch.tensor(Array.init 96 (fun i -> int64 (i % 4)))
            use train = new ImageDataset(imgs.narrow(0L, 0L, 64L), labels.narrow(0L, 0L, 64L))
            use test = new ImageDataset(imgs.narrow(0L, 64L, 32L), labels.narrow(0L, 64L, 32L))
            use model = MaeBuilder.ForImages(28, 7, 1).Encoder(fun e -> e.Width(32).Depth(2).Heads(2)).Decoder(fun d -> d.Width(32).Depth(1).Heads(2)).Build()
            releasesItsMemory "Evaluation.KnnAccuracy" 5 (fun () -> Evaluation.KnnAccuracy(model, train, test, 4, k = 5) |> ignore)
            releasesItsMemory "Evaluation.LinearProbe" 3 (fun () -> Evaluation.LinearProbe(model, train, test, 4, epochs = 2) |> ignore)
        }
    ]
