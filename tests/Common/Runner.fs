/// Shared entry point of the test programs: runs the Expecto tests and prints the plain summary
/// line `N passed, N failed` last, which build.sh and CI read.
module Mae.Tests.Runner

open Expecto
open Expecto.Impl

let run (argv: string[]) (tests: Test) =
    let plain = defaultConfig.printer
    let printer =
        { plain with
            summary =
                fun config summary ->
                    async {
                        do! plain.summary config summary
                        let failed = summary.failed.Length + summary.errored.Length
                        printfn "\n%d passed, %d failed" summary.passed.Length failed
                    } }
    // Tests touching TorchSharp's global state (default generator, threads) run in sequence;
    // plain output, so that the summary line stands alone for the scripts that read it.
    let args = Array.append [| "--colours"; "0"; "--no-spinner" |] argv
    runTestsWithCLIArgs [ Printer printer; Sequenced ] args tests
