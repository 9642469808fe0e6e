/// The image modality (MAE, He et al. 2021): images [N, C, H, W] cut into a grid of ph x pw
/// patches, row-major; each patch embedded by a linear map and reconstructed as its pixels.
namespace Mae

open TorchSharp

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

/// Linear patch embedding, stored as the reference's strided convolution (proj.{weight,bias},
/// weight [D, C, ph, pw]) and computed as one matrix product on the patches' pixels, which also
/// lets the MAE embed only the patches that stay visible.
type PatchEmbed(channels: int, dim: int, patchSize: int * int) as this =
    inherit Module<Tensor, Tensor>("PatchEmbed")
    let ph, pw = patchSize
    let proj = Conv2d(int64 channels, int64 dim, struct (int64 ph, int64 pw), stride = struct (int64 ph, int64 pw))
    do this.RegisterComponents()

    /// [N, C, H, W] -> [N, L, C*ph*pw]: each patch's pixels in the convolution weight's order
    /// (channel, row, column), tokens in row-major order of the patch grid.
    member _.Pixels(x: Tensor) =
        let n, c, hh, ww = x.shape.[0], x.shape.[1], x.shape.[2], x.shape.[3]
        let h, w = hh / int64 ph, ww / int64 pw
        x.reshape(n, c, h, int64 ph, w, int64 pw).permute(0L, 2L, 4L, 1L, 3L, 5L).reshape(n, h * w, c * int64 (ph * pw))

    /// Patch pixels [N, L', C*ph*pw] (as from Pixels) -> tokens [N, L', D].
    member _.Project(pixels: Tensor) =
        Precision.linearWith pixels (proj.weight.flatten(1L)) proj.bias

    /// [N, C, H, W] -> [N, L, D], tokens in row-major order of the patch grid.
    override this.forward(x: Tensor) = this.Project(this.Pixels x)

    /// The convolution's weight [D, C, ph, pw].
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
