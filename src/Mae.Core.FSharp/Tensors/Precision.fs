/// Mixed precision without autocast (TorchSharp has none): inside a BFloat16 scope the model's
/// matrix products (linear layers, attention) run in bfloat16 on bfloat16 copies of the fp32
/// weights and hand back fp32 results; parameters, gradients, norms, softmax and the loss stay in
/// fp32. bfloat16 keeps fp32's exponent range, so no loss scaling is needed.
namespace Mae

open System
open TorchSharp
open TorchSharp.Modules

/// The arithmetic of a training step's matrix products.
type Precision =
    /// Everything in fp32.
    | Float32
    /// Matrix products in bfloat16 with fp32 master weights. Fast on CPUs with AVX512-BF16 or AMX
    /// and on recent GPUs; on CPUs without them bfloat16 products are emulated and slower.
    | BFloat16

type internal AmbientPrecision() =
    [<ThreadStatic; DefaultValue>]
    static val mutable private lowp: bool
    static member LowPrecision
        with get () = AmbientPrecision.lowp
        and set (v: bool) = AmbientPrecision.lowp <- v

[<RequireQualifiedAccess>]
module Precision =
    let private bf16 = ScalarType.BFloat16

    /// The precisions by name: "fp32" / "bf16" (also "float32" / "bfloat16").
    let ofName (name: string) =
        match (if isNull name then "" else name.Trim().ToLowerInvariant()) with
        | "fp32" | "float32" -> Float32
        | "bf16" | "bfloat16" -> BFloat16
        | _ -> Guard.fail "precision" name "\"fp32\" or \"bf16\""

    /// Runs this thread's matrix products in `p` until disposed; scopes nest.
    let scope (p: Precision) : IDisposable =
        let previous = AmbientPrecision.LowPrecision
        AmbientPrecision.LowPrecision <- (p = BFloat16)
        { new IDisposable with
            member _.Dispose() = AmbientPrecision.LowPrecision <- previous }

    /// The precision in force on this thread.
    let current () = if AmbientPrecision.LowPrecision then BFloat16 else Float32

    // Low precision applies to fp32 computations (and to the bf16 results of linearInner that
    // feed the next product); other dtypes (e.g. a float64 model) are left alone.
    let inline private lowFor (x: Tensor) =
        AmbientPrecision.LowPrecision && (x.dtype = ScalarType.Float32 || x.dtype = bf16)

    /// Whether a product of x with an (fp32 master) weight runs in bf16 here.
    let inline private lowWith (x: Tensor) (weight: Tensor) = lowFor x && weight.dtype = ScalarType.Float32

    let private lowLinear (x: Tensor) (weight: Tensor) (bias: Tensor) =
        let b = if isNull bias then null else bias.to_type(bf16)
        torch.nn.functional.linear((if x.dtype = bf16 then x else x.to_type(bf16)), weight.to_type(bf16), b)

    /// x W^T + b in the current precision; the result is fp32 for fp32 or bf16 x in a BFloat16
    /// scope (it rejoins the fp32 residual stream), x's dtype otherwise.
    let linearWith (x: Tensor) (weight: Tensor) (bias: Tensor) =
        if lowWith x weight then (lowLinear x weight bias).to_type(ScalarType.Float32)
        else Kernels.Linear(x, weight, bias)

    /// Whether products with x run in fp32 here (not lowered to bf16 by a BFloat16 scope).
    let fullWith (x: Tensor) = not (lowFor x)

    /// A Linear layer applied in the current precision.
    let linear (layer: Linear) (x: Tensor) = linearWith x layer.weight layer.bias

    /// A Linear layer whose result feeds another product (an MLP's first layer, attention's qkv):
    /// in a BFloat16 scope the result stays bfloat16, as under autocast, which saves a cast each way;
    /// otherwise the same as `linear`.
    let linearInner (layer: Linear) (x: Tensor) =
        if lowWith x layer.weight then lowLinear x layer.weight layer.bias
        else linear layer x

    /// Operands of an attention product in the current precision, with the dtype to return to.
    let operands (q: Tensor) (k: Tensor) (v: Tensor) =
        if lowFor q then q.to_type(bf16), k.to_type(bf16), v.to_type(bf16), q.dtype
        else q, k, v, q.dtype
