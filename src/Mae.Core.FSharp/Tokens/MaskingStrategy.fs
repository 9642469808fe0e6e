/// Masking strategies: the masking functions of Masking.fs made selectable by name in a
/// configuration, with the token grid they need supplied by the model's input adapter.
namespace Mae

open System

/// How a model masks its tokens: a masking function chosen by name, its ratio, and the token
/// grid that the structured strategies read (it comes from the model's input adapter).
type MaskingStrategy =
    /// Random per sample (MAE, Audio-MAE): `Masking.random`; for a channel-independent series, one
    /// mask for all the channels of a sample (`Masking.randomGrouped`).
    | RandomPerSample of ratio: float
    /// Random per sample and per channel (PatchTST's random_masking): for a channel-independent
    /// series each channel's row draws its own mask (`Masking.random` on the rows).
    | RandomPerChannel of ratio: float
    /// One random mask for the whole batch (M3AE, TSFormer): `Masking.randomShared`.
    | RandomShared of ratio: float
    /// BEiT-style rectangles on a 2D grid: `Masking.block`.
    | BlockWise of ratio: float
    /// Tube masking (VideoMAE): one spatial mask per sample, repeated in every slot of the grid's
    /// first axis: `Masking.tube`.
    | Tube of ratio: float
    /// Whole time columns and frequency rows (Audio-MAE) on a grid [| F; T |]:
    /// `Masking.timeFrequency`. `Ratio` is the share of tokens hidden: 1 - (1 - time)(1 - freq).
    | TimeFrequency of timeRatio: float * freqRatio: float

    /// The share of tokens the strategy hides (before rounding to whole tokens).
    member this.Ratio =
        match this with
        | RandomPerSample r
        | RandomPerChannel r
        | RandomShared r
        | BlockWise r
        | Tube r -> r
        | TimeFrequency (t, f) -> 1.0 - (1.0 - t) * (1.0 - f)

    /// The strategy's name as checkpoints and the CLI spell it.
    member this.Name =
        match this with
        | RandomPerSample _ -> "random"
        | RandomPerChannel _ -> "random-per-channel"
        | RandomShared _ -> "random-shared"
        | BlockWise _ -> "block"
        | Tube _ -> "tube"
        | TimeFrequency _ -> "time-frequency"

module MaskingStrategy =

    /// The names `Name` gives.
    let names = [| "random"; "random-per-channel"; "random-shared"; "block"; "tube"; "time-frequency" |]

    /// The strategy of that name with `ratio` (time-frequency: the same ratio on both axes);
    /// ArgumentException naming `masking` for another name.
    let ofName (name: string) (ratio: float) =
        match (if isNull name then "" else name.ToLowerInvariant()) with
        | "random" -> RandomPerSample ratio
        | "random-per-channel" -> RandomPerChannel ratio
        | "random-shared" -> RandomShared ratio
        | "block" -> BlockWise ratio
        | "tube" -> Tube ratio
        | "time-frequency" -> TimeFrequency(ratio, ratio)
        | _ -> Guard.fail "masking" (sprintf "\"%s\"" name) ("one of " + String.Join(", ", names))

    /// The same strategy with another ratio (time-frequency: on both axes).
    let withRatio (ratio: float) (s: MaskingStrategy) = ofName s.Name ratio

    /// Masks tokens x [N, L, D] of a sample cut into `grid` (slowest axis first, product L).
    /// Block-wise and time-frequency need a 2D grid, tube at least 2 axes; another grid is an
    /// ArgumentException naming `grid`.
    /// `rowsPerSample` > 1 (a channel-independent series: x is [N*C, L, D]): random masking draws
    /// one mask per sample for its C rows, random-per-channel one per row; shared is one for all.
    let applyRows (strategy: MaskingStrategy) (grid: int[]) (rowsPerSample: int) (gen: Generator) (x: Tensor) : MaskResult =
        let twoD () =
            if grid.Length <> 2 then
                Guard.fail "grid" (sprintf "%A" grid) (sprintf "a 2D token grid for %s masking" strategy.Name)
            grid.[0], grid.[1]
        match strategy with
        | RandomPerSample r -> if rowsPerSample > 1 then Masking.randomGrouped gen r rowsPerSample x else Masking.random gen r x
        | RandomPerChannel r -> Masking.random gen r x
        | RandomShared r -> Masking.randomShared gen r x
        | BlockWise r -> Masking.block gen r (twoD ()) x
        | Tube r ->
            if grid.Length < 2 then
                Guard.fail "grid" (sprintf "%A" grid) "a token grid of at least 2 axes (time slots first) for tube masking"
            Masking.tube gen r grid.[0] x
        | TimeFrequency (t, f) -> Masking.timeFrequency gen t f (twoD ()) x

    /// `applyRows` with one row per sample.
    let apply (strategy: MaskingStrategy) (grid: int[]) (gen: Generator) (x: Tensor) : MaskResult =
        applyRows strategy grid 1 gen x
