/// Process-wide settings that make libtorch fast on this platform, applied once.
module Mae.Runtime

open System
open System.IO
open System.Runtime.InteropServices

[<DllImport("libc", EntryPoint = "mallopt")>]
extern int private mallopt(int param, int value)

let private M_TRIM_THRESHOLD = -1
let private M_MMAP_THRESHOLD = -3

let mutable private applied = false

/// On Linux/glibc, stops the allocator from returning every large block to the OS on free (which
/// makes libtorch's CPU temporaries pay mmap/munmap on every op): mmap threshold 32 MiB, trim
/// threshold at its maximum. Safe to call many times; does nothing elsewhere.
let tuneAllocator () =
    if not applied then
        applied <- true
        if OperatingSystem.IsLinux() then
            try
                mallopt (M_MMAP_THRESHOLD, 32 * 1024 * 1024) |> ignore
                mallopt (M_TRIM_THRESHOLD, Int32.MaxValue) |> ignore
            with
            | :? DllNotFoundException
            | :? EntryPointNotFoundException -> () // not glibc (e.g. musl): leave the allocator alone

[<DllImport("libc", EntryPoint = "setenv")>]
extern int private setenv(string name, string value, int overwrite)

/// Whether OpenMP's runtime (libgomp, which libtorch's CPU build uses) is already in the process:
/// it reads its environment once, when it loads.
let private openMpLoaded () =
    try File.ReadAllText("/proc/self/maps").Contains "libgomp"
    with _ -> false

/// Makes libtorch's OpenMP threads sleep at barriers instead of spinning (OMP_WAIT_POLICY=PASSIVE),
/// unless OMP_WAIT_POLICY is set already (an empty value counts as unset). On a machine whose cores other processes share, a
/// spinning thread that loses its core stalls every other thread at the next barrier: with a busy
/// process on one of two cores, a step took 2.6x its quiet time with spinning and 1.9x with
/// PASSIVE, and the quiet step did not change; a tiny model's step (many small parallel regions)
/// can be 20-50% slower quiet, waking threads (benchmarks/README.md, "A shared machine"). OpenMP
/// reads the variable when it loads, so this must run before the first call into libtorch (before
/// any `torch.*`): .NET's Environment does not reach native code, so the C environment is set with
/// setenv. Returns false when it came too late (libgomp already loaded) or the platform has no
/// setenv; true when the policy will apply (or was the user's to choose).
let preferPassiveWaiting () : bool =
    match Environment.GetEnvironmentVariable "OMP_WAIT_POLICY" with
    | null | "" when OperatingSystem.IsLinux() || OperatingSystem.IsMacOS() ->
        if openMpLoaded () then false
        else
            try
                setenv ("OMP_WAIT_POLICY", "PASSIVE", 1) = 0
                && (Environment.SetEnvironmentVariable("OMP_WAIT_POLICY", "PASSIVE"); true)
            with
            | :? DllNotFoundException
            | :? EntryPointNotFoundException -> false
    | null | "" -> false
    | _ -> true

/// Call at the end of a training step, once its dispose scope has closed. TorchSharp makes some
/// native objects that no dispose scope owns (Scalars inside its operators and `item`, state of
/// TorchScript calls and their backward); the garbage collector frees them whenever it happens
/// to run, scattering small native blocks between the step's large ones, and over thousands of
/// steps the native heap fragments and grows. Collecting here frees them at the same point of
/// every step. It is a collection of the young generations of a small managed heap: a median of
/// 0.7 ms after a small MAE step on a 2-core machine (benchmarks: `finalized`).
let endOfStep () =
    GC.Collect(1, GCCollectionMode.Forced, true)
    GC.WaitForPendingFinalizers()

/// The device named by a string ("cpu", "cuda", "cuda:1"); CPU when null or empty.
let device (name: string) : Device =
    if String.IsNullOrWhiteSpace name then TorchSharp.torch.CPU
    else
        try TorchSharp.torch.device(name)
        with e -> raise (ArgumentException(sprintf "device was \"%s\"; expected \"cpu\", \"cuda\" or \"cuda:N\" (%s)" name e.Message, "device"))

/// The device a module's parameters live on (CPU for a module without parameters).
let deviceOf (m: TorchSharp.torch.nn.Module) : Device =
    match Seq.tryHead (m.parameters()) with
    | Some p -> p.device
    | None -> TorchSharp.torch.CPU
