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
