/// Moving-MNIST (Srivastava et al. 2015): clips of real MNIST digits bouncing inside a square
/// canvas, generated on demand from a seed, so that a clip is the same on every machine and
/// nothing is stored.
namespace Mae.Data

open System
open TorchSharp
open Mae

/// How Moving-MNIST clips are drawn.
type MovingMnistOptions =
    { /// Frames T per clip.
      Frames: int
      /// Side of the square canvas in pixels (at least the digits' side).
      CanvasSize: int
      /// Digits per clip, 1 or 2 (a clip's label is its first digit's class).
      Digits: int
      /// Speed range in pixels per frame: each digit moves at a speed drawn uniformly from it.
      Speed: float * float
      /// Clips in the dataset (drawn from the digits with replacement).
      Count: int
      /// Seed of the clips: digit choices, start positions, directions and speeds.
      Seed: int64 }

module MovingMnistOptions =
    /// 8 frames on a 48x48 canvas, one digit at 2-4 pixels per frame (the tiny video preset's input).
    let defaults = { Frames = 8; CanvasSize = 48; Digits = 1; Speed = (2.0, 4.0); Count = 20000; Seed = 0L }

/// Clips [1, T, S, S] of digits from `digits` [N, 1, h, w] (pixel values in [0, 1]) with their
/// `labels` [N]: each digit starts at a random place, moves in a straight line at a random angle
/// and speed and bounces off the canvas edges (the position is reflected); digits overlap by
/// pixel-wise maximum, as in Srivastava et al.'s generator. Clip i depends only on (Seed, i), so
/// `Read` is thread-safe and any subset reads the same clips. The digit tensors are copied once
/// into managed memory; the caller keeps ownership of its tensors.
type MovingMnistDataset(digits: Tensor, labels: Tensor, options: MovingMnistOptions) =
    do
        Guard.notNull "digits" digits
        Guard.rank "digits" 4 "[N, 1, h, w]" digits
        if digits.shape.[1] <> 1L then Guard.fail "digits" (Guard.shapeOf digits) "one channel: [N, 1, h, w]"
        Guard.nonEmptyBatch "digits" digits
        Guard.rank "labels" 1 "[N]" labels
        if labels.shape.[0] <> digits.shape.[0] then
            Guard.fail "labels" (Guard.shapeOf labels) (sprintf "one label per digit ([%d])" digits.shape.[0])
        Guard.positive "Frames" options.Frames
        Guard.positive "Count" options.Count
        if options.Digits < 1 || options.Digits > 2 then Guard.fail "Digits" options.Digits "1 or 2"
        let lo, hi = options.Speed
        if not (lo >= 0.0 && hi >= lo && Double.IsFinite hi) then Guard.fail "Speed" options.Speed "0 <= low <= high, finite"
        if int64 options.CanvasSize < max digits.shape.[2] digits.shape.[3] then
            Guard.fail "CanvasSize" options.CanvasSize (sprintf "at least the digits' side (%d)" (max digits.shape.[2] digits.shape.[3]))
    let n, dh, dw = int digits.shape.[0], int digits.shape.[2], int digits.shape.[3]
    let pixels: float32[] =
        use c = digits.to_type(ScalarType.Float32).cpu().contiguous()
        c.data<float32>().ToArray()
    let digitLabels = InMemory.labels labels
    let classes = InMemory.numberedClasses labels
    let s, t = options.CanvasSize, options.Frames

    /// The generator of clip `index`: its own stream, seeded by a SplitMix64 mix of the dataset
    /// seed and the index (HashCode is randomised per process, so it would not reproduce).
    let rng (index: int) =
        let mutable z = uint64 options.Seed * 0x9E3779B97F4A7C15UL + uint64 index + 0x632BE59BD9B4E019UL
        z <- (z ^^^ (z >>> 30)) * 0xBF58476D1CE4E5B9UL
        z <- (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
        z <- z ^^^ (z >>> 31)
        Random(int (z &&& 0x7FFFFFFFUL))

    /// Digit indices of clip `index` (the first draws of its generator).
    let pick (r: Random) = Array.init options.Digits (fun _ -> r.Next n)

    /// A coordinate moving at `v` pixels per frame inside [0, range], reflected at both ends.
    let bounce (start: float) (v: float) (range: float) (frame: int) =
        if range <= 0.0 then 0.0
        else
            let period = 2.0 * range
            let x = (start + v * float frame) % period
            let x = if x < 0.0 then x + period else x
            if x <= range then x else period - x

    member _.Options = options

    /// The class of clip `index`: its first digit's label.
    member _.Label(index: int) = digitLabels.[(pick (rng index)).[0]]

    interface IDataset with
        member _.Count = options.Count
        member _.Channels = 1
        member _.ClassNames = classes
        member this.Describe index = sprintf "Moving-MNIST clip %d (seed %d)" index options.Seed
        member this.Labels() = Array.init options.Count this.Label
        member _.Read index =
            if index < 0 || index >= options.Count then Guard.fail "index" index (sprintf "a clip index in [0, %d)" options.Count)
            let r = rng index
            let chosen = pick r
            let clip: float32[] = Array.zeroCreate (t * s * s)
            let lo, hi = options.Speed
            for d in chosen do
                let rangeY, rangeX = float (s - dh), float (s - dw)
                let y0, x0 = r.NextDouble() * rangeY, r.NextDouble() * rangeX
                let angle = r.NextDouble() * 2.0 * Math.PI
                let speed = lo + r.NextDouble() * (hi - lo)
                let vy, vx = speed * sin angle, speed * cos angle
                for f in 0 .. t - 1 do
                    let top = int (Math.Round(bounce y0 vy rangeY f))
                    let left = int (Math.Round(bounce x0 vx rangeX f))
                    let frame = f * s * s
                    for y in 0 .. dh - 1 do
                        let src = (d * dh + y) * dw
                        let dst = frame + (top + y) * s + left
                        for x in 0 .. dw - 1 do
                            let v = pixels.[src + x]
                            if v > clip.[dst + x] then clip.[dst + x] <- v
            { Input = torch.tensor(clip).reshape(1L, int64 t, int64 s, int64 s)
              Label = digitLabels.[chosen.[0]] }
