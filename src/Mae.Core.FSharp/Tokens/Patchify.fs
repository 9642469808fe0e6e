/// Cutting samples into tokens and putting them back: 1D sequences, 2D images, 3D clips.
/// A token's vector is laid out with the channel last, as in MAE's reference (`p*q*C`).
module Mae.Patchify

open TorchSharp


/// [N, C, T] -> [N, T/p, p*C]
let patchify1d (p: int) (x: Tensor) : Tensor =
    Guard.rank "x" 3 "[N, C, T]" x
    let n, c, t = x.shape.[0], x.shape.[1], x.shape.[2]
    Guard.divisible "x length T" t p "time"
    let l = t / int64 p
    x.reshape(n, c, l, int64 p).permute(0L, 2L, 3L, 1L).reshape(n, l, int64 p * c)

/// [N, L, p*C] -> [N, C, L*p]
let unpatchify1d (p: int) (channels: int) (x: Tensor) : Tensor =
    Guard.rank "x" 3 "[N, L, p*C]" x
    Guard.positive "channels" channels
    let n, l, d = x.shape.[0], x.shape.[1], x.shape.[2]
    if d <> int64 (p * channels) then Guard.fail "x token width" d (sprintf "p*C = %d" (p * channels))
    x.reshape(n, l, int64 p, int64 channels).permute(0L, 3L, 1L, 2L).reshape(n, int64 channels, l * int64 p)

/// [N, C, H, W] -> [N, (H/ph)*(W/pw), ph*pw*C]; tokens in row-major order of the patch grid.
let patchify2d (ph: int, pw: int) (imgs: Tensor) : Tensor =
    Guard.rank "imgs" 4 "[N, C, H, W]" imgs
    let x = imgs
    let n, c, hh, ww = x.shape.[0], x.shape.[1], x.shape.[2], x.shape.[3]
    Guard.divisible "imgs height H" hh ph "height"
    Guard.divisible "imgs width W" ww pw "width"
    let h, w = hh / int64 ph, ww / int64 pw
    x.reshape(n, c, h, int64 ph, w, int64 pw)
        .permute(0L, 2L, 4L, 3L, 5L, 1L) // [N, h, w, ph, pw, C]
        .reshape(n, h * w, int64 (ph * pw) * c)

/// [N, h*w, ph*pw*C] -> [N, C, h*ph, w*pw] for a patch grid of h rows and w columns.
let unpatchify2d (ph: int, pw: int) (h: int, w: int) (channels: int) (x: Tensor) : Tensor =
    Guard.rank "x" 3 "[N, L, ph*pw*C]" x
    let n, l, d = x.shape.[0], x.shape.[1], x.shape.[2]
    if l <> int64 (h * w) then Guard.fail "x token count L" l (sprintf "h*w = %d" (h * w))
    if d <> int64 (ph * pw * channels) then
        Guard.fail "x token width" d (sprintf "ph*pw*C = %d" (ph * pw * channels))
    x.reshape(n, int64 h, int64 w, int64 ph, int64 pw, int64 channels)
        .permute(0L, 5L, 1L, 3L, 2L, 4L) // [N, C, h, ph, w, pw]
        .reshape(n, int64 channels, int64 (h * ph), int64 (w * pw))

/// [N, C, T, H, W] -> [N, (T/t)*(H/ph)*(W/pw), t*ph*pw*C]; tokens ordered time slot first,
/// then patch rows, then columns (so token index = slot * (h*w) + row * w + col).
let patchify3d (t: int, ph: int, pw: int) (clips: Tensor) : Tensor =
    Guard.rank "clips" 5 "[N, C, T, H, W]" clips
    let x = clips
    let n, c, tt, hh, ww = x.shape.[0], x.shape.[1], x.shape.[2], x.shape.[3], x.shape.[4]
    Guard.divisible "clips frames T" tt t "time"
    Guard.divisible "clips height H" hh ph "height"
    Guard.divisible "clips width W" ww pw "width"
    let s, h, w = tt / int64 t, hh / int64 ph, ww / int64 pw
    x.reshape([| n; c; s; int64 t; h; int64 ph; w; int64 pw |])
        .permute(0L, 2L, 4L, 6L, 3L, 5L, 7L, 1L) // [N, s, h, w, t, ph, pw, C]
        .reshape(n, s * h * w, int64 (t * ph * pw) * c)

/// [N, s*h*w, t*ph*pw*C] -> [N, C, s*t, h*ph, w*pw]
let unpatchify3d (t: int, ph: int, pw: int) (s: int, h: int, w: int) (channels: int) (x: Tensor) : Tensor =
    Guard.rank "x" 3 "[N, L, t*ph*pw*C]" x
    let n, l, d = x.shape.[0], x.shape.[1], x.shape.[2]
    if l <> int64 (s * h * w) then Guard.fail "x token count L" l (sprintf "s*h*w = %d" (s * h * w))
    if d <> int64 (t * ph * pw * channels) then
        Guard.fail "x token width" d (sprintf "t*ph*pw*C = %d" (t * ph * pw * channels))
    x.reshape([| n; int64 s; int64 h; int64 w; int64 t; int64 ph; int64 pw; int64 channels |])
        .permute(0L, 7L, 1L, 4L, 2L, 5L, 3L, 6L) // [N, C, s, t, h, ph, w, pw]
        .reshape([| n; int64 channels; int64 (s * t); int64 (h * ph); int64 (w * pw) |])
