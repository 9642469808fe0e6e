/// What `mae pretrain` leaves beside its checkpoint for a person to watch: TensorBoard event files
/// under OUT/tb (loss, learning rate, throughput and gradient norm per step) and the loss curve
/// OUT/loss.png (ScottPlot).
module Mae.Cli.RunLog

open System
open System.IO
open TorchSharp
open Mae

/// Records each step's figures as TensorBoard scalars (train/loss, train/lr,
/// train/images_per_second, train/grad_norm) in `logDir`, and keeps the losses for the curve.
type Recorder(logDir: string) =
    let writer = torch.utils.tensorboard.SummaryWriter(logDir)
    let steps = ResizeArray<float>()
    let losses = ResizeArray<float>()

    /// The folder of the event files.
    member _.LogDir = writer.LogDir

    /// Steps recorded in this run.
    member _.Count = steps.Count

    member _.Record(p: PretrainProgress) =
        writer.add_scalar ("train/loss", float32 p.Loss, p.Step)
        writer.add_scalar ("train/lr", float32 p.Lr, p.Step)
        writer.add_scalar ("train/images_per_second", float32 p.ImagesPerSecond, p.Step)
        writer.add_scalar ("train/grad_norm", float32 p.GradNorm, p.Step)
        steps.Add(float p.Step)
        losses.Add p.Loss

    /// Writes the loss per step and its running mean (a window of 1/20 of the steps, at least 1)
    /// to `path` as a 1000 x 560 PNG, atomically; nothing when no step was recorded.
    member _.PlotLoss(path: string, title: string) =
        if steps.Count > 0 then
            let xs, ys = steps.ToArray(), losses.ToArray()
            Plots.useFont ()
            let window = max 1 (ys.Length / 20)
            let mean =
                Array.init ys.Length (fun i ->
                    let lo = max 0 (i - window + 1)
                    Array.average ys.[lo..i])
            use plot = new ScottPlot.Plot()
            let raw = plot.Add.Scatter(xs, ys)
            raw.MarkerSize <- 0.0f
            raw.LineWidth <- 1.0f
            raw.Color <- ScottPlot.Color(120uy, 160uy, 220uy)
            raw.LegendText <- "loss of each step"
            let smooth = plot.Add.Scatter(xs, mean)
            smooth.MarkerSize <- 0.0f
            smooth.LineWidth <- 2.5f
            smooth.Color <- ScottPlot.Color(200uy, 60uy, 40uy)
            smooth.LegendText <- sprintf "mean of the last %d steps" window
            plot.Title title
            plot.XLabel "optimizer step"
            plot.YLabel "reconstruction loss (hidden patches)"
            plot.ShowLegend() |> ignore
            Plots.savePng path 1000 560 plot
