/// Bad input is refused with a .NET exception that names the argument and what was expected,
/// before any native call can see it.
module Mae.Tests.Unit.GuardTests

open System
open System.IO
open System.Threading
open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

let private badRatios = [ 1.0; 1.5; -0.1; nan ]

let tests =
    testList "bad input" [
        test "model.Forward refuses a tensor of the wrong rank" {
            use m = MaskedAutoencoder.Create(small, 0L)
            use g = gen 0
            let e = expectArg "batch" "rank 4" (fun () -> m.Forward(torch.zeros(1L, 28L, 28L), g))
            Expect.stringContains e.Message "[1, 28, 28]" "says the shape it saw"
            expectArg "batch" "rank 4" (fun () -> m.Forward(torch.zeros([| 1L; 1L; 1L; 28L; 28L |]), g)) |> ignore
            expectArg "batch" "rank 4" (fun () -> m.Encode(torch.zeros(28L, 28L))) |> ignore
        }
        test "a null image tensor raises ArgumentNullException" {
            use m = MaskedAutoencoder.Create(small, 0L)
            use g = gen 0
            let e = expectArg "batch" "" (fun () -> m.Forward((null: Tensor), g))
            Expect.isTrue (e :? ArgumentNullException) "ArgumentNullException"
        }
        test "Patchify.patchify2d refuses the wrong rank" {
            expectArg "imgs" "rank 4" (fun () -> Patchify.patchify2d (7, 7) (torch.zeros(2L, 28L, 28L))) |> ignore
        }
        test "an image size that is not a multiple of the patch is refused (config and patchify)" {
            let e = expectArg "ImageSize height" "divisible by the patch size 7" (fun () -> MaeConfig.validate (MaeConfig.withImage (30, 28) small.Image.PatchSize small.Image.Channels small))
            Expect.stringContains e.Message "30" "says the size it saw"
            expectArg "ImageSize width" "divisible by the patch size 14" (fun () ->
                MaeConfig.validate (MaeConfig.withImage (28, 30) (7, 14) small.Image.Channels small)) |> ignore
            expectArg "ImageSize height" "divisible" (fun () -> new MaskedAutoencoder((MaeConfig.withImage (30, 28) small.Image.PatchSize small.Image.Channels small))) |> ignore
            expectArg "imgs height" "divisible by the patch size 7" (fun () -> Patchify.patchify2d (7, 7) (torch.zeros(1L, 1L, 30L, 28L))) |> ignore
            expectArg "imgs width" "divisible by the patch size 5" (fun () -> Patchify.patchify2d (7, 5) (torch.zeros(1L, 1L, 28L, 28L))) |> ignore
        }
        testList "mask ratio outside [0, 1)" [
            for r in badRatios do
                test (sprintf "ratio %g" r) {
                    expectArg "MaskRatio" "[0, 1)" (fun () -> MaeConfig.validate { small with Masking = RandomPerSample r }) |> ignore
                    expectArg "MaskRatio" "[0, 1)" (fun () -> MaeConfig.validate { small with Masking = BlockWise r }) |> ignore
                    use g = gen 0
                    expectArg "maskRatio" "[0, 1)" (fun () -> Masking.random g r (torch.zeros(2L, 16L, 8L))) |> ignore
                    expectArg "maskRatio" "[0, 1)" (fun () -> Masking.randomShared g r (torch.zeros(2L, 16L, 8L))) |> ignore
                }
        ]
        test "ratio 0 is allowed and hides nothing" {
            use g = gen 0
            let m = Masking.random g 0.0 (torch.zeros(2L, 16L, 8L))
            Expect.equal (m.Mask.sum().item<float32>()) 0.0f "nothing hidden"
        }
        test "an empty batch is refused by Forward and by Masking" {
            use m = MaskedAutoencoder.Create(small, 0L)
            use g = gen 0
            expectArg "batch" "non-empty batch" (fun () -> m.Forward(torch.zeros(0L, 1L, 28L, 28L), g)) |> ignore
            expectArg "x" "non-empty batch" (fun () -> Masking.random g 0.75 (torch.zeros(0L, 16L, 8L))) |> ignore
            expectArg "x" "non-empty batch" (fun () -> Masking.block g 0.75 (4, 4) (torch.zeros(0L, 16L, 8L))) |> ignore
        }
        test "Masking.fromShuffle refuses a shuffle that does not index x's L tokens" {
            use _ = torch.NewDisposeScope()
            let x = torch.zeros(2L, 16L, 8L)
            let shuffle = torch.arange(16L).flip(0L).unsqueeze(0L).expand(2L, 16L).contiguous()
            Expect.equal (shape (Masking.fromShuffle x shuffle 4).Visible) [ 2L; 4L; 8L ] "a valid shuffle works"
            let e = expectArg "idsShuffle" "indices in [0, 16)" (fun () -> Masking.fromShuffle x (shuffle + 1L) 4)
            Expect.stringContains e.Message "16" "says the index it found"
            expectArg "idsShuffle" "indices in [0, 16)" (fun () -> Masking.fromShuffle x (shuffle - 1L) 4) |> ignore
            expectArg "idsShuffle" "[2, 16]" (fun () -> Masking.fromShuffle x (shuffle.narrow(1L, 0L, 12L)) 4) |> ignore
            expectArg "idsShuffle" "int64" (fun () -> Masking.fromShuffle x (shuffle.to_type(ScalarType.Int32)) 4) |> ignore
            expectArg "keep" "[1, 16]" (fun () -> Masking.fromShuffle x shuffle 17) |> ignore
        }
        test "Masking.given refuses values other than 0 and 1; Masking.restore refuses ids outside [0, L)" {
            use _ = torch.NewDisposeScope()
            let x = torch.zeros(2L, 4L, 8L)
            let twos = torch.tensor([| 2.0f; 0.0f; 0.0f; 0.0f; 0.0f; 0.0f; 1.0f; 1.0f |]).reshape(2L, 4L)
            expectArg "hidden" "0 or 1" (fun () -> Masking.given twos x) |> ignore
            let ids = torch.tensor([| 0L; 1L; 2L; 4L |]).reshape(1L, 4L)
            expectArg "idsRestore" "indices in [0, 4)" (fun () -> Masking.restore ids (torch.zeros(1L, 4L, 8L))) |> ignore
            expectArg "idsRestore" "[1, 4]" (fun () -> Masking.restore (ids.narrow(1L, 0L, 3L)) (torch.zeros(1L, 4L, 8L))) |> ignore
        }
        test "an unknown preset name is refused with the known names" {
            let e = expectArg "preset" "one of tiny, base, large, huge" (fun () -> MaeConfig.ofName "giant")
            Expect.stringContains e.Message "giant" "says the name it saw"
            expectArg "preset" "one of" (fun () -> MaeConfig.ofName null) |> ignore
        }
        test "images of the wrong size or channels for the model are refused" {
            use m = MaskedAutoencoder.Create(small, 0L)
            use g = gen 0
            let e = expectArg "batch" "[N, 1, 28, 28]" (fun () -> m.Forward(torch.zeros(2L, 3L, 28L, 28L), g))
            Expect.stringContains e.Message "[2, 3, 28, 28]" "says the shape it saw"
            expectArg "batch" "[N, 1, 28, 28]" (fun () -> m.Forward(torch.zeros(2L, 1L, 32L, 32L), g)) |> ignore
            expectArg "batch" "[N, 1, 28, 28]" (fun () -> m.Features(torch.zeros(2L, 1L, 28L, 21L), false)) |> ignore
        }
        test "other bad settings name themselves" {
            expectArg "Heads" "a divisor of EmbedDim 32" (fun () -> MaeConfig.validate { small with Heads = 3 }) |> ignore
            expectArg "Channels" "a positive integer" (fun () -> MaeConfig.validate (MaeConfig.withImage small.Image.ImageSize small.Image.PatchSize 0 small)) |> ignore
            expectArg "EmbedDim" "a positive multiple of 4" (fun () -> MaeConfig.validate { small with EmbedDim = 30; Heads = 3 }) |> ignore
        }
        test "PretrainOptions with BatchSize 0 is refused" {
            let o = { PretrainOptions.defaults with BatchSize = 0 }
            expectArg "BatchSize" "a positive integer" (fun () -> PretrainOptions.validate o) |> ignore
            use m = MaskedAutoencoder.Create(small, 0L)
            expectArg "BatchSize" "a positive integer" (fun () ->
                Pretrain.run m (torch.zeros(4L, 1L, 28L, 28L)) o null ignore CancellationToken.None) |> ignore
        }
        test "Pretrain.run refuses fewer images than one batch" {
            use m = MaskedAutoencoder.Create(small, 0L)
            let o = { PretrainOptions.defaults with BatchSize = 8 }
            expectArg "inputs" "at least BatchSize = 8" (fun () ->
                Pretrain.run m (torch.zeros(4L, 1L, 28L, 28L)) o null ignore CancellationToken.None) |> ignore
        }
        test "Checkpoint.readMeta: missing file and non-zip file" {
            use dir = new TempDir()
            let missing = dir.File "nope.ckpt"
            let e = expectExn<FileNotFoundException> "missing checkpoint" (fun () -> Checkpoint.readMeta missing |> ignore)
            Expect.stringContains e.Message "nope.ckpt" "names the file"
            let text = dir.File "text.ckpt"
            File.WriteAllText(text, "this is not a zip file")
            let e = expectExn<InvalidDataException> "non-zip checkpoint" (fun () -> Checkpoint.readMeta text |> ignore)
            Expect.stringContains e.Message "text.ckpt" "names the file"
            use m = MaskedAutoencoder.Create(small, 0L)
            expectExn<InvalidDataException> "loading a non-zip file" (fun () -> Checkpoint.loadInto text m None None) |> ignore
        }
    ]
