/// What every micro-benchmark shares: the thread count and allocator setting of the `steps`
/// benchmarks, and one short in-process job.
module Mae.Micro.Common

open BenchmarkDotNet.Configs
open BenchmarkDotNet.Jobs
open Perfolizer.Horology
open BenchmarkDotNet.Toolchains.InProcess.Emit
open TorchSharp

/// Called from each class's GlobalSetup: 2 intra-op threads (this machine's cores), tuned malloc.
let setup () =
    torch.set_num_threads 2
    Mae.Runtime.tuneAllocator ()

/// 3 warm-up and 10 measured iterations of about 250 ms, run inside this process (no generated
/// child project: the repository's paket restore, linux-x64 RuntimeIdentifier and
/// warnings-as-errors stay out of BenchmarkDotNet's way, and libtorch is loaded once). No
/// overhead stage: every case takes milliseconds, the empty-call overhead is nanoseconds, and the
/// stage would double the run. The whole suite takes about two minutes on 2 idle cores.
let job =
    Job.Default
        .WithWarmupCount(3)
        .WithIterationCount(10)
        .WithIterationTime(TimeInterval.FromMilliseconds 250.0)
        .WithEvaluateOverhead(false)
        .WithToolchain(InProcessEmitToolchain.Instance)
        .WithId("Micro")

/// The job above. `--filter` and `--list` work from the command line, but `--job` does not
/// replace this job (`--job dry` still ran it): change the job here.
let config () : IConfig = DefaultConfig.Instance.AddJob(job.AsDefault())
