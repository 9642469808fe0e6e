/// Fixed sin-cos positional tables (MAE's layout) and their interpolation to another grid.
module Mae.PosEmbed

open System
open TorchSharp


/// [M] positions -> [M, D]: first half sin(pos * omega_i), second half cos(pos * omega_i),
/// omega_i = 1 / 10000^(2i/D).
let sinCos1dOf (dim: int) (positions: Tensor) : Tensor =
    if dim <= 0 || dim % 2 <> 0 then Guard.fail "dim" dim "a positive even width"
    let half = int64 (dim / 2)
    let omega = 1.0 / torch.pow(10000.0, torch.arange(half, dtype = ScalarType.Float64) / float half)
    let out = positions.to_type(ScalarType.Float64).reshape(-1L, 1L) * omega.unsqueeze(0L) // [M, D/2]
    torch.cat([| out.sin(); out.cos() |], 1L).to_type(ScalarType.Float32)

/// [L, D] the transformer's sinusoid table as VideoMAE builds it (modeling_pretrain.py
/// get_sinusoid_encoding_table): angle(pos, j) = pos / 10000^(2*(j/2)/D), sin on even columns j,
/// cos on odd ones (interleaved, unlike `sinCos1dOf`'s halves). Computed in float64, returned float32.
let sinusoid (dim: int) (length: int) : Tensor =
    if dim <= 0 then Guard.fail "dim" dim "a positive width"
    Guard.positive "length" length
    let values =
        [| for pos in 0 .. length - 1 do
               for j in 0 .. dim - 1 do
                   let angle = float pos / Math.Pow(10000.0, float (2 * (j / 2)) / float dim)
                   yield float32 (if j % 2 = 0 then sin angle else cos angle) |]
    torch.tensor(values).reshape(int64 length, int64 dim)

let private withCls (cls: bool) (table: Tensor) =
    if cls then torch.cat([| torch.zeros(1L, table.shape.[1]); table |], 0L) else table

/// [L(+1), D] table for a 1D sequence of `length` tokens; the cls row (if any) is zeros.
let sinCos1d (dim: int) (length: int) (cls: bool) : Tensor =
    Guard.positive "length" length
    sinCos1dOf dim (torch.arange(int64 length)) |> withCls cls

/// [h*w(+1), D] table for a grid of h rows and w columns (row-major tokens): the first half of
/// the width encodes the column (x) position, the second half the row (y), as in MAE.
let sinCos2d (dim: int) (h: int, w: int) (cls: bool) : Tensor =
    if dim <= 0 || dim % 4 <> 0 then Guard.fail "dim" dim "a positive width divisible by 4"
    Guard.positive "h" h
    Guard.positive "w" w
    let rows = torch.arange(int64 h).repeat_interleave(int64 w) // y of each token
    let cols = torch.arange(int64 w).repeat(int64 h) // x of each token
    torch.cat([| sinCos1dOf (dim / 2) cols; sinCos1dOf (dim / 2) rows |], 1L) |> withCls cls

/// Widths given to (time, row, column) in a 3D table: rows and columns get 3/8 of D each
/// (rounded down to even), time the rest.
let split3d (dim: int) =
    let spatial = (3 * dim / 8) / 2 * 2
    let time = dim - 2 * spatial
    if dim <= 0 || spatial <= 0 || time <= 0 || time % 2 <> 0 then
        Guard.fail "dim" dim "a positive width divisible by 4 and at least 8"
    time, spatial, spatial

/// [s*h*w(+1), D] table for s time slots of an h x w grid, tokens slot-major then row-major:
/// the width is split (time, column, row) as `split3d` says.
let sinCos3d (dim: int) (s: int, h: int, w: int) (cls: bool) : Tensor =
    Guard.positive "s" s
    Guard.positive "h" h
    Guard.positive "w" w
    let dt, dy, dx = split3d dim
    let slots = torch.arange(int64 s).repeat_interleave(int64 (h * w))
    let rows = torch.arange(int64 h).repeat_interleave(int64 w).repeat(int64 s)
    let cols = torch.arange(int64 w).repeat(int64 (s * h))
    torch.cat([| sinCos1dOf dt slots; sinCos1dOf dx cols; sinCos1dOf dy rows |], 1L) |> withCls cls

/// Resizes a 2D table [1, (1)+h*w, D] to another grid by bicubic interpolation; the cls row, if
/// present, is kept as it is. Used when an encoder runs at another image size.
let interpolate2d (table: Tensor) (oldGrid: int * int) (newGrid: int * int) (cls: bool) : Tensor =
    Guard.rank "table" 3 "[1, L(+1), D]" table
    let (oh, ow), (nh, nw) = oldGrid, newGrid
    let extra = if cls then 1L else 0L
    if table.shape.[1] <> extra + int64 (oh * ow) then
        Guard.fail "table" (Guard.shapeOf table) (sprintf "%d rows for a %dx%d grid" (extra + int64 (oh * ow)) oh ow)
    if (oh, ow) = (nh, nw) then table
    else
        let d = table.shape.[2]
        let grid = table.narrow(1L, extra, int64 (oh * ow)).reshape(1L, int64 oh, int64 ow, d).permute(0L, 3L, 1L, 2L)
        let resized =
            torch.nn.functional.interpolate(grid, size = [| int64 nh; int64 nw |], mode = torch.InterpolationMode.Bicubic, align_corners = false)
        let tokens = resized.permute(0L, 2L, 3L, 1L).reshape(1L, int64 (nh * nw), d)
        if cls then torch.cat([| table.narrow(1L, 0L, 1L); tokens |], 1L) else tokens
