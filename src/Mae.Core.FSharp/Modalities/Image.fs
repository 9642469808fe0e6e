/// The image modality (MAE, He et al. 2021): images [N, C, H, W] cut into a grid of ph x pw
/// patches, row-major; each patch embedded by a linear map and reconstructed as its pixels.
namespace Mae

open TorchSharp
open TorchSharp.Modules

open type TorchSharp.torch.nn

/// What an image model reads: the image and patch sizes in pixels, and the channel count.
type ImageInput =
    { /// Input height and width in pixels.
      ImageSize: int * int
      /// Patch height and width in pixels (rectangular patches allowed).
      PatchSize: int * int
      /// Input channels C.
      Channels: int }

    /// Patch grid (rows, columns).
    member i.Grid =
        let (h, w), (ph, pw) = i.ImageSize, i.PatchSize
        h / ph, w / pw

    /// Tokens per image L.
    member i.NumPatches =
        let gh, gw = i.Grid
        gh * gw

    /// Width of a token's target vector: ph * pw * C.
    member i.PatchDim =
        let ph, pw = i.PatchSize
        ph * pw * i.Channels

    /// Every problem of the sizes, each an ArgumentException naming the setting.
    member i.Problems() : (unit -> unit) list =
        let h, w = i.ImageSize
        let ph, pw = i.PatchSize
        [ fun () -> Guard.positive "ImageSize height" h
          fun () -> Guard.positive "ImageSize width" w
          fun () -> Guard.positive "PatchSize height" ph
          fun () -> Guard.positive "PatchSize width" pw
          fun () -> if h > 0 && ph > 0 then Guard.divisible "ImageSize height" (int64 h) ph "height"
          fun () -> if w > 0 && pw > 0 then Guard.divisible "ImageSize width" (int64 w) pw "width"
          fun () -> Guard.positive "Channels" i.Channels ]

/// Linear patch embedding, stored as the reference's strided convolution (proj.{weight,bias};
/// Conv2d for images, weight [D, C, ph, pw]; Conv3d for video tubelets, weight [D, C, t, ph, pw];
/// kernel = stride = the patch) and computed as one matrix product on the patches' pixels, which
/// also lets the MAE embed only the patches that stay visible.
type PatchEmbed(channels: int, dim: int, kernel: int[]) as this =
    inherit Module<Tensor, Tensor>("PatchEmbed")
    do
        if isNull kernel || kernel.Length < 2 || kernel.Length > 3 then
            Guard.fail "kernel" (sprintf "%A" kernel) "2 (ph, pw) or 3 (t, ph, pw) patch sizes"
    let k = kernel |> Array.map int64
    let proj: Convolution =
        if k.Length = 2 then Conv2d(int64 channels, int64 dim, struct (k.[0], k.[1]), stride = struct (k.[0], k.[1])) :> Convolution
        else Conv3d(int64 channels, int64 dim, struct (k.[0], k.[1], k.[2]), stride = struct (k.[0], k.[1], k.[2])) :> Convolution
    do this.RegisterComponents()

    /// An image patch embedding of ph x pw patches.
    new(channels: int, dim: int, patchSize: int * int) = new PatchEmbed(channels, dim, [| fst patchSize; snd patchSize |])

    /// [N, C, s1*k1, ..., sm*km] -> [N, s1*...*sm, C*k1*...*km]: each patch's pixels in the
    /// convolution weight's order (channel, then the kernel's axes), patches in row-major order of
    /// the patch grid (video: time slot, then row, then column).
    member _.Pixels(x: Tensor) =
        let m = k.Length
        let n, c = x.shape.[0], x.shape.[1]
        let grid = Array.init m (fun i -> x.shape.[2 + i] / k.[i])
        let split = Array.concat [ [| n; c |]; Array.init (2 * m) (fun j -> if j % 2 = 0 then grid.[j / 2] else k.[j / 2]) ]
        let order = Array.concat [ [| 0L |]; Array.init m (fun i -> int64 (2 + 2 * i)); [| 1L |]; Array.init m (fun i -> int64 (3 + 2 * i)) ]
        x.reshape(split).permute(order).reshape(n, Array.fold (*) 1L grid, c * Array.fold (*) 1L k)

    /// Patch pixels [N, L', C*k1*...*km] (as from Pixels) -> tokens [N, L', D].
    member _.Project(pixels: Tensor) =
        Precision.linearWith pixels (proj.weight.flatten(1L)) proj.bias

    /// [N, C, ...] -> [N, L, D], tokens in row-major order of the patch grid.
    override this.forward(x: Tensor) = this.Project(this.Pixels x)

    /// The convolution's weight [D, C, k1, ..., km].
    member _.Weight = proj.weight

/// The image adapter: patch_embed.* (PatchEmbed), 2D sin-cos positions, the patchified image as
/// the target (models_mae.py patchify: row, column, channel within a patch).
type ImageAdapter(input: ImageInput, dim: int) as this =
    inherit InputAdapter("ImageAdapter")
    let patch_embed = new PatchEmbed(input.Channels, dim, input.PatchSize)
    do this.RegisterComponents()

    /// Xavier-uniform on the conv weight seen as a [D, C*ph*pw] matrix, as MAE does.
    override _.Initialize() =
        use _ = torch.no_grad()
        let w = patch_embed.Weight
        let fanOut, fanIn = float w.shape.[0], float (w.numel() / w.shape.[0])
        let bound = sqrt (6.0 / (fanIn + fanOut))
        init.uniform_(w, -bound, bound) |> ignore

    member _.Input = input

    override _.Grid =
        let gh, gw = input.Grid
        [| gh; gw |]

    /// Images must match the model's channels and size: [N, C, H, W] with N >= 1.
    override _.Check(argument: string, imgs: Tensor) =
        Guard.rank argument 4 "[N, C, H, W]" imgs
        Guard.nonEmptyBatch argument imgs
        let h, w = input.ImageSize
        if imgs.shape.[1] <> int64 input.Channels || imgs.shape.[2] <> int64 h || imgs.shape.[3] <> int64 w then
            Guard.fail argument (Guard.shapeOf imgs) (sprintf "[N, %d, %d, %d] (the model's Channels and ImageSize)" input.Channels h w)

    override _.Pieces(imgs: Tensor) = patch_embed.Pixels imgs
    override _.Embed(pixels: Tensor) = patch_embed.Project pixels
    override _.Target(imgs: Tensor) = Patchify.patchify2d input.PatchSize imgs
    override _.TargetWidth = input.PatchDim
    override _.Reassemble(tokens: Tensor) = Patchify.unpatchify2d input.PatchSize input.Grid input.Channels tokens
    override _.Positions(dim: int) = PosEmbed.sinCos2d dim input.Grid false
