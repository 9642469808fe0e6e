/// Reconstruction losses. Each is computed on hidden tokens only: a prediction at a visible
/// position has no effect on the loss and gets exactly zero gradient.
module Mae.Losses

open TorchSharp


/// A loss on per-token predictions: pred [N, L, P], target [N, L, P], mask [N, L] (1 = hidden) -> scalar.
type ReconstructionLoss = Tensor -> Tensor -> Tensor -> Tensor

/// Per-patch normalised target (MAE's norm_pix_loss): each token's vector minus its mean, over
/// sqrt(unbiased variance + eps). target [N, L, P] -> [N, L, P], P >= 2 (the unbiased variance of a
/// single value is undefined: it would make the target, and so the loss, NaN).
let normPixTarget (eps: float) (target: Tensor) : Tensor =
    Guard.notNull "target" target
    if target.ndim = 0L || target.shape.[int target.ndim - 1] < 2L then
        Guard.fail "target" (Guard.shapeOf target) "a token width P of at least 2 for the norm-pix target"
    // two passes (centre, then the sum of squares): as exact as var() and much faster on a CPU
    let p = target.shape.[int target.ndim - 1]
    let centred = target - target.mean([| -1L |], keepdim = true)
    use dof = (float (p - 1L)).ToScalar()
    use epsilon = eps.ToScalar()
    let var = centred.square().sum([| -1L |], keepdim = true).div_(dof)
    centred.div_(var.add_(epsilon).sqrt_())

/// Per-patch, per-channel normalised target (VideoMAE, engine_for_pretraining.py): each token's
/// values of one channel minus their mean, over their unbiased standard deviation plus eps (eps
/// on the standard deviation, not inside the square root as MAE's). The token vector is laid out
/// channel last (`p*C`): target [N, L, Q*C] -> [N, L, Q*C], Q >= 2 values per channel.
let perChannelNormTarget (channels: int) (eps: float) (target: Tensor) : Tensor =
    Guard.notNull "target" target
    Guard.rank "target" 3 "[N, L, Q*C]" target
    Guard.positive "channels" channels
    let n, l, p = target.shape.[0], target.shape.[1], target.shape.[2]
    if p % int64 channels <> 0L || p / int64 channels < 2L then
        Guard.fail "target" (Guard.shapeOf target) (sprintf "a token width Q*C with C = %d and Q >= 2 values per channel" channels)
    let x = target.reshape(n, l, p / int64 channels, int64 channels)
    let mean = x.mean([| 2L |], keepdim = true)
    let std = x.std(2L, unbiased = true, keepdim = true)
    ((x - mean) / (std + eps)).reshape(n, l, p)

/// VideoMAE's eps on the per-channel standard deviation.
let perChannelNormEps = 1e-6

/// Wraps a loss so that it sees the per-channel normalised target instead of the raw one.
let withPerChannelNorm (channels: int) (eps: float) (loss: ReconstructionLoss) : ReconstructionLoss =
    fun pred target mask -> loss pred (perChannelNormTarget channels eps target) mask

/// MAE's eps for the norm-pix target.
let normPixEps = 1e-6

let private checkShapes (pred: Tensor) (target: Tensor) (mask: Tensor) =
    Guard.rank "pred" 3 "[N, L, P]" pred
    if pred.shape <> target.shape then
        Guard.fail "target" (Guard.shapeOf target) (sprintf "the shape of pred %s" (Guard.shapeOf pred))
    Guard.rank "mask" 2 "[N, L]" mask
    if mask.shape.[0] <> pred.shape.[0] || mask.shape.[1] <> pred.shape.[1] then
        Guard.fail "mask" (Guard.shapeOf mask) (sprintf "[%d, %d]" pred.shape.[0] pred.shape.[1])

// made once: a Scalar made per call holds native memory until the garbage collector finalizes it
let private one = (1.0).ToScalar()

/// Mean over hidden tokens of a per-token loss [N, L]; zero when nothing is hidden.
let meanOverHidden (perToken: Tensor) (mask: Tensor) : Tensor =
    (perToken * mask).sum() / mask.sum().clamp_min(one)

/// Masked MSE: per-token mean squared error, averaged over hidden tokens only.
let maskedMse : ReconstructionLoss =
    fun pred target mask ->
        checkShapes pred target mask
        meanOverHidden ((pred - target).square().mean([| -1L |])) mask

/// Masked L1: per-token mean absolute error, averaged over hidden tokens only.
let maskedL1 : ReconstructionLoss =
    fun pred target mask ->
        checkShapes pred target mask
        meanOverHidden ((pred - target).abs().mean([| -1L |])) mask

/// Wraps a loss so that it sees the norm-pix target instead of the raw one.
let withNormPix (eps: float) (loss: ReconstructionLoss) : ReconstructionLoss =
    fun pred target mask -> loss pred (normPixTarget eps target) mask
