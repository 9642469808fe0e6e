/// Argument checks shared by the whole library. Every failure is a .NET ArgumentException that names
/// the argument, the value it had and what was expected, raised before any native call can see it.
module Mae.Guard

open System
open TorchSharp

let private shapeText (t: TorchSharp.torch.Tensor) =
    "[" + (t.shape |> Array.map string |> String.concat ", ") + "]"

/// Raise an ArgumentException for `name` saying what was seen and what was expected.
let fail (name: string) (seen: obj) (expected: string) : 'a =
    raise (ArgumentException(sprintf "%s was %O; expected %s." name seen expected, name))

let notNull (name: string) (x: 'T) =
    if isNull (box x) then raise (ArgumentNullException(name))

/// The tensor has exactly `rank` dimensions (`layout` names them, e.g. "[N, C, H, W]").
let rank (name: string) (rank: int) (layout: string) (t: Tensor) =
    notNull name t
    if int t.ndim <> rank then
        fail name (shapeText t) (sprintf "a tensor of rank %d laid out as %s" rank layout)

/// The tensor's first dimension (the batch) is not empty.
let nonEmptyBatch (name: string) (t: Tensor) =
    if t.ndim = 0L || t.shape.[0] = 0L then
        fail name (shapeText t) "a non-empty batch (first dimension at least 1)"

let positive (name: string) (value: int) =
    if value <= 0 then fail name value "a positive integer"

/// A masking share in [0, 1): at least one token always stays visible to the encoder.
let maskRatio (name: string) (value: float) =
    if Double.IsNaN value || value < 0.0 || value >= 1.0 then
        fail name value "a mask ratio in [0, 1)"

/// `size` is a whole multiple of `patch` along the named axis.
let divisible (name: string) (size: int64) (patch: int) (axis: string) =
    if patch <= 0 then fail (name + " patch size") patch "a positive integer"
    if size % int64 patch <> 0L then
        fail name size (sprintf "a %s size divisible by the patch size %d" axis patch)

let shapeOf (t: Tensor) = shapeText t

/// A number greater than zero (not NaN, not infinite).
let positiveNumber (name: string) (value: float) =
    if not (value > 0.0 && not (Double.IsInfinity value)) then fail name value "a positive number"

/// The tensor holds int64 values: what libtorch's indexing operations (gather, index_select,
/// scatter, cross_entropy's targets) take.
let int64Tensor (name: string) (t: Tensor) =
    notNull name t
    if t.dtype <> ScalarType.Int64 then fail name (sprintf "a %O tensor" t.dtype) "an int64 tensor"

/// The tensor is laid out as the given shape (`layout` says what the dimensions are).
let shape (name: string) (expected: int64[]) (layout: string) (t: Tensor) =
    notNull name t
    if t.shape <> expected then
        fail name (shapeText t) (sprintf "shape [%s] (%s)" (expected |> Array.map string |> String.concat ", ") layout)

/// The smallest and largest entries of a non-empty tensor, read on the host.
let private range (t: Tensor) =
    use _ = torch.NewDisposeScope()
    let both = torch.stack([| t.min(); t.max() |]).cpu()
    both.[0].item<int64>(), both.[1].item<int64>()

/// Every entry of the int64 tensor `t` lies in [0, bound): a native gather, index_select or scatter
/// would otherwise stop with an ExternalException. `what` says where the bound comes from.
let indicesWithin (name: string) (bound: int64) (what: string) (t: Tensor) =
    int64Tensor name t
    if t.numel() > 0L then
        let lo, hi = range t
        let bad = if lo < 0L then lo else hi
        if lo < 0L || hi >= bound then
            fail name (sprintf "a tensor holding index %d" bad) (sprintf "indices in [0, %d) (%s)" bound what)

/// Class labels: an int64 tensor [N] (`rows` labels, one per row of `rowsOf`) whose values lie in
/// [0, classes). Says the offending label and the classes given.
let labelsWithin (name: string) (classes: int) (rows: int64) (rowsOf: string) (labels: Tensor) =
    int64Tensor name labels
    if labels.ndim <> 1L || labels.shape.[0] <> rows then
        fail name (shapeText labels) (sprintf "[%d], one label per row of %s" rows rowsOf)
    if labels.numel() > 0L then
        let lo, hi = range labels
        if lo < 0L || hi >= int64 classes then
            fail name (sprintf "a tensor holding label %d" (if lo < 0L then lo else hi))
                (sprintf "labels in [0, %d), for classes = %d" classes classes)
