/// The reconstruction picture: a PNG of the right size, and predictions mapped back to pixels with
/// the visible patches' statistics.
module Mae.Tests.Unit.VisualizeTests

open System.IO
open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

let private pngSignature = [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |]

let private bigEndian (b: byte[]) (o: int) =
    (int b.[o] <<< 24) ||| (int b.[o + 1] <<< 16) ||| (int b.[o + 2] <<< 8) ||| int b.[o + 3]

/// Writes the reconstruction of `k` random images and checks signature, IHDR size and colour type.
let private checkPng (cfg: MaeConfig) (k: int) =
    use _ = torch.NewDisposeScope()
    use dir = new TempDir()
    use m = MaskedAutoencoder.Create(cfg, 0L)
    use g = gen 51
    let h, w = cfg.Image.ImageSize
    let imgs = torch.randn([| int64 k; int64 cfg.Image.Channels; int64 h; int64 w |], generator = g)
    let path = dir.File "recon.png"
    Visualize.reconstruction path m g (fun x -> (x * 0.25 + 0.5)) imgs
    let b = File.ReadAllBytes path
    Expect.equal b.[0..7] pngSignature "PNG signature"
    Expect.equal (System.Text.Encoding.ASCII.GetString(b, 12, 4)) "IHDR" "IHDR chunk first"
    // 3 columns x k rows of images scaled 4x, 2-pixel gaps around and between them
    Expect.equal (bigEndian b 16) (3 * (w * 4 + 2) + 2) "width"
    Expect.equal (bigEndian b 20) (k * (h * 4 + 2) + 2) "height"
    Expect.equal b.[25] (if cfg.Image.Channels = 1 then 0uy else 2uy) "grey or RGB"
    Expect.equal (Directory.GetFiles dir.Path).Length 1 "no temporary file left"

let tests =
    testList "visualize" [
        test "reconstruction writes a PNG of 3 columns x K rows at scale 4" { checkPng small 2 }
        test "reconstruction of RGB non-square images" {
            checkPng (MaeConfig.withImage (28, 42) (7, 14) 3 small) 3
        }
        test "denormalise without norm-pix is the identity" {
            use _ = torch.NewDisposeScope()
            let pred = torch.randn(2L, 16L, 49L)
            let target = torch.randn(2L, 16L, 49L)
            let mask = torch.ones(2L, 16L)
            Expect.isTrue (same (Visualize.denormalise false pred target mask) pred) "pred unchanged"
        }
        test "denormalise with norm-pix maps a normalised target back when all patches share mean and std" {
            use _ = torch.NewDisposeScope()
            use g = gen 52
            // every patch holds the same values in its own order, then sample-wise scale and shift
            let values = torch.randn([| 1L; 1L; 12L |], generator = g)
            let order = torch.stack([| for _ in 1 .. 2 * 9 -> torch.randperm(12L, generator = g) |], 0L).reshape(2L, 9L, 12L)
            let scale = torch.tensor([| 2.0f; 0.5f |]).reshape(2L, 1L, 1L)
            let shift = torch.tensor([| 3.0f; -1.0f |]).reshape(2L, 1L, 1L)
            let target = values.expand(2L, 9L, 12L).gather(2L, order) * scale + shift
            let pred = Losses.normPixTarget Losses.normPixEps target
            let mask = (Masking.random g 0.6 (torch.zeros(2L, 9L, 4L))).Mask
            let back = Visualize.denormalise true pred target mask
            Expect.isTrue (back.allclose(target, rtol = 1e-4, atol = 1e-4)) "the target comes back"
            Expect.isFalse (pred.allclose(target, atol = 1e-2)) "(the normalised target is not the target)"
        }
        test "denormalise uses the visible patches' statistics, not the hidden ones'" {
            use _ = torch.NewDisposeScope()
            use g = gen 53
            let base' = torch.randn([| 1L; 4L; 12L |], generator = g)
            let norm = Losses.normPixTarget Losses.normPixEps base'
            // visible patches (0, 1): mean 5, std 2; hidden patches (2, 3): mean -7, std 10
            let stats = torch.tensor([| 2.0f; 2.0f; 10.0f; 10.0f |]).reshape(1L, 4L, 1L)
            let means = torch.tensor([| 5.0f; 5.0f; -7.0f; -7.0f |]).reshape(1L, 4L, 1L)
            let target = norm * stats + means
            let mask = torch.tensor([| 0.0f; 0.0f; 1.0f; 1.0f |]).reshape(1L, 4L)
            let pred = norm
            let back = Visualize.denormalise true pred target mask
            let expected = norm * 2.0 + 5.0
            Expect.isTrue (back.allclose(expected, rtol = 1e-3, atol = 1e-3)) "hidden patches get the visible patches' mean and std"
        }
    ]
