/// Image folders written at test time as PNG files (the MNIST fixture's digits, plus hand-made
/// RGB/RGBA/broken files): the same pixels as the IDX path, clear errors naming the file or folder,
/// the skip policy, the splits, and the transforms (MAE's augmentation, the evaluation resize).
module Mae.Tests.Unit.ImageFolderTests

open System
open System.IO
open System.Threading
open Expecto
open TorchSharp
open StbImageWriteSharp
open Mae
open Mae.Data
open Mae.Tests.Unit.Common

let private fixtureFolder () = fixturePath "mnist-small"

let private pngBytes (w: int) (h: int) (comp: ColorComponents) (data: byte[]) =
    use s = new MemoryStream()
    ImageWriter().WritePng(data, w, h, comp, s)
    s.ToArray()

let private writeFile (path: string) (bytes: byte[]) =
    Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
    File.WriteAllBytes(path, bytes)

/// The first `n` training digits of the fixture as DIR/<digit>/<index>.png (grey 28 x 28), and
/// the same digits as the IDX loader reads them.
let internal digitTree (root: string) (n: int) : ImageSet =
    let folder = fixtureFolder ()
    let images, labels = Idx.find folder "train-images-idx3-ubyte", Idx.find folder "train-labels-idx1-ubyte"
    let dims, pixels = Idx.read images
    let _, ys = Idx.read labels
    let h, w = dims.[1], dims.[2]
    for i in 0 .. n - 1 do
        writeFile (Path.Combine(root, string ys.[i], sprintf "%03d.png" i)) (pngBytes w h ColorComponents.Grey pixels.[i * h * w .. (i + 1) * h * w - 1])
    Idx.load images labels n

let private mnistStats = { Mean = [| Idx.mnistMean |]; Std = [| Idx.mnistStd |] }

/// Every sample of an epoch, in order (the loader disposes nothing the test keeps).
let private drain (loader: BatchLoader) (epoch: int) =
    [ for b in loader.Epoch(epoch) do
          use b = b
          yield b.Indices, b.Labels.data<int64>().ToArray() ]

let private options batch workers onBad =
    { LoaderOptions.evaluation batch Transforms.identity with Workers = workers; OnBadSample = onBad }

let tests =
    testList "data image folders" [
        test "a class-folder tree of the fixture's digits as PNGs reads the same pixels as the IDX path" {
            use dir = new TempDir()
            let set = digitTree dir.Path 40
            let ds = ImageFolder.openClasses dir.Path 0
            let d = ds :> IDataset
            Expect.equal d.Count 40 "one sample per PNG"
            Expect.equal d.Channels 1 "grey PNGs -> 1 channel"
            let expectedClasses = set.Labels.data<int64>().ToArray() |> Array.distinct |> Array.map string |> Array.sort
            Expect.equal d.ClassNames expectedClasses "classes = sub-folders sorted by name"
            let normalize = Transforms.normalize mnistStats
            for k in 0 .. d.Count - 1 do
                use _ = torch.NewDisposeScope()
                let i = int (Path.GetFileNameWithoutExtension ds.Files.[k])
                let s = d.Read k
                Expect.equal (shape s.Input) [ 1L; 28L; 28L ] "[C, H, W]"
                let x = normalize.Invoke(null, s.Input)
                let expected = set.Images.[int64 i]
                let gap = (x - expected).abs().max().item<float32> ()
                Expect.isLessThan gap 1e-5f (sprintf "%s: pixels as the IDX loader's after the same normalisation" ds.Files.[k])
                Expect.equal d.ClassNames.[int s.Label] (string (set.Labels.[int64 i].item<int64> ())) "label = index of the class folder"
        }
        test "RGB and RGBA files read as 3 channels, alpha dropped; a grey file among them is an error naming it" {
            use dir = new TempDir()
            let rgb = Array.init (2 * 3 * 3) (fun i -> byte (i * 13))
            let rgba = Array.init (2 * 3 * 4) (fun i -> byte (i * 7 + 1))
            writeFile (dir.File "a/rgb.png") (pngBytes 3 2 ColorComponents.RedGreenBlue rgb)
            writeFile (dir.File "b/rgba.png") (pngBytes 3 2 ColorComponents.RedGreenBlueAlpha rgba)
            writeFile (dir.File "b/zgrey.png") (pngBytes 3 2 ColorComponents.Grey (Array.create 6 9uy))
            let d = ImageFolder.openClasses dir.Path 0 :> IDataset
            Expect.equal d.Channels 3 "from the first file"
            let x = (d.Read 1).Input
            Expect.equal (shape x) [ 3L; 2L; 3L ] "[3, H, W]"
            let expected = Array.init 18 (fun k -> let c, p = k / 6, k % 6 in float32 rgba.[p * 4 + c] / 255.0f)
            Expect.sequenceEqual (x.data<float32>().ToArray()) expected "RGB of RGBA, channel-first"
            let e = expectExn<InvalidDataException> "grey among RGB" (fun () -> d.Read 2 |> ignore)
            Expect.stringContains e.Message (dir.File "b/zgrey.png") "names the file"
            Expect.stringContains e.Message "has 1 channel" "its channels"
            Expect.stringContains e.Message "have 3" "the expected"
        }
        test "a corrupt PNG: stop raises naming the file (with and without workers); skip leaves it out and counts it" {
            use dir = new TempDir()
            digitTree dir.Path 20 |> ignore
            let good = Directory.GetFiles(dir.File "1") |> Array.head
            let bytes = File.ReadAllBytes good
            let truncated = dir.File "1/truncated.png"
            File.WriteAllBytes(truncated, bytes.[.. bytes.Length / 2])
            let flipped = dir.File "3/flipped.png"
            File.WriteAllBytes(flipped, bytes |> Array.mapi (fun i b -> if i = bytes.Length - 20 then b ^^^ 0x5Auy else b))
            let text = dir.File "4/text.png"
            File.WriteAllText(text, "not a picture")
            let ds = ImageFolder.openClasses dir.Path 0
            for workers in [ 0; 2 ] do
                let loader = BatchLoader(ds, options 4 workers OnBadSample.Stop)
                let e = expectExn<InvalidDataException> "stop" (fun () -> drain loader 0 |> ignore)
                Expect.isTrue ([ truncated; flipped; text ] |> List.exists (fun f -> e.Message.StartsWith(f: string))) (sprintf "names the file: %s" e.Message)
            for workers in [ 0; 2 ] do
                let loader = BatchLoader(ds, options 4 workers OnBadSample.Skip)
                let seen = drain loader 0 |> List.collect (fst >> List.ofArray)
                Expect.equal seen.Length 20 "the 20 good images, each once"
                Expect.equal loader.SkippedCount 3 "three skipped"
                Expect.equal (loader.Skipped |> Array.map (fun s -> s.Source) |> Array.sort) ([| truncated; flipped; text |] |> Array.sort) "the skipped files"
                let reasons = loader.Skipped |> Array.map (fun s -> s.Reason) |> String.concat "\n"
                Expect.stringContains reasons "not an image" "the text file"
                Expect.stringContains reasons "could not be decoded" "the broken PNGs"
        }
        test "the loader over PNGs: MAE's augmentation + normalisation, batches the consumer owns, cancellation" {
            use dir = new TempDir()
            digitTree dir.Path 24 |> ignore
            let ds = ImageFolder.openClasses dir.Path 0
            let transform = Transforms.compose [| Transforms.pretrain (16, 16); Transforms.normalize mnistStats |]
            let seen = Collections.Generic.List<float32[]>()
            for workers in [ 0; 2 ] do
                let loader = BatchLoader(ds, { LoaderOptions.training 5 3L transform with Workers = workers })
                Expect.equal loader.IterationsPerEpoch 4 "24 / 5, the partial batch dropped"
                let kept =
                    [ for b in loader.Epoch(0) do
                          // a batch outlives the consumer's own dispose scope: it is the consumer's
                          let inner = (use _ = torch.NewDisposeScope() in b)
                          Expect.isFalse inner.Inputs.IsInvalid "not disposed by the consumer's scope"
                          Expect.equal (shape inner.Inputs) [ 5L; 1L; 16L; 16L ] "[B, C, H, W]"
                          Expect.equal inner.Labels.dtype ScalarType.Int64 "int64 labels"
                          yield inner ]
                Expect.equal kept.Length 4 "four batches"
                seen.Add(kept |> Seq.collect (fun b -> b.Inputs.data<float32>().ToArray()) |> Array.ofSeq)
                for b in kept do (b :> IDisposable).Dispose()
                Expect.isTrue kept.Head.Inputs.IsInvalid "Dispose frees the batch's tensors"
                use cts = new CancellationTokenSource()
                let e =
                    expectExn<OperationCanceledException> "cancelled" (fun () ->
                        for b in loader.Epoch(1, 0, cts.Token) do
                            (b :> IDisposable).Dispose()
                            cts.Cancel())
                Expect.isNotNull e "cancellation raises on the consumer's thread"
            Expect.equal seen.[1] seen.[0] "decoding on two worker threads gives the batches decoded on the consumer's"
        }
        test "JPEG files (.jpg, .jpeg, .JPEG as ImageNet names them) are read; other files are not images" {
            use dir = new TempDir()
            let jpg (comp: ColorComponents) (data: byte[]) =
                use s = new MemoryStream()
                ImageWriter().WriteJpg(data, 8, 8, comp, s, 100)
                s.ToArray()
            let grey = Array.init 64 (fun i -> byte (40 + i))
            writeFile (dir.File "a/x.jpg") (jpg ColorComponents.Grey grey)
            writeFile (dir.File "a/y.JPEG") (jpg ColorComponents.Grey grey)
            writeFile (dir.File "b/z.jpeg") (jpg ColorComponents.Grey (Array.rev grey))
            writeFile (dir.File "b/notes.txt") [| 65uy |]
            let ds = ImageFolder.openClasses dir.Path 0
            Expect.equal (ds.Files |> Array.map Path.GetFileName) [| "x.jpg"; "y.JPEG"; "z.jpeg" |] "image endings, any case; other files left out"
            let x = ((ds :> IDataset).Read 0).Input
            // stb_image_write stores every JPEG as YCbCr: 3 channels, R = G = B for grey content
            Expect.equal (shape x) [ 3L; 8L; 8L ] "YCbCr JPEG -> [3, H, W]"
            let expected = torch.tensor(grey |> Array.map (fun b -> float32 b / 255.0f)).reshape(1L, 8L, 8L).expand(3L, 8L, 8L)
            Expect.isLessThan ((x - expected).abs().max().item<float32> ()) (4.0f / 255.0f) "quality-100 JPEG: within a few grey levels"
        }
        test "damaged files: a JPEG header on which stb_image loops forever, a truncated JPEG, a PNG claiming 400 M pixels" {
            use dir = new TempDir()
            let loop = Path.Combine(fixtureFolder (), "..", "damaged", "jpeg-header-loop.jpg")
            let read = Tasks.Task.Run(fun () ->
                try
                    ImageFile.read loop 0 |> ignore
                    "decoded"
                with :? InvalidDataException as e -> e.Message)
            Expect.isTrue (read.Wait(TimeSpan.FromSeconds 30.0)) "the reader returns (StbImageSharp alone never does)"
            Expect.stringContains read.Result loop "an InvalidDataException naming the file"
            let whole = use s = new MemoryStream() in ImageWriter().WriteJpg(Array.create 192 77uy, 8, 8, ColorComponents.RedGreenBlue, s, 90); s.ToArray()
            writeFile (dir.File "a/cut.jpg") whole.[.. whole.Length - 40]
            let e = expectExn<InvalidDataException> "truncated" (fun () -> ImageFile.read (dir.File "a/cut.jpg") 0 |> ignore)
            Expect.stringContains e.Message (dir.File "a/cut.jpg") "names the file"
            Expect.stringContains e.Message "truncated" "says what is wrong"
            // a PNG whose header (CRC intact) claims 20000 x 20000 pixels: refused before decoding
            let png = pngBytes 2 2 ColorComponents.Grey [| 1uy; 2uy; 3uy; 4uy |]
            let crc (b: byte[]) =
                let mutable c = 0xFFFFFFFFu
                for x in b do
                    c <- c ^^^ uint32 x
                    for _ in 1..8 do c <- if c &&& 1u <> 0u then 0xEDB88320u ^^^ (c >>> 1) else c >>> 1
                c ^^^ 0xFFFFFFFFu
            let bomb = Array.copy png
            for o in [ 16; 20 ] do bomb.[o .. o + 3] <- [| 0uy; 0uy; 0x4Euy; 0x20uy |] // IHDR width, height = 20000
            let c = crc bomb.[12 .. 28] // IHDR type + data
            bomb.[29 .. 32] <- [| byte (c >>> 24); byte (c >>> 16); byte (c >>> 8); byte c |]
            writeFile (dir.File "a/bomb.png") bomb
            let e = expectExn<InvalidDataException> "bomb" (fun () -> ImageFile.read (dir.File "a/bomb.png") 0 |> ignore)
            Expect.stringContains e.Message "20000 x 20000" "says what the header claims"
            writeFile (dir.File "a/whole.jpg") whole
            Expect.equal (shape (ImageFile.read (dir.File "a/whole.jpg") 0)) [ 3L; 8L; 8L ] "the whole file reads"
        }
        test "missing folder, empty folder, class folder without images: errors naming the folder" {
            use dir = new TempDir()
            let e = expectExn<DirectoryNotFoundException> "missing" (fun () -> ImageFolder.openClasses (dir.File "nowhere") 0 |> ignore)
            Expect.stringContains e.Message (dir.File "nowhere") "names it"
            let e = expectExn<InvalidDataException> "empty" (fun () -> ImageFolder.openClasses dir.Path 0 |> ignore)
            Expect.stringContains e.Message dir.Path "names it"
            writeFile (dir.File "cat/a.png") (pngBytes 2 2 ColorComponents.Grey [| 1uy; 2uy; 3uy; 4uy |])
            writeFile (dir.File "dog/readme.txt") [| 65uy |]
            let e = expectExn<InvalidDataException> "no images" (fun () -> ImageFolder.openClasses dir.Path 0 |> ignore)
            Expect.stringContains e.Message (dir.File "dog") "names the class folder"
        }
        test "splits: train/val as laid out (val uses train's classes), or a seeded fraction of one tree" {
            use dir = new TempDir()
            let png = pngBytes 2 2 ColorComponents.Grey [| 1uy; 2uy; 3uy; 4uy |]
            for c in [ "ant"; "bee"; "cow" ] do
                for i in 0..2 do writeFile (dir.File (sprintf "train/%s/%d.png" c i)) png
            writeFile (dir.File "test/cow/x.png") png
            let s = ImageFolder.openSplits dir.Path 0.5 0L 0
            Expect.equal s.Layout "train/test" "test/ read like val/"
            let v = s.Val :> IDataset
            Expect.equal v.ClassNames [| "ant"; "bee"; "cow" |] "train's classes"
            Expect.equal (v.Read 0).Label 2L "cow is class 2 of train, not 0"
            writeFile (dir.File "val/eel/x.png") png
            let e = expectExn<InvalidDataException> "extra class" (fun () -> ImageFolder.openSplits dir.Path 0.5 0L 0 |> ignore)
            Expect.stringContains e.Message (Path.Combine(dir.File "val", "eel")) "names the class folder"
            let tree = dir.File "train"
            let a = ImageFolder.openSplits tree 0.3 7L 0
            let b = ImageFolder.openSplits tree 0.3 7L 0
            Expect.equal a.Layout "fraction" "single tree"
            Expect.equal (a.Val.Files.Length, a.Train.Files.Length) (3, 6) "round(9 * 0.3) = 3 held out"
            Expect.equal (Array.sort (Array.append a.Val.Files a.Train.Files)) (Array.sort (ImageFolder.openClasses tree 0).Files) "a partition"
            Expect.equal a.Val.Files b.Val.Files "same seed, same split"
            let others = [ 1L .. 20L ] |> List.map (fun seed -> (ImageFolder.openSplits tree 0.3 seed 0).Val.Files)
            Expect.isTrue (others |> List.exists (fun f -> f <> a.Val.Files)) "the seed matters"
            expectArg "valFraction" "fraction" (fun () -> ImageFolder.openSplits tree 0.0 0L 0) |> ignore
        }
        test "RandomResizedCrop boxes stay within MAE's bounds and the output has the target shape" {
            let h, w = 30, 40
            for seed in 0..499 do
                let rng = Random(seed)
                let box = Transforms.randomResizedCropBox rng (h, w) Transforms.maeScale Transforms.defaultRatio
                Expect.isTrue (box.Top >= 0 && box.Left >= 0 && box.Top + box.Height <= h && box.Left + box.Width <= w) (sprintf "inside: %A" box)
                let area = float (box.Height * box.Width) / float (h * w)
                // sides are rounded to whole pixels, so the bounds hold up to a pixel's worth
                Expect.isTrue (area >= 0.2 - 0.02 && area <= 1.0) (sprintf "area fraction %f in [0.2, 1]: %A" area box)
                let ratio = float box.Width / float box.Height
                let slack (side: int) = 1.0 + 1.0 / float side
                Expect.isTrue (ratio >= 0.75 / slack box.Width / slack box.Height && ratio <= 4.0 / 3.0 * slack box.Width * slack box.Height) (sprintf "ratio %f: %A" ratio box)
                Expect.equal (Transforms.randomResizedCropBox (Random(seed)) (h, w) Transforms.maeScale Transforms.defaultRatio) box "the seed alone fixes the box"
            // no attempt fits a 10 x 1000 strip: torchvision's fallback, the center crop at ratio 4/3
            let strip = Transforms.randomResizedCropBox (Random 1) (10, 1000) (0.9, 1.0) Transforms.defaultRatio
            Expect.equal strip { Top = 0; Left = (1000 - 13) / 2; Height = 10; Width = 13 } "fallback"
            use _ = torch.NewDisposeScope()
            use g = gen 3
            let x = torch.rand([| 3L; 30L; 40L |], generator = g)
            let y = (Transforms.pretrain (16, 12)).Invoke(Random 5, x)
            Expect.equal (shape y) [ 3L; 16L; 12L ] "[C, height, width]"
            Expect.isTrue (same y ((Transforms.pretrain (16, 12)).Invoke(Random 5, x))) "same seed, same output"
        }
        test "the flip is exact, about half the time; evaluation is deterministic" {
            use _ = torch.NewDisposeScope()
            use g = gen 4
            let x = torch.rand([| 2L; 8L; 8L |], generator = g)
            let mirrored = torch.stack([| for c in 7L .. -1L .. 0L -> x.select(2L, c) |], 2L) // [C, H, W], column c = column 7 - c
            Expect.isTrue (same (Transforms.horizontalFlip x) mirrored) "columns reversed"
            // scale and ratio 1: the box is the whole image, resized to its own size (untouched)
            let t = Transforms.randomResizedCrop (8, 8) (1.0, 1.0) (1.0, 1.0)
            let flips =
                [ for seed in 0..99 ->
                      let y = t.Invoke(Random seed, x)
                      if same y x then 0 elif same y mirrored then 1 else failtestf "seed %d: neither the image nor its mirror" seed ]
            Expect.isTrue (List.sum flips > 30 && List.sum flips < 70) (sprintf "%d of 100 flipped" (List.sum flips))
            let e = Transforms.evaluation (24, 24)
            let img = torch.rand([| 1L; 28L; 32L |], generator = g)
            let a, b = e.Invoke(Random 1, img), e.Invoke(Random 2, img)
            Expect.equal (shape a) [ 1L; 24L; 24L ] "resize shorter side to 27, center crop 24"
            Expect.isTrue (same a b) "no randomness"
        }
        test "normalisation checks its channels; statistics are the per-channel mean and std" {
            use _ = torch.NewDisposeScope()
            use g = gen 5
            let x = torch.rand([| 6L; 3L; 4L; 5L |], generator = g)
            let d = InMemoryDataset(x, torch.zeros([| 6L |], dtype = ScalarType.Int64)) :> IDataset
            let stats = Transforms.statistics d
            let flat = x.transpose(0L, 1L).reshape(3L, -1L).to_type(ScalarType.Float64)
            for c in 0..2 do
                Expect.floatClose Accuracy.high stats.Mean.[c] (flat.[int64 c].mean().item<float> ()) "mean"
                Expect.floatClose Accuracy.medium stats.Std.[c] (flat.[int64 c].std(unbiased = false).item<float> ()) "population std"
            expectArg "x" "3 channels" (fun () -> (Transforms.normalize Transforms.imageNet).Invoke(null, x.[0L].narrow(0L, 0L, 1L))) |> ignore
        }
        test "pretraining from the PNG folder gives the probe accuracy of the IDX path on the same images and seed" {
            use dir = new TempDir()
            let set = digitTree dir.Path 512
            let folder = ImageFolder.openClasses dir.Path 0
            // the same images in the same dataset order: sample k is the file folder.Files.[k]
            let ids = folder.Files |> Array.map (fun f -> int64 (int (Path.GetFileNameWithoutExtension f)))
            use order = torch.tensor ids
            use images = set.Images.index_select(0L, order)
            let options = { PretrainOptions.defaults with Epochs = 2; BatchSize = 64; BaseLr = 1e-3; Seed = 3L }
            let train, test = Idx.loadFolder (fixtureFolder ()) 512 256
            let pretrainAndProbe (run: MaskedAutoencoder -> PretrainResult) =
                use m = MaskedAutoencoder.Create(small, 5L)
                let r = run m
                let probe = Probe.linearOn { Probe.defaultLinearOptions with Epochs = 5 } 10 (fun x -> m.Features(x, false)) torch.CPU 256 train test
                r, probe.TestAccuracy
            let idx, idxAcc = pretrainAndProbe (fun m -> Pretrain.run m images options null ignore CancellationToken.None)
            let png, pngAcc =
                pretrainAndProbe (fun m ->
                    Pretrain.runOn m folder { options with Transform = Transforms.normalize mnistStats; Workers = 2 } null ignore CancellationToken.None)
            Expect.equal png.Steps idx.Steps "same steps"
            for a, b in Array.zip png.EpochLosses idx.EpochLosses do
                Expect.floatClose { absolute = 1e-5; relative = 1e-4 } a b "the same loss each epoch"
            Expect.equal pngAcc idxAcc (sprintf "the same probe accuracy (PNG folder %.4f, IDX %.4f)" pngAcc idxAcc)
        }
        test "probe, k-NN and fine-tuning read the PNG folder on demand and give what the in-memory path gives" {
            use dir = new TempDir()
            let set = digitTree dir.Path 192
            let folder = ImageFolder.openClasses dir.Path 0
            let ids = folder.Files |> Array.map (fun f -> int64 (int (Path.GetFileNameWithoutExtension f)))
            use order = torch.tensor ids
            use images = set.Images.index_select(0L, order)
            use labels = set.Labels.index_select(0L, order)
            let inMemory = { Images = images; Labels = labels }
            let normalize = Transforms.normalize mnistStats
            let loader = { LoaderOptions.evaluation 48 normalize with Workers = 2 }
            // one sample of 192 either way: PNG decoding and the IDX path agree to float rounding
            let close (what: string) (a: float) (b: float) =
                Expect.isLessThanOrEqual (abs (a - b)) (1.0 / 192.0 + 1e-9) (sprintf "%s: folder %.4f, in memory %.4f" what a b)
            use m = MaskedAutoencoder.Create(small, 5L)
            m.eval ()
            let features (x: Tensor) = m.Features(x, false)
            let probeOptions = { Probe.defaultLinearOptions with Epochs = 3 }
            let onData = Probe.linearOnData probeOptions 10 features torch.CPU loader folder folder
            let inMem = Probe.linearOn probeOptions 10 features torch.CPU 48 inMemory inMemory
            close "probe train accuracy" onData.TrainAccuracy inMem.TrainAccuracy
            close "probe test accuracy" onData.TestAccuracy inMem.TestAccuracy
            close "k-NN" (Probe.knnOnData 5 0.07 10 features torch.CPU loader folder folder) (Probe.knnOn 5 0.07 10 features torch.CPU 48 inMemory inMemory)
            // checked before any feature is computed
            expectArg "train classes" "at most classes = 5" (fun () -> Probe.linearOnData probeOptions 5 features torch.CPU loader folder folder) |> ignore
            expectArg "k" "at most the number of training samples N = 192" (fun () -> Probe.knnOnData 193 0.07 10 features torch.CPU loader folder folder) |> ignore
            let tune (train: VitClassifier -> float[]) =
                torch.manual_seed 4L |> ignore
                use clf = new VitClassifier(small, 10)
                let losses = train clf
                losses, FineTune.evaluateOn clf loader folder, FineTune.evaluate clf images labels
            let o = { FineTune.defaults with Epochs = 2; BatchSize = 32; Seed = 1L }
            let folderLosses, folderAcc, folderAccInMemory =
                tune (fun clf -> FineTune.runOn clf folder { o with Transform = normalize; Workers = 2 } CancellationToken.None)
            let memLosses, _, memAcc = tune (fun clf -> FineTune.run clf images labels o CancellationToken.None)
            for a, b in Array.zip folderLosses memLosses do
                Expect.floatClose { absolute = 1e-4; relative = 1e-3 } a b "the same fine-tuning loss each epoch"
            close "fine-tuned accuracy (folder vs memory evaluation of one model)" folderAcc folderAccInMemory
            close "fine-tuned accuracy (trained on the folder vs in memory)" folderAcc memAcc
            use tooFew = new VitClassifier(small, 5)
            expectArg "data classes" "at most the classifier's 5 classes" (fun () -> FineTune.runOn tooFew folder o CancellationToken.None) |> ignore
        }
    ]
