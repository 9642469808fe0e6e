/// IDX files (MNIST's format) written at test time: raw and gzipped files read the same, pixels
/// are normalised as MNIST's, bad files raise clear errors. Nothing is downloaded.
module Mae.Tests.Unit.DataTests

open System
open System.IO
open System.IO.Compression
open Expecto
open TorchSharp
open Mae
open Mae.Data
open Mae.Tests.Unit.Common

/// An unsigned-byte IDX file: magic 0 0 8 rank, big-endian dimensions, the bytes.
let idx (dims: int[]) (data: byte[]) =
    [| yield! [| 0uy; 0uy; 8uy; byte dims.Length |]
       for d in dims do
           yield! [| byte (d >>> 24); byte (d >>> 16); byte (d >>> 8); byte d |]
       yield! data |]

let private gzip (bytes: byte[]) =
    use ms = new MemoryStream()
    (use gz = new GZipStream(ms, CompressionLevel.Fastest, true) in gz.Write(bytes, 0, bytes.Length))
    ms.ToArray()

// 5 images of 4 rows x 3 columns, and their labels
let private pixels = Array.init (5 * 4 * 3) (fun i -> byte ((i * 37 + 11) % 256))
let private labels = [| 3uy; 1uy; 4uy; 1uy; 5uy |]
let private testPixels = Array.rev pixels
let private testLabels = [| 9uy; 2uy; 6uy; 5uy; 3uy |]

/// The MNIST file names: train raw, test gzipped.
let private writeFixture (dir: string) =
    File.WriteAllBytes(Path.Combine(dir, "train-images-idx3-ubyte"), idx [| 5; 4; 3 |] pixels)
    File.WriteAllBytes(Path.Combine(dir, "train-labels-idx1-ubyte"), idx [| 5 |] labels)
    File.WriteAllBytes(Path.Combine(dir, "t10k-images-idx3-ubyte.gz"), gzip (idx [| 5; 4; 3 |] testPixels))
    File.WriteAllBytes(Path.Combine(dir, "t10k-labels-idx1-ubyte.gz"), gzip (idx [| 5 |] testLabels))

let private normalised (bytes: byte[]) =
    bytes |> Array.map (fun b -> float32 ((float b / 255.0 - 0.1307) / 0.3081))

let private checkSet (set: ImageSet) (bytes: byte[]) (ys: byte[]) =
    Expect.equal (shape set.Images) [ 5L; 1L; 4L; 3L ] "[N, 1, H, W]"
    Expect.equal set.Images.dtype ScalarType.Float32 "float32"
    Expect.equal set.Count 5 "count"
    let actual = set.Images.data<float32>().ToArray()
    let expected = normalised bytes
    for i in 0 .. expected.Length - 1 do
        Expect.floatClose Accuracy.medium (float actual.[i]) (float expected.[i]) (sprintf "pixel %d = (x/255 - 0.1307)/0.3081" i)
    Expect.equal set.Labels.dtype ScalarType.Int64 "int64 labels"
    Expect.equal (set.Labels.data<int64>().ToArray()) (ys |> Array.map int64) "labels"

let tests =
    testList "data" [
        test "loadFolder reads raw and gzipped IDX files named as MNIST's" {
            use dir = new TempDir()
            writeFixture dir.Path
            let train, test = Idx.loadFolder dir.Path 0 0
            checkSet train pixels labels
            checkSet test testPixels testLabels
            // pixel (image 1, row 2, column 0) lands where it should
            let v = train.Images.[1L, 0L, 2L, 0L].item<float32>()
            Expect.floatClose Accuracy.medium (float v) (float (normalised pixels).[12 + 2 * 3]) "row-major H x W"
        }
        test "limits keep the first images" {
            use dir = new TempDir()
            writeFixture dir.Path
            let train, test = Idx.loadFolder dir.Path 2 3
            Expect.equal (train.Count, test.Count) (2, 3) "limited counts"
            Expect.equal (train.Labels.data<int64>().ToArray()) [| 3L; 1L |] "the first labels"
        }
        test "Idx.read returns the dimensions and the bytes" {
            use dir = new TempDir()
            let path = dir.File "x.idx"
            File.WriteAllBytes(path, idx [| 2; 3 |] [| 1uy .. 6uy |])
            let dims, bytes = Idx.read path
            Expect.equal dims [| 2; 3 |] "dims"
            Expect.equal bytes [| 1uy .. 6uy |] "bytes"
        }
        test "a bad magic number raises InvalidDataException" {
            use dir = new TempDir()
            let path = dir.File "bad.idx"
            File.WriteAllBytes(path, Array.append [| 1uy; 2uy; 8uy; 1uy |] (idx [| 2 |] [| 0uy; 1uy |] |> Array.skip 4))
            let e = expectExn<InvalidDataException> "bad magic" (fun () -> Idx.read path |> ignore)
            Expect.stringContains e.Message "magic" "says what is wrong"
            File.WriteAllBytes(path, [| 0uy; 0uy; 0x0Duy; 1uy; 0uy; 0uy; 0uy; 1uy; 0uy; 0uy; 0uy; 0uy |])
            expectExn<InvalidDataException> "float IDX" (fun () -> Idx.read path |> ignore) |> ignore
            writeFixture dir.Path
            File.WriteAllBytes(dir.File "train-images-idx3-ubyte", [| 0x50uy; 0x4Buy; 3uy; 4uy; 0uy; 0uy |])
            expectExn<InvalidDataException> "bad magic through loadFolder" (fun () -> Idx.loadFolder dir.Path 0 0 |> ignore) |> ignore
        }
        test "a truncated file or mismatched labels raise InvalidDataException" {
            use dir = new TempDir()
            writeFixture dir.Path
            let images = dir.File "train-images-idx3-ubyte"
            File.WriteAllBytes(images, idx [| 5; 4; 3 |] pixels.[.. 50])
            let e = expectExn<InvalidDataException> "truncated" (fun () -> Idx.loadFolder dir.Path 0 0 |> ignore)
            Expect.stringContains e.Message "60 values" "says how many were expected"
            File.WriteAllBytes(images, idx [| 5; 4; 3 |] pixels)
            File.WriteAllBytes(dir.File "train-labels-idx1-ubyte", idx [| 4 |] labels.[.. 3])
            expectExn<InvalidDataException> "4 labels for 5 images" (fun () -> Idx.loadFolder dir.Path 0 0 |> ignore) |> ignore
        }
        test "a missing file raises FileNotFoundException naming it" {
            use dir = new TempDir()
            writeFixture dir.Path
            File.Delete(dir.File "t10k-labels-idx1-ubyte.gz")
            let e = expectExn<FileNotFoundException> "missing labels" (fun () -> Idx.loadFolder dir.Path 0 0 |> ignore)
            Expect.stringContains e.Message "t10k-labels-idx1-ubyte" "the message names the file"
            Expect.isTrue (e.FileName.EndsWith "t10k-labels-idx1-ubyte") (sprintf "FileName %s" e.FileName)
            expectExn<DirectoryNotFoundException> "missing folder" (fun () ->
                Idx.loadFolder (dir.File "nowhere") 0 0 |> ignore) |> ignore
        }
        test "Subsets.perClass: K of each class, sorted, the same for a seed, a larger K keeps a smaller one's; too large a K names the class" {
            use _ = torch.NewDisposeScope()
            // 5 classes of 3, 4, 5, 6, 7 samples, interleaved
            let labels = [| for c in 0 .. 4 do for _ in 1 .. c + 3 -> int64 c |] |> Array.permute (fun i -> (i * 7) % 25)
            let data = InMemoryDataset(torch.zeros(25L, 1L, 2L, 2L), torch.tensor labels) :> IDataset
            for seed in [ 0L; 1L; 42L ] do
                let three = Subsets.perClass 3 seed data
                Expect.equal three.Length 15 "3 x 5 samples"
                Expect.equal three (Array.sort (Array.distinct three)) "sorted, distinct"
                for c in 0 .. 4 do
                    Expect.equal (three |> Array.filter (fun i -> labels.[i] = int64 c) |> Array.length) 3 (sprintf "3 of class %d" c)
                Expect.equal (Subsets.perClass 3 seed data) three "the same for the same seed"
                Expect.isTrue (Set.isSubset (set (Subsets.perClass 2 seed data)) (set three)) "K = 2 is part of K = 3"
            Expect.notEqual (Subsets.perClass 2 0L data) (Subsets.perClass 2 1L data) "another seed, another subset"
            let subset = Subsets.labelsPerClass 3 0L data
            Expect.equal (subset.Labels()) (Subsets.perClass 3 0L data |> Array.map (fun i -> labels.[i])) "the subset's labels"
            let e = expectArg "labelsPerClass" "at most the 3 sample(s) of class \"0\"" (fun () -> Subsets.perClass 4 0L data)
            Expect.stringContains e.Message "4" "says the K it saw"
            expectArg "labelsPerClass" "a positive number" (fun () -> Subsets.perClass 0 0L data) |> ignore
        }
    ]
