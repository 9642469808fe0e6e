/// Pictures of what the model does: a PNG grid of original / masked input / reconstruction.
module Mae.Visualize

open System.IO
open TorchSharp
open StbImageWriteSharp

/// [K, C, H, W] in [0, 1] -> a PNG with one row per image and `columns` images per row
/// (images given row after row), each scaled up `scale` times, 2-pixel gaps.
let writeGrid (path: string) (columns: int) (scale: int) (images: Tensor) =
    Guard.rank "images" 4 "[K, C, H, W]" images
    let k, c, h, w = int images.shape.[0], int images.shape.[1], int images.shape.[2], int images.shape.[3]
    if c <> 1 && c <> 3 then Guard.fail "images channels" c "1 (grey) or 3 (RGB)"
    let rows = (k + columns - 1) / columns
    let gap = 2
    let cw, ch = w * scale + gap, h * scale + gap
    let width, height = columns * cw + gap, rows * ch + gap
    let pixels: byte[] = Array.create (width * height * c) 255uy
    let bytes: byte[] = (images.clamp_min(0.0).clamp_max(1.0) * 255.0).round().to_type(ScalarType.Byte).cpu().data<byte>().ToArray()
    for i in 0 .. k - 1 do
        let r, col = i / columns, i % columns
        let x0, y0 = gap + col * cw, gap + r * ch
        for y in 0 .. h * scale - 1 do
            for x in 0 .. w * scale - 1 do
                for ch in 0 .. c - 1 do
                    let v = bytes.[((i * c + ch) * h + y / scale) * w + x / scale]
                    pixels.[((y0 + y) * width + x0 + x) * c + ch] <- v
    Checkpoint.writeAtomically path (fun s ->
        ImageWriter().WritePng(pixels, width, height, (if c = 1 then ColorComponents.Grey else ColorComponents.RedGreenBlue), s))

/// Reconstructed patches in pixel space. With a norm-pix model the predictions are per-patch
/// normalised, so they are mapped back with statistics of the sample's *visible* patches — never
/// the hidden patches' own: the mean mean and mean standard deviation of the visible patches that
/// carry content (standard deviation above a tenth of the largest visible one; all visible
/// patches when none does). pred, target [N, L, P], mask [N, L] -> [N, L, P]
let denormalise (normPix: bool) (pred: Tensor) (target: Tensor) (mask: Tensor) =
    if not normPix then pred
    else
        let visible = (1.0 - mask).unsqueeze(-1L) // [N, L, 1]
        let mean = target.mean([| -1L |], keepdim = true)
        let std = (target.var(-1L, unbiased = true, keepdim = true) + Losses.normPixEps).sqrt()
        let largest = (std * visible).amax([| 1L |], keepdim = true) // [N, 1, 1]
        let content = visible * std.gt(largest * 0.1).to_type(visible.dtype)
        let hasContent = content.sum([| 1L |], keepdim = true).gt(torch.tensor(0.0f))
        let weights = torch.where(hasContent, content, visible)
        let count = weights.sum([| 1L |], keepdim = true).clamp_min(1.0)
        let vMean = (mean * weights).sum([| 1L |], keepdim = true) / count
        let vStd = (std * weights).sum([| 1L |], keepdim = true) / count
        pred * vStd + vMean

/// `denormalise` for the model's target layout: per token for images; per token and channel for
/// video (VideoMAE's target), by treating each (token, channel) pair as a token of its own.
/// pred, target [N, L, Q*C], mask [N, L] -> [N, L, Q*C]
let denormaliseFor (config: MaeConfig) (pred: Tensor) (target: Tensor) (mask: Tensor) =
    match config.Input with
    | Video v when config.NormPixLoss && v.Channels > 1 ->
        let c = int64 v.Channels
        let n, l, p = pred.shape.[0], pred.shape.[1], pred.shape.[2]
        let split (x: Tensor) = x.reshape(n, l, p / c, c).permute(0L, 1L, 3L, 2L).reshape(n, l * c, p / c)
        let merged = denormalise true (split pred) (split target) (mask.repeat_interleave(c, 1L))
        merged.reshape(n, l, c, p / c).permute(0L, 1L, 3L, 2L).reshape(n, l, p)
    | _ -> denormalise config.NormPixLoss pred target mask

let private drawReconstruction (path: string) (model: MaskedAutoencoder) (generator: Generator) (toUnit: Tensor -> Tensor) (batch: Tensor) =
    use _ = torch.NewDisposeScope()
    use _ = torch.no_grad()
    let wasTraining = model.training
    model.eval ()
    let device = Runtime.deviceOf model
    let batch = batch.``to``(device)
    let out = model.Forward(batch, generator)
    let target = model.Target batch
    let m = out.Mask.unsqueeze(-1L)
    let predPix = denormaliseFor model.Config out.Pred target out.Mask
    let pasted = target * (1.0 - m) + predPix * m
    let k = batch.shape.[0]
    let hidden = model.Reassemble(m.expand_as(target)) // the batch layout, 1 on hidden pixels
    let original = toUnit batch
    let maskedInput = original * (1.0 - hidden) + 0.4 * hidden // hidden patches shown mid-grey
    let rows = torch.stack([| original; maskedInput; toUnit (model.Reassemble pasted) |], 1L) // [K, 3, C, ...]
    match batch.ndim with
    | 4L -> // images: one row per image, 3 columns
        writeGrid path 3 4 (rows.reshape(k * 3L, batch.shape.[1], batch.shape.[2], batch.shape.[3]))
    | _ -> // clips [K, C, T, H, W]: 3 rows per clip (original, masked, reconstruction), one column per frame
        let c, t, h, w = batch.shape.[1], batch.shape.[2], batch.shape.[3], batch.shape.[4]
        let frames = rows.permute(0L, 1L, 3L, 2L, 4L, 5L).reshape(k * 3L * t, c, h, w)
        writeGrid path (int t) (if h <= 64L then 3 else 1) frames
    if wasTraining then model.train ()

/// Runs the model on `imgs` (images [K, C, H, W] or clips [K, C, T, H, W]) with masks from
/// `generator` and writes a PNG: for images a 3-column grid (original, masked input,
/// reconstruction with the visible patches pasted back); for clips a strip of frames, three rows
/// per clip (the same three), one column per frame.
/// `toUnit` maps the model's input values back to [0, 1] for display. Everything native it makes
/// is freed before it returns (one dispose scope, then Runtime.endOfStep).
let reconstruction (path: string) (model: MaskedAutoencoder) (generator: Generator) (toUnit: Tensor -> Tensor) (imgs: Tensor) =
    drawReconstruction path model generator toUnit imgs
    Runtime.endOfStep ()

/// A series model's reconstruction as a plot: for each of the K windows of `series` [K, C, T] and
/// each channel, the window (dark line), its hidden segments shaded and the model's prediction of
/// them (red), one band per (window, channel), named by `names` (the columns; null: "channel c").
/// With RevIN the predictions (made in the window's standardised units) are mapped back with the
/// window's own statistics; `toOriginal` then maps the model's input units to the data's (e.g.
/// undoing the dataset standardisation; `id` keeps them). Masks come from `generator`. Written
/// atomically as a PNG of 1200 px by 180 px per band.
let series (path: string) (model: MaskedAutoencoder) (generator: Generator) (toOriginal: Tensor -> Tensor) (names: string[]) (series: Tensor) =
    let input = model.Config.Series
    Guard.rank "series" 3 "[K, C, T]" series
    (
        use _ = torch.NewDisposeScope()
        use _ = torch.no_grad()
        let wasTraining = model.training
        model.eval ()
        let device = Runtime.deviceOf model
        let x = series.``to``(device)
        let out = model.Forward(x, generator)
        let adapter = model.Adapter :?> SeriesAdapter
        let target = model.Target x
        let pred = denormaliseFor model.Config out.Pred target out.Mask
        let predSeries =
            let p = model.Reassemble pred // [K, C, T] in target units
            match adapter.RevIN with
            | null -> p
            | revin ->
                let mean, stdev = revin.Statistics x
                p * stdev + mean
        let hidden: Tensor = model.Reassemble(out.Mask.unsqueeze(-1L).expand_as(target)).gt((0.5).ToScalar()) // [K, C, T]
        let original = (toOriginal x).cpu().to_type(ScalarType.Float64)
        let predicted = (toOriginal predSeries).cpu().to_type(ScalarType.Float64)
        let hidden = hidden.cpu()
        if wasTraining then model.train ()
        let k, c, t = int x.shape.[0], int x.shape.[1], int x.shape.[2]
        let data (tensor: Tensor) (i: int) (ch: int) = tensor.[int64 i, int64 ch].data<float>().ToArray()
        Plots.useFont ()
        use plot = new ScottPlot.Plot()
        let steps = Array.init t float
        let mutable offset = 0.0
        let ticks = ResizeArray<ScottPlot.Tick>()
        for i in k - 1 .. -1 .. 0 do
            for ch in c - 1 .. -1 .. 0 do
                let o, p = data original i ch, data predicted i ch
                let lo, hi = Array.min (Array.append o p), Array.max (Array.append o p)
                let scale = if hi - lo > 1e-12 then 1.0 / (hi - lo) else 1.0
                let y (v: float) = offset + (v - lo) * scale
                let h = hidden.[int64 i, int64 ch].data<bool>().ToArray()
                let mutable j = 0
                while j < t do
                    if h.[j] then
                        let start = j
                        while j < t && h.[j] do j <- j + 1
                        let r = plot.Add.Rectangle(float start - 0.5, float j - 0.5, offset - 0.05, offset + 1.05)
                        r.FillStyle.Color <- ScottPlot.Color(255uy, 200uy, 120uy, 110uy)
                        r.LineStyle.Width <- 0.0f
                        let xs = [| for s in start .. j - 1 -> float s |]
                        let line = plot.Add.Scatter(xs, xs |> Array.map (fun s -> y p.[int s]))
                        line.Color <- ScottPlot.Color(200uy, 40uy, 30uy)
                        line.LineWidth <- 2.0f
                        line.MarkerSize <- 0.0f
                    else j <- j + 1
                let line = plot.Add.Scatter(steps, o |> Array.map y)
                line.Color <- ScottPlot.Color(40uy, 40uy, 60uy)
                line.LineWidth <- 1.5f
                line.MarkerSize <- 0.0f
                let name = if not (isNull names) && ch < names.Length then names.[ch] else sprintf "channel %d" ch
                ticks.Add(ScottPlot.Tick(offset + 0.5, (if k > 1 then sprintf "%s (window %d)" name i else name)))
                offset <- offset + 1.3
        plot.Axes.Left.TickGenerator <- ScottPlot.TickGenerators.NumericManual(ticks.ToArray())
        plot.Title(sprintf "%s masking %g: window (dark), hidden segments (shaded), reconstruction (red)" model.Config.Masking.Name model.Config.MaskRatio)
        plot.XLabel "step"
        Plots.savePng path 1200 (120 + 180 * k * c) plot
    )
    Runtime.endOfStep ()
