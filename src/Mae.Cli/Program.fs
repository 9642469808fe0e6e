/// Entry point of `mae`: the subcommands, and parse errors mapped to exit code 2.
module Mae.Cli.Program

open System.CommandLine
open System.CommandLine.Help
open Mae.Cli.Output

/// The root command with every subcommand.
let rootCommand () =
    let root =
        RootCommand(
            "mae: masked-autoencoder self-supervised learning. Pretrain an encoder, probe it, fine-tune it on few labels, draw reconstructions, inspect checkpoints, import and export PyTorch weights. "
            + "Exit codes: 0 success, 1 failure, 2 bad arguments, 130 pretraining interrupted by Ctrl-C (checkpoint saved)."
        )
    for c in
        [ PretrainCommand.create ()
          ProbeCommand.create ()
          FinetuneCommand.create ()
          ReconstructCommand.create ()
          ForecastCommand.create ()
          InfoCommand.create ()
          WeightsCommand.createImport ()
          WeightsCommand.createExport () ] do
        root.Subcommands.Add c
    root

[<EntryPoint>]
let main argv =
    // before anything loads libtorch: OpenMP reads its wait policy once
    Mae.Runtime.preferPassiveWaiting () |> ignore
    let parsed = (rootCommand ()).Parse argv
    if parsed.Errors.Count > 0 && not (parsed.Action :? HelpAction) then
        for e in parsed.Errors do
            error e.Message
        let path = parsed.CommandResult.Command.Name
        error (sprintf "run 'mae%s --help' for the options." (if path = "mae" then "" else " " + path))
        2
    else
        parsed.Invoke()
