/// Transformer pieces: multi-head self-attention, MLP, and a pre-norm block that takes its
/// attention and MLP as arguments (so another attention, e.g. a local window, drops in).
namespace Mae

open TorchSharp
open TorchSharp.Modules

open type TorchSharp.torch.nn

/// How attention is computed. Both give the same result; their speed differs by shape and device.
type AttentionKernel =
    /// libtorch's fused scaled_dot_product_attention.
    | Sdpa
    /// softmax(q k^T / sqrt(d)) v with plain matmuls.
    | Math

/// Multi-head self-attention. Parameters: qkv.{weight,bias}, proj.{weight,bias}.
type Attention(dim: int, heads: int, qkvBias: bool, kernel: AttentionKernel) as this =
    inherit Module<Tensor, Tensor>("Attention")
    do
        if dim % heads <> 0 then Guard.fail "heads" heads (sprintf "a divisor of the width %d" dim)
    let headDim = dim / heads
    // 1 / sqrt(headDim), made once (a Scalar per call would hold native memory until finalized)
    let scale = (1.0 / sqrt (float headDim)).ToScalar()
    let qkv = Linear(int64 dim, int64 (3 * dim), hasBias = qkvBias)
    let proj = Linear(int64 dim, int64 dim)
    do this.RegisterComponents()

    /// x: [N, L, D] -> [N, L, D]
    override _.forward(x: Tensor) =
        let n, l = x.shape.[0], x.shape.[1]
        // [N, L, 3D] -> [3, N, heads, L, headDim]
        // unbind, not three selects: its backward stacks the three gradients in one tensor
        // instead of adding three full-size zero-padded ones
        let parts = (Precision.linearInner qkv x).reshape(n, l, 3L, int64 heads, int64 headDim).permute(2L, 0L, 3L, 1L, 4L).unbind(0L)
        let q, k, v, dtype = Precision.operands parts.[0] parts.[1] parts.[2]
        let out =
            match kernel with
            | Sdpa -> torch.nn.functional.scaled_dot_product_attention(q, k, v)
            | Math ->
                // scale q (N*h*L*d values) rather than the scores (N*h*L*L); softmax in fp32
                let scores = (q * scale).matmul(k.transpose(-2L, -1L))
                scores.softmax(-1L, ScalarType.Float32).to_type(v.dtype).matmul(v)
        Precision.linear proj (out.to_type(dtype).transpose(1L, 2L).reshape(n, l, int64 dim))

/// Two-layer MLP with GELU. Parameters: fc1.*, fc2.*.
type Mlp(dim: int, hidden: int) as this =
    inherit Module<Tensor, Tensor>("Mlp")
    let fc1 = Linear(int64 dim, int64 hidden)
    let act = GELU()
    let fc2 = Linear(int64 hidden, int64 dim)
    do this.RegisterComponents()
    override _.forward(x: Tensor) =
        if Precision.fullWith x then Kernels.Mlp(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
        else Precision.linear fc2 (act.forward(Precision.linearInner fc1 x))

/// Pre-norm transformer block: x + attn(norm1 x), then + mlp(norm2 x).
/// Parameters: norm1.*, attn.*, norm2.*, mlp.* (the reference checkpoint's names).
/// (The constructor's arguments must not be named `attn`/`mlp`: a `let` that shadows a constructor
/// argument compiles to a field named `attn@NN`, and RegisterComponents takes the field's name.)
type Block(dim: int, attention: Module<Tensor, Tensor>, feedForward: Module<Tensor, Tensor>) as this =
    inherit Module<Tensor, Tensor>("Block")
    let norm1 = LayerNorm(int64 dim, eps = 1e-6)
    let attn = attention
    let norm2 = LayerNorm(int64 dim, eps = 1e-6)
    let mlp = feedForward
    do this.RegisterComponents()

    /// x: [N, L, D] -> [N, L, D]
    override _.forward(x: Tensor) =
        let x = x + attn.forward(norm1.forward(x))
        x + mlp.forward(norm2.forward(x))

    /// The usual ViT block: global attention and a GELU MLP of width `mlpRatio * dim`.
    static member Standard(dim: int, heads: int, mlpRatio: float, kernel: AttentionKernel) =
        new Block(dim, new Attention(dim, heads, true, kernel), new Mlp(dim, int (float dim * mlpRatio)))
