/// Per-sample transforms: MAE's pretraining augmentation (RandomResizedCrop + horizontal flip),
/// the evaluation resize + center crop, and per-channel normalisation. Each transform takes the
/// sample's own System.Random, so a sample's result depends on that generator's seed alone and
/// not on the thread that runs it. Sources: torchvision.transforms.RandomResizedCrop,
/// RandomHorizontalFlip, Resize, CenterCrop; MAE's main_pretrain.py and util/datasets.py.
namespace Mae.Data

open System
open TorchSharp
open Mae

/// Where a crop cuts: rows [Top, Top + Height), columns [Left, Left + Width), in pixels.
type CropBox =
    { Top: int
      Left: int
      Height: int
      Width: int }

/// Per-channel statistics for normalisation: x -> (x - Mean[c]) / Std[c].
type ChannelStats =
    { /// One mean per channel, in the units of the samples (image folders: pixel / 255).
      Mean: float[]
      /// One standard deviation per channel, same units.
      Std: float[] }

module Transforms =

    /// ImageNet's statistics of pixel / 255, RGB (torchvision's and MAE's default):
    /// mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
    let imageNet = { Mean = [| 0.485; 0.456; 0.406 |]; Std = [| 0.229; 0.224; 0.225 |] }

    /// MAE's RandomResizedCrop area range (main_pretrain.py: scale=(0.2, 1.0)).
    let maeScale = (0.2, 1.0)

    /// torchvision's default aspect-ratio range (3/4, 4/3), drawn log-uniformly.
    let defaultRatio = (3.0 / 4.0, 4.0 / 3.0)

    /// timm's / MAE's evaluation crop fraction: resize the shorter side to size / 0.875, then
    /// center-crop `size` (MAE's util/datasets.py uses 224/256 = 0.875 for inputs up to 224).
    let evalCropPct = 0.875

    /// torchvision's RandomResizedCrop.get_params for an image of `height` x `width`: up to 10
    /// attempts at an area fraction uniform in `scale` and an aspect ratio (width/height)
    /// log-uniform in `ratio`, sides rounded half to even (Python's round); the first box that
    /// fits is placed uniformly. If none fits: the center crop of the whole image clamped to the
    /// ratio range. Draws from `rng` in a fixed order, so the box depends on its seed alone.
    let randomResizedCropBox (rng: Random) (height: int, width: int) (scaleMin: float, scaleMax: float) (ratioMin: float, ratioMax: float) : CropBox =
        Guard.positive "height" height
        Guard.positive "width" width
        if not (0.0 < scaleMin && scaleMin <= scaleMax && scaleMax <= 1.0) then
            Guard.fail "scale" (scaleMin, scaleMax) "0 < min <= max <= 1"
        if not (0.0 < ratioMin && ratioMin <= ratioMax) then
            Guard.fail "ratio" (ratioMin, ratioMax) "0 < min <= max"
        let area = float (height * width)
        let logMin, logMax = log ratioMin, log ratioMax
        let uniform lo hi = lo + (hi - lo) * rng.NextDouble()
        let rec attempt k =
            if k = 10 then None
            else
                let targetArea = area * uniform scaleMin scaleMax
                let aspect = exp (uniform logMin logMax)
                let w = int (Math.Round(sqrt (targetArea * aspect)))
                let h = int (Math.Round(sqrt (targetArea / aspect)))
                if 0 < w && w <= width && 0 < h && h <= height then
                    let top = rng.Next(0, height - h + 1)
                    let left = rng.Next(0, width - w + 1)
                    Some { Top = top; Left = left; Height = h; Width = w }
                else attempt (k + 1)
        match attempt 0 with
        | Some box -> box
        | None ->
            let inRatio = float width / float height
            let h, w =
                if inRatio < ratioMin then int (Math.Round(float width / ratioMin)), width
                elif inRatio > ratioMax then height, int (Math.Round(float height * ratioMax))
                else height, width
            { Top = (height - h) / 2; Left = (width - w) / 2; Height = h; Width = w }

    let private sizeOf (name: string) (x: Tensor) =
        Guard.rank name 3 "[C, H, W]" x
        int x.shape.[1], int x.shape.[2]

    /// [C, H, W] -> [C, box.Height, box.Width], a view of `x`.
    let crop (box: CropBox) (x: Tensor) =
        let h, w = sizeOf "x" x
        if box.Top < 0 || box.Left < 0 || box.Height <= 0 || box.Width <= 0 || box.Top + box.Height > h || box.Left + box.Width > w then
            Guard.fail "box" box (sprintf "a box inside the %d x %d image" h w)
        x.narrow(1L, int64 box.Top, int64 box.Height).narrow(2L, int64 box.Left, int64 box.Width)

    /// Bicubic resize (torch.nn.functional.interpolate, align_corners = false, antialias = true:
    /// torchvision's tensor Resize default, which follows PIL's bicubic — what MAE's transforms
    /// ran on — when downscaling): [C, h, w] -> [C, height, width]. Bicubic can overshoot the
    /// input's range slightly near edges; values are not clamped (torchvision's float-tensor path
    /// does not clamp either).
    let resize (height: int, width: int) (x: Tensor) =
        let h, w = sizeOf "x" x
        Guard.positive "height" height
        Guard.positive "width" width
        if h = height && w = width then x
        else
            use batch = x.unsqueeze(0L) // [1, C, h, w]
            let resized =
                torch.nn.functional.interpolate(batch, size = [| int64 height; int64 width |],
                                                mode = torch.InterpolationMode.Bicubic, align_corners = false, antialias = true)
            resized.squeeze(0L)

    /// torchvision's Resize(size) with one int: the shorter side becomes `size`, the longer side
    /// int(size * long / short) (truncated), bicubic. [C, h, w] -> [C, h', w']
    let resizeShorter (size: int) (x: Tensor) =
        let h, w = sizeOf "x" x
        Guard.positive "size" size
        if h <= w then resize (size, int (float size * float w / float h)) x
        else resize (int (float size * float h / float w), size) x

    /// torchvision's CenterCrop: top int(round((h - height) / 2)), left likewise.
    /// [C, h, w] -> [C, height, width]; ArgumentException if the image is smaller.
    let centerCrop (height: int, width: int) (x: Tensor) =
        let h, w = sizeOf "x" x
        if height > h || width > w then Guard.fail "x" (Guard.shapeOf x) (sprintf "an image of at least %d x %d" height width)
        let top = int (Math.Round(float (h - height) / 2.0))
        let left = int (Math.Round(float (w - width) / 2.0))
        crop { Top = top; Left = left; Height = height; Width = width } x

    /// [C, H, W] mirrored left-right (exact: a permutation of the columns).
    let horizontalFlip (x: Tensor) = x.flip(2L)

    /// A transform that returns its input unchanged.
    let identity = Func<Random, Tensor, Tensor>(fun _ x -> x)

    /// The transforms applied in order, all drawing from the sample's one generator.
    let compose (transforms: Func<Random, Tensor, Tensor>[]) =
        Guard.notNull "transforms" transforms
        Func<Random, Tensor, Tensor>(fun rng x -> transforms |> Array.fold (fun acc t -> t.Invoke(rng, acc)) x)

    /// RandomResizedCrop(size, scale, ratio, bicubic) then RandomHorizontalFlip(p = 0.5): the crop
    /// box is drawn first, then one uniform for the flip. [C, h, w] -> [C, height, width].
    let randomResizedCrop (height: int, width: int) (scale: float * float) (ratio: float * float) =
        Guard.positive "height" height
        Guard.positive "width" width
        Func<Random, Tensor, Tensor>(fun rng x ->
            let box = randomResizedCropBox rng (sizeOf "x" x) scale ratio
            let y = resize (height, width) (crop box x)
            if rng.NextDouble() < 0.5 then horizontalFlip y else y)

    /// MAE's pretraining augmentation (main_pretrain.py: RandomResizedCrop(input_size,
    /// scale=(0.2, 1.0), interpolation=3 (bicubic)) + RandomHorizontalFlip()), before
    /// normalisation. [C, h, w] -> [C, height, width]
    let pretrain (height: int, width: int) = randomResizedCrop (height, width) maeScale defaultRatio

    /// Evaluation: resize the shorter side to int(min(height, width) / cropPct) (bicubic), then
    /// center-crop height x width. Deterministic (the generator is not used).
    /// [C, h, w] -> [C, height, width]
    let evaluationWith (height: int, width: int) (cropPct: float) =
        Guard.positive "height" height
        Guard.positive "width" width
        if not (cropPct > 0.0 && cropPct <= 1.0) then Guard.fail "cropPct" cropPct "a fraction in (0, 1]"
        let shorter = int (float (min height width) / cropPct)
        Func<Random, Tensor, Tensor>(fun _ x -> centerCrop (height, width) (resizeShorter shorter x))

    /// timm's / MAE's evaluation transform: `evaluationWith (height, width) 0.875`.
    let evaluation (height: int, width: int) = evaluationWith (height, width) evalCropPct

    /// x -> (x - Mean[c]) / Std[c] per channel. [C, H, W] -> [C, H, W]; ArgumentException if
    /// the statistics have another channel count than the sample or a std <= 0.
    let normalize (stats: ChannelStats) =
        Guard.notNull "stats" (box stats)
        if isNull stats.Mean || isNull stats.Std || stats.Mean.Length <> stats.Std.Length || stats.Mean.Length = 0 then
            Guard.fail "stats" (sprintf "%A" stats) "as many means as standard deviations, at least one"
        if stats.Std |> Array.exists (fun s -> not (s > 0.0)) then Guard.fail "stats.Std" (sprintf "%A" stats.Std) "positive values"
        let c = stats.Mean.Length
        Func<Random, Tensor, Tensor>(fun _ x ->
            Guard.rank "x" 3 "[C, H, W]" x
            if int x.shape.[0] <> c then
                Guard.fail "x" (Guard.shapeOf x) (sprintf "%d channels, as many as the normalisation statistics" c)
            let mean = torch.tensor(stats.Mean |> Array.map float32).reshape(int64 c, 1L, 1L)
            let std = torch.tensor(stats.Std |> Array.map float32).reshape(int64 c, 1L, 1L)
            (x - mean) / std)

    /// The default statistics for `channels`: ImageNet's for 3 (RGB); for any other count there
    /// is none, and the ArgumentException says to compute them with `statistics` on the training split.
    let defaultStats (channels: int) =
        if channels = 3 then imageNet
        else Guard.fail "channels" channels "3 for ImageNet's default statistics; otherwise compute them with Transforms.statistics on the training split"

    /// MAE's pretraining pipeline: `pretrain (height, width)` then `normalize stats`.
    let forPretraining (height: int, width: int) (stats: ChannelStats) = compose [| pretrain (height, width); normalize stats |]

    /// MAE's evaluation pipeline: `evaluation (height, width)` then `normalize stats`.
    let forEvaluation (height: int, width: int) (stats: ChannelStats) = compose [| evaluation (height, width); normalize stats |]

    /// Per-channel mean and (population) standard deviation of every value of every sample of
    /// `dataset`, as read (image folders: pixel / 255), accumulated in float64. Reads the whole
    /// dataset once; raises what `Read` raises. Use it on the training split only.
    let statistics (dataset: IDataset) : ChannelStats =
        Guard.notNull "dataset" dataset
        if dataset.Count = 0 then Guard.fail "dataset" "empty" "at least one sample"
        let c = dataset.Channels
        let sum, sumSq = Array.zeroCreate<float> c, Array.zeroCreate<float> c
        let mutable count = 0.0
        for i in 0 .. dataset.Count - 1 do
            use _ = torch.NewDisposeScope()
            let x = dataset.Read(i).Input.to_type(ScalarType.Float64).reshape(int64 c, -1L) // [C, H*W]
            let s: float[] = x.sum(1L).data<float>().ToArray()
            let q: float[] = (x * x).sum(1L).data<float>().ToArray()
            for k in 0 .. c - 1 do
                sum.[k] <- sum.[k] + s.[k]
                sumSq.[k] <- sumSq.[k] + q.[k]
            count <- count + float x.shape.[1]
        let mean = sum |> Array.map (fun s -> s / count)
        let std = Array.init c (fun k -> sqrt (max 0.0 (sumSq.[k] / count - mean.[k] * mean.[k])))
        { Mean = mean; Std = std }
