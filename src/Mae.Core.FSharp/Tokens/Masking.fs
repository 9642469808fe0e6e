/// Masking as pure functions of the tokens and an explicit generator.
/// Convention used everywhere in Mae: `mask` is 1 where a token was hidden (and is predicted),
/// 0 where it stayed visible to the encoder.
namespace Mae

open System
open TorchSharp


/// What a masking function returns.
type MaskResult =
    { /// [N, Lkeep, D] the visible tokens, in the shuffled order given by `IdsKeep`.
      Visible: Tensor
      /// [N, L] float, 1 = hidden, 0 = visible, in the original token order.
      Mask: Tensor
      /// [N, Lkeep] int64 indices (into the original order) of the visible tokens.
      IdsKeep: Tensor
      /// [N, L] int64 inverse permutation: gathering the shuffled sequence
      /// `[visible; hidden]` by these indices restores the original order.
      IdsRestore: Tensor }

module Masking =

    /// MAE's kept count, for the ratio argument called `name`: int(L * (1 - ratio)) in double
    /// precision, truncated, exactly as `random_masking` in facebookresearch/mae models_mae.py
    /// (so 100 tokens at 0.9 keep int(9.999999999999998) = 9). At least one token must stay visible.
    let keepCountOf (name: string) (tokens: int) (ratio: float) =
        Guard.maskRatio name ratio
        let keep = int (float tokens * (1.0 - ratio))
        if keep < 1 then
            Guard.fail name ratio (sprintf "a ratio that leaves at least one of the %d tokens visible (at most about %g)" tokens (1.0 - 1.0 / float tokens))
        keep

    /// MAE's kept count int(L * (1 - maskRatio)) (models_mae.py random_masking); at least one
    /// token must stay visible.
    let keepCount (tokens: int) (ratio: float) = keepCountOf "maskRatio" tokens ratio

    /// A System.Random seeded from the torch generator, for masks built on the CPU by rules
    /// (block-wise); the same generator state gives the same masks.
    let private clrRandom (gen: Generator) =
        Random(int (torch.randint(0L, int64 Int32.MaxValue, [| 1L |], generator = gen).item<int64>()))

    /// add's alpha of 1, made once and never collected (see shuffleOfHidden).
    let private alphaOne = (1L).ToScalar()

    let private checkTokens (x: Tensor) =
        Guard.rank "x" 3 "[N, L, D]" x
        Guard.nonEmptyBatch "x" x

    /// The record from a shuffle the masking functions made themselves (valid by construction).
    let private ofShuffle (x: Tensor) (idsShuffle: Tensor) (keep: int) : MaskResult =
        let n, l, d = x.shape.[0], x.shape.[1], x.shape.[2]
        let idsShuffle = idsShuffle.``to``(x.device)
        let idsRestore = idsShuffle.argsort(dim = 1L)
        let idsKeep = idsShuffle.narrow(1L, 0L, int64 keep)
        let visible = x.gather(1L, idsKeep.unsqueeze(-1L).expand(n, int64 keep, d))
        // mask in shuffled order is [0 .. 0, 1 .. 1]; unshuffle it to the original order
        let shuffledMask = torch.ones(n, l, dtype = x.dtype, device = x.device)
        shuffledMask.narrow(1L, 0L, int64 keep).zero_() |> ignore
        let mask = shuffledMask.gather(1L, idsRestore)
        { Visible = visible; Mask = mask; IdsKeep = idsKeep; IdsRestore = idsRestore }

    /// Builds the record from a shuffle: the first `keep` entries of `idsShuffle` [N, L] (int64
    /// token indices in [0, L)) stay visible; 1 <= keep <= L.
    let fromShuffle (x: Tensor) (idsShuffle: Tensor) (keep: int) : MaskResult =
        checkTokens x
        let n, l = x.shape.[0], x.shape.[1]
        Guard.int64Tensor "idsShuffle" idsShuffle
        Guard.shape "idsShuffle" [| n; l |] "[N, L] of x" idsShuffle
        Guard.indicesWithin "idsShuffle" l (sprintf "the L = %d tokens of x" l) idsShuffle
        if keep < 1 || int64 keep > l then Guard.fail "keep" keep (sprintf "a count in [1, %d], the tokens of x" l)
        ofShuffle x idsShuffle keep

    /// Shuffle that puts the visible tokens (mask 0) first, each group in index order.
    /// `hidden` is [N, L] with 1 = hidden; every row must hide the same number of tokens.
    let private shuffleOfHidden (hidden: Tensor) =
        let l = hidden.shape.[1]
        // Scalars kept reachable for the whole native call: `a * l + b` makes temporary Scalars
        // (the factor and add's alpha of 1) that TorchSharp passes by handle without keeping them
        // alive, so a collection during the call can free one and let the native op read freed
        // memory (seen once: an int64 add failing with "alpha must not be a floating point
        // number" while the loader's threads were allocating).
        use factor = l.ToScalar()
        let key = hidden.to_type(ScalarType.Int64).mul(factor).add(torch.arange(l, device = hidden.device).unsqueeze(0L), alphaOne)
        key.argsort(dim = 1L)

    /// Random masking per sample (MAE, models_mae.py random_masking): noise -> argsort -> keep the
    /// first int(L(1-r)) (`keepCount`). x: [N, L, D]
    let random (gen: Generator) (ratio: float) (x: Tensor) : MaskResult =
        checkTokens x
        let n, l = x.shape.[0], x.shape.[1]
        let keep = keepCount (int l) ratio
        let noise = torch.rand([| n; l |], generator = gen)
        ofShuffle x (noise.argsort(dim = 1L)) keep

    /// Random masking with one mask shared by every sample of the batch; keeps int(L(1-r)) as MAE's
    /// random_masking (`keepCount`). x: [N, L, D]
    let randomShared (gen: Generator) (ratio: float) (x: Tensor) : MaskResult =
        checkTokens x
        let n, l = x.shape.[0], x.shape.[1]
        let keep = keepCount (int l) ratio
        let noise = torch.rand([| 1L; l |], generator = gen).expand(n, l)
        ofShuffle x (noise.argsort(dim = 1L)) keep

    /// Random masking with one mask per group of `group` consecutive rows: x [N*group, L, D] holds
    /// the rows of N samples (a channel-independent series: the C channels of each sample), and
    /// every row of a sample hides the same tokens; keeps int(L(1-r)) (`keepCount`). `group` = 1 is
    /// `random`.
    let randomGrouped (gen: Generator) (ratio: float) (group: int) (x: Tensor) : MaskResult =
        checkTokens x
        Guard.positive "group" group
        let rows, l = x.shape.[0], x.shape.[1]
        if rows % int64 group <> 0L then Guard.fail "x" (Guard.shapeOf x) (sprintf "a row count divisible by the group size %d" group)
        let keep = keepCount (int l) ratio
        let noise = torch.rand([| rows / int64 group; l |], generator = gen).repeat_interleave(int64 group, 0L)
        ofShuffle x (noise.argsort(dim = 1L)) keep

    /// Tube masking (VideoMAE): one random spatial mask per sample, the same in every time slot.
    /// x: [N, slots*S, D] with tokens ordered slot-major (as `Patchify.patchify3d` gives them).
    /// VideoMAE's rule (masking_generator.py TubeMaskingGenerator): int(r * S) hidden per slot,
    /// computed in double precision, so slots * (S - int(r * S)) tokens are kept.
    let tube (gen: Generator) (ratio: float) (slots: int) (x: Tensor) : MaskResult =
        checkTokens x
        Guard.positive "slots" slots
        Guard.maskRatio "maskRatio" ratio
        let n, l = x.shape.[0], x.shape.[1]
        if l % int64 slots <> 0L then Guard.fail "x token count L" l (sprintf "a multiple of slots = %d" slots)
        let s = l / int64 slots
        let keepS = int s - int (ratio * float s)
        // r * S < S for every r in [0, 1), so this cannot happen; kept as the guard the rule needs
        if keepS < 1 then
            Guard.fail "maskRatio" ratio (sprintf "a ratio that leaves at least one of the %d tokens per slot visible" s)
        let noise = torch.rand([| n; s |], generator = gen)
        let spatialRank = noise.argsort(dim = 1L).argsort(dim = 1L) // rank of each spatial token
        let hiddenS = spatialRank.ge(torch.tensor(int64 keepS)) // [N, S] bool
        let hidden = hiddenS.unsqueeze(1L).expand(n, int64 slots, s).reshape(n, l)
        ofShuffle x (shuffleOfHidden hidden) (slots * keepS)

    /// Time/frequency masking (Audio-MAE): whole time columns and whole frequency rows are hidden.
    /// x: [N, F*T, D] for a grid of F frequency rows by T time columns, row-major.
    /// Audio-MAE's rule (models_mae.py random_masking_2d): int(T(1-timeRatio)) time columns and
    /// int(F(1-freqRatio)) frequency rows kept, each as `keepCountOf`; their product per sample.
    let timeFrequency (gen: Generator) (timeRatio: float) (freqRatio: float) (freqRows: int, timeCols: int) (x: Tensor) =
        checkTokens x
        Guard.maskRatio "timeRatio" timeRatio
        Guard.maskRatio "freqRatio" freqRatio
        let n, l = x.shape.[0], x.shape.[1]
        if l <> int64 (freqRows * timeCols) then
            Guard.fail "x token count L" l (sprintf "freqRows*timeCols = %d" (freqRows * timeCols))
        let keepT = keepCountOf "timeRatio" timeCols timeRatio
        let keepF = keepCountOf "freqRatio" freqRows freqRatio
        let pick count keepN =
            let rank = torch.rand([| n; int64 count |], generator = gen).argsort(dim = 1L).argsort(dim = 1L)
            rank.ge(torch.tensor(int64 keepN)) // [N, count] bool, true = hidden
        let hiddenT = pick timeCols keepT
        let hiddenF = pick freqRows keepF
        let hidden =
            hiddenF.unsqueeze(2L).expand(n, int64 freqRows, int64 timeCols)
                .logical_or(hiddenT.unsqueeze(1L).expand(n, int64 freqRows, int64 timeCols))
                .reshape(n, l)
        ofShuffle x (shuffleOfHidden hidden) (keepT * keepF)

    /// Block-wise masking (BEiT): random rectangles (area >= minBlock, aspect in [0.3, 1/0.3])
    /// are hidden until the target count is reached, topped up with single random tokens so that
    /// exactly L - int(L(1-r)) are hidden (MAE's kept count, `keepCount`, not BEiT's own rule).
    /// x: [N, h*w, D] for a grid of h rows and w columns.
    let block (gen: Generator) (ratio: float) (h: int, w: int) (x: Tensor) : MaskResult =
        checkTokens x
        Guard.positive "h" h
        Guard.positive "w" w
        let n, l = x.shape.[0], x.shape.[1]
        if l <> int64 (h * w) then Guard.fail "x token count L" l (sprintf "h*w = %d" (h * w))
        let keep = keepCount (h * w) ratio
        let target = h * w - keep
        let rng = clrRandom gen
        let minBlock = min 4 (max 1 target)
        let oneSample () =
            let m = Array2D.zeroCreate<bool> h w
            let mutable count = 0
            let mutable stalls = 0
            while count < target && stalls < 20 do
                let remaining = target - count
                let area = float minBlock + rng.NextDouble() * float (max 0 (remaining - minBlock))
                let logAspect = Math.Log 0.3 + rng.NextDouble() * (Math.Log(1.0 / 0.3) - Math.Log 0.3)
                let aspect = Math.Exp logAspect
                let bh = int (Math.Round(Math.Sqrt(area * aspect)))
                let bw = int (Math.Round(Math.Sqrt(area / aspect)))
                if bh >= 1 && bw >= 1 && bh <= h && bw <= w then
                    let top = rng.Next(h - bh + 1)
                    let left = rng.Next(w - bw + 1)
                    let mutable fresh = 0
                    for i in top .. top + bh - 1 do
                        for j in left .. left + bw - 1 do
                            if not m.[i, j] then fresh <- fresh + 1
                    if fresh > 0 && fresh <= remaining then
                        for i in top .. top + bh - 1 do
                            for j in left .. left + bw - 1 do
                                m.[i, j] <- true
                        count <- count + fresh
                        stalls <- 0
                    else
                        stalls <- stalls + 1
                else
                    stalls <- stalls + 1
            // top up to the exact target with single random tokens
            let free = [| for i in 0 .. h - 1 do for j in 0 .. w - 1 do if not m.[i, j] then yield i * w + j |]
            let order = free |> Array.sortBy (fun _ -> rng.Next())
            let flat = Array.init (h * w) (fun k -> m.[k / w, k % w])
            for k in 0 .. target - count - 1 do
                flat.[order.[k]] <- true
            flat
        let rows = Array.init (int n) (fun _ -> oneSample ()) |> Array.concat
        let hidden = torch.tensor(rows, [| n; l |])
        ofShuffle x (shuffleOfHidden hidden) keep

    /// A bool tensor, or one whose every entry is 0 or 1.
    let private binary (hidden: Tensor) =
        use _ = torch.NewDisposeScope()
        hidden.dtype = ScalarType.Bool
        || not (hidden.ne(torch.zeros_like(hidden)).logical_and(hidden.ne(torch.ones_like(hidden))).any().item<bool>())

    /// An externally supplied mask: `hidden` [N, L] bool (true = hidden), the same count in every row.
    let given (hidden: Tensor) (x: Tensor) : MaskResult =
        checkTokens x
        Guard.rank "hidden" 2 "[N, L]" hidden
        if hidden.shape.[0] <> x.shape.[0] || hidden.shape.[1] <> x.shape.[1] then
            Guard.fail "hidden" (Guard.shapeOf hidden) (sprintf "shape [%d, %d] matching x" x.shape.[0] x.shape.[1])
        if not (binary hidden) then
            Guard.fail "hidden" "a tensor holding values other than 0 and 1" "a bool mask, or 0 or 1 in every entry"
        let counts = hidden.to_type(ScalarType.Int64).sum(dim = 1L).cpu()
        let first = counts.[0].item<int64>()
        if counts.ne(torch.tensor(first)).any().item<bool>() then
            Guard.fail "hidden" "rows hiding different numbers of tokens" "the same hidden count in every row"
        if first >= x.shape.[1] then
            Guard.fail "hidden" "a row hiding every token" "at least one visible token per row"
        let keep = int (x.shape.[1] - first)
        ofShuffle x (shuffleOfHidden (hidden.to_type(ScalarType.Bool).``to``(x.device))) keep

    /// `restore` without its checks, for ids that the masking functions made themselves (the
    /// decoder's hot path: the range check reads the ids back, a sync per step).
    let internal restoreTrusted (idsRestore: Tensor) (shuffled: Tensor) : Tensor =
        let n, l, d = shuffled.shape.[0], shuffled.shape.[1], shuffled.shape.[2]
        shuffled.gather(1L, idsRestore.unsqueeze(-1L).expand(n, l, d))

    /// Puts a sequence given in shuffled order ([visible; hidden], [N, L, D]) back into the
    /// original order.
    /// idsRestore [N, L] int64 in [0, L) -> [N, L, D]
    let restore (idsRestore: Tensor) (shuffled: Tensor) : Tensor =
        Guard.rank "shuffled" 3 "[N, L, D]" shuffled
        let n, l, d = shuffled.shape.[0], shuffled.shape.[1], shuffled.shape.[2]
        Guard.int64Tensor "idsRestore" idsRestore
        Guard.shape "idsRestore" [| n; l |] "[N, L] of shuffled" idsRestore
        Guard.indicesWithin "idsRestore" l (sprintf "the L = %d tokens of shuffled" l) idsRestore
        restoreTrusted idsRestore shuffled
