/// The C# face (assembly Mae): its public surface carries no F# types, its builders are immutable
/// and validate, and it trains and probes through the core.
module Mae.Tests.Unit.CSharpFacadeTests

open System
open System.IO
open System.Reflection
open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

/// F# constructs a C# caller should never see: FSharp.Core types (lists, options, functions, Unit,
/// maps, sets, async), System.Tuple, and F# records/unions (types carrying CompilationMapping).
let rec isFSharpType (t: Type) : bool =
    if t.IsArray || t.IsByRef || t.IsPointer then isFSharpType (t.GetElementType())
    elif t.IsGenericType && not t.IsGenericTypeDefinition && t.GetGenericArguments() |> Array.exists isFSharpType then true
    else
        let t = if t.IsGenericType then t.GetGenericTypeDefinition() else t
        (not (isNull t.Namespace) && t.Namespace.StartsWith "Microsoft.FSharp")
        || (not (isNull t.FullName) && t.FullName.StartsWith "System.Tuple`")
        || t.GetCustomAttributes(true) |> Array.exists (fun a -> a.GetType().Name = "CompilationMappingAttribute")

/// Every type a public member of the C# assembly exposes: base types, interfaces, fields,
/// properties, method parameters and returns, constructors, events.
let publicSurface (asm: Assembly) =
    [ for t in asm.GetExportedTypes() do
          yield sprintf "%s : base" t.FullName, t.BaseType
          for i in t.GetInterfaces() -> sprintf "%s : interface" t.FullName, i
          let flags = BindingFlags.Public ||| BindingFlags.Instance ||| BindingFlags.Static ||| BindingFlags.DeclaredOnly
          for m in t.GetMembers(flags) do
              match m with
              | :? PropertyInfo as p -> yield sprintf "%s.%s" t.Name p.Name, p.PropertyType
              | :? FieldInfo as f -> yield sprintf "%s.%s" t.Name f.Name, f.FieldType
              | :? MethodBase as mb ->
                  for prm in mb.GetParameters() -> sprintf "%s.%s(%s)" t.Name mb.Name prm.Name, prm.ParameterType
                  match mb with
                  | :? MethodInfo as mi -> yield sprintf "%s.%s returns" t.Name mi.Name, mi.ReturnType
                  | _ -> ()
              | :? EventInfo as e -> yield sprintf "%s.%s" t.Name e.Name, e.EventHandlerType
              | _ -> () ]
    |> List.filter (fun (_, t) -> not (isNull t))

let private fixtureFolder () = fixturePath "mnist-small"

let private smallBuilder () =
    MaeBuilder.ForImages(28, 7, 1).Encoder(fun e -> e.Width(32).Depth(2).Heads(2)).Decoder(fun d -> d.Width(32).Depth(1).Heads(2))

let tests =
    testList "csharp facade" [
        test "the public surface of the C# assembly has no F# types" {
            let asm = typeof<MaeBuilder>.Assembly
            let surface = publicSurface asm
            Expect.isGreaterThan surface.Length 40 "the reflection sees the surface"
            let offenders = surface |> List.filter (fun (_, t) -> isFSharpType t) |> List.map (fun (where, t) -> sprintf "%s: %s" where t.FullName)
            Expect.isEmpty offenders "F# types in the public C# surface"
        }
        test "the check recognises F# types (so it can fail)" {
            Expect.isTrue (isFSharpType typeof<int list>) "F# list"
            Expect.isTrue (isFSharpType typeof<int option>) "F# option"
            Expect.isTrue (isFSharpType typeof<int -> int>) "F# function"
            Expect.isTrue (isFSharpType typeof<int * string>) "tuple"
            Expect.isTrue (isFSharpType typeof<MaeConfig>) "F# record"
            Expect.isTrue (isFSharpType typeof<MaskingStrategy>) "F# union"
            Expect.isTrue (isFSharpType typeof<Collections.Generic.IReadOnlyList<int option>>) "nested"
            Expect.isFalse (isFSharpType typeof<Collections.Generic.IReadOnlyList<string>>) "BCL type"
            Expect.isFalse (isFSharpType typeof<torch.Tensor>) "TorchSharp type"
        }
        test "builders are immutable: a derived builder leaves its source unchanged" {
            let baseBuilder = smallBuilder ()
            let changed = baseBuilder.MaskRatio(1.5)
            Expect.isEmpty (baseBuilder.Validate()) "the source is still valid"
            Expect.isNonEmpty (changed.Validate()) "the derived one is not"
        }
        test "Build throws ArgumentException naming the bad setting and its range; TryBuild returns every error" {
            let bad = smallBuilder().MaskRatio(1.5).Encoder(fun e -> e.Heads(5))
            let ex = expectArg "Heads" "divisor" (fun () -> bad.Build())
            Expect.stringContains ex.Message "Heads" "names the setting"
            let ok, model, errors = bad.TryBuild()
            Expect.isFalse ok "TryBuild fails"
            Expect.isNull model "no model"
            Expect.equal errors.Count 2 "both problems reported"
            Expect.exists errors (fun e -> e.Contains "MaskRatio" && e.Contains "[0, 1)") "the mask ratio and its range"
            expectArg "preset" "tiny" (fun () -> MaeBuilder.FromPreset "enormous") |> ignore
        }
        test "from C#: build, forward, encode, pretrain on the MNIST fixture, probe, reconstruct, save and load" {
            use data = ImageSplits.LoadIdxFolder(fixtureFolder (), 512, 256)
            let ok, model, errors = smallBuilder().Seed(3L).TryBuild()
            Expect.isTrue ok (String.Join("; ", errors))
            use model = model
            Expect.equal model.NumTokens 16 "4x4 patches"
            Expect.equal model.Modality "image" "an image model"
            Expect.isTrue (model :? ImageMaeModel) "built as an ImageMaeModel"
            use g = new Generator(1UL, torch.CPU)
            let out = model.Forward(data.Train.Images.narrow(0L, 0L, 8L), g)
            Expect.equal (out.Mask.sum().item<float32>()) (8.0f * 12.0f) "75% of 16 patches hidden in each of 8 images"
            use feats = model.Encode(data.Test.Images.narrow(0L, 0L, 4L))
            Expect.equal (shape feats) [ 4L; 32L ] "features [N, D]"
            let reports = Collections.Generic.List<PretrainProgressInfo>()
            let progress = { new IProgress<PretrainProgressInfo> with member _.Report p = reports.Add p }
            let r = Pretrainer.Pretrain(model, data.Train, PretrainerOptions(Epochs = 4, BatchSize = 64, BaseLr = 1e-3), progress)
            Expect.equal r.Steps 32 "4 epochs of 8 steps"
            Expect.equal reports.Count 32 "one report per step"
            Expect.isLessThan r.EpochLosses.[3] r.EpochLosses.[0] "loss falls"
            let probe = Evaluation.LinearProbe(model, data.Train, data.Test, 10, epochs = 10)
            Expect.isGreaterThan probe.TestAccuracy 0.3 "well above chance (0.1) on real digits"
            let knn = Evaluation.KnnAccuracy(model, data.Train, data.Test, 10)
            Expect.isGreaterThan knn 0.3 "k-NN above chance"
            use dir = new TempDir()
            model.Reconstruct(dir.File "r.png", data.Test.Images.narrow(0L, 0L, 2L), mean = ImageSplits.MnistMean, std = ImageSplits.MnistStd)
            Expect.isTrue (File.Exists(dir.File "r.png")) "PNG written"
            model.Save(dir.File "m.ckpt")
            use loaded = ImageMaeModel.Load(dir.File "m.ckpt")
            use a = model.Encode(data.Test.Images.narrow(0L, 0L, 4L))
            use b = loaded.Encode(data.Test.Images.narrow(0L, 0L, 4L))
            Expect.isTrue (same a b) "the loaded model encodes identically"
        }
        test "PretrainerOptions.Device moves the model; an unknown device is an ArgumentException naming it" {
            use data = ImageSplits.LoadIdxFolder(fixtureFolder (), 64, 16)
            use model = smallBuilder().Build()
            let r = Pretrainer.Pretrain(model, data.Train, PretrainerOptions(Epochs = 1, BatchSize = 32, Device = "cpu"))
            Expect.equal r.Steps 2 "trained on the named device"
            expectArg "device" "cuda" (fun () -> Pretrainer.Pretrain(model, data.Train, PretrainerOptions(Epochs = 1, BatchSize = 32, Device = "tpu:7"))) |> ignore
        }
        test "cancellation from C# stops early and leaves a resumable checkpoint" {
            use data = ImageSplits.LoadIdxFolder(fixtureFolder (), 256, 64)
            use model = smallBuilder().Build()
            use dir = new TempDir()
            use cts = new Threading.CancellationTokenSource()
            let progress = { new IProgress<PretrainProgressInfo> with member _.Report p = if p.Step = 3 then cts.Cancel() }
            let r = Pretrainer.Pretrain(model, data.Train, PretrainerOptions(Epochs = 5, BatchSize = 32, CheckpointDirectory = dir.Path), progress, cts.Token)
            Expect.isTrue r.Cancelled "cancelled"
            Expect.equal r.Steps 3 "stopped after the step that cancelled"
            Expect.isTrue (File.Exists r.CheckpointPath) "checkpoint written"
            let resumed = Pretrainer.Pretrain(model, data.Train, PretrainerOptions(Epochs = 5, BatchSize = 32, ResumeFrom = r.CheckpointPath))
            Expect.equal resumed.Steps 40 "resumed to the end (5 epochs x 8 steps)"
        }
        test "LinearProbe and KnnAccuracy refuse too few classes and too large a k with ArgumentException, not a native error" {
            use data = ImageSplits.LoadIdxFolder(fixtureFolder (), 64, 32) // labels 0..9
            use model = smallBuilder().Build()
            let e = expectArg "train" "labels in [0, 5), for classes = 5" (fun () -> Evaluation.LinearProbe(model, data.Train, data.Test, 5, epochs = 1))
            Expect.stringContains e.Message "label 9" "says the largest label found"
            expectArg "train" "labels in [0, 5), for classes = 5" (fun () -> Evaluation.KnnAccuracy(model, data.Train, data.Test, 5)) |> ignore
            let e = expectArg "k" "at most the number of training samples N = 64" (fun () -> Evaluation.KnnAccuracy(model, data.Train, data.Test, 10, k = 65))
            Expect.stringContains e.Message "65" "says the k it saw"
            expectArg "k" "a positive integer" (fun () -> Evaluation.KnnAccuracy(model, data.Train, data.Test, 10, k = 0)) |> ignore
            Expect.isGreaterThanOrEqual (Evaluation.KnnAccuracy(model, data.Train, data.Test, 10, k = 64)) 0.0 "k = N is allowed"
        }
        test "from C#: an image folder read on demand: pretrain with MAE's augmentation, probe and k-NN through MaeDataset" {
            use dir = new TempDir()
            ImageFolderTests.digitTree dir.Path 192 |> ignore
            let splits = MaeDataset.OpenImageFolder(dir.Path, testFraction = 0.25, seed = 1L)
            Expect.equal (splits.Train.Count + splits.Test.Count) 192 "every file in one split"
            Expect.equal splits.Test.Count 48 "a quarter held out"
            Expect.equal splits.Train.Channels 1 "grey PNGs"
            Expect.equal splits.Train.ClassNames.Count 10 "one class per digit folder"
            let stats = ChannelStatistics.Of splits.Train
            Expect.isTrue (stats.Mean.[0] > 0.05 && stats.Mean.[0] < 0.3) (sprintf "the digits' mean %.3f" stats.Mean.[0])
            use model = smallBuilder().Seed(3L).Build()
            let options =
                PretrainerOptions(Epochs = 3, BatchSize = 32, BaseLr = 1e-3, Workers = 2,
                                  Transform = ImageTransforms.Pretraining(28, 28, stats))
            let r = Pretrainer.Pretrain(model, splits.Train, options)
            Expect.equal r.Steps 12 "3 epochs of 144 / 32 = 4 steps"
            Expect.isTrue (Array.forall Double.IsFinite (Array.ofSeq r.EpochLosses)) "finite losses"
            let eval = ImageTransforms.Evaluation(28, 28, stats)
            let probe = Evaluation.LinearProbe(model, splits.Train, splits.Test, 10, eval, epochs = 5, workers = 2)
            Expect.isGreaterThan probe.TrainAccuracy 0.2 "the probe fits the training digits above chance (0.1)"
            Expect.isGreaterThanOrEqual (Evaluation.KnnAccuracy(model, splits.Train, splits.Test, 10, eval, k = 5)) 0.0 "k-NN runs"
            expectArg "train classes" "at most classes = 5" (fun () -> Evaluation.LinearProbe(model, splits.Train, splits.Test, 5, eval)) |> ignore
            // the in-memory path through the same types
            use data = ImageSplits.LoadIdxFolder(fixtureFolder (), 64, 16)
            let inMemory = MaeDataset.FromTensors(data.Train.Images)
            Expect.equal inMemory.ClassNames.Count 1 "unlabelled"
            let r = Pretrainer.Pretrain(model, inMemory, PretrainerOptions(Epochs = 1, BatchSize = 32))
            Expect.equal r.Steps 2 "2 steps over 64 images"
            use loaded =
                model.Save(dir.File "m.ckpt")
                MaeModel.Load(dir.File "m.ckpt")
            Expect.isTrue (loaded :? ImageMaeModel) "an image checkpoint loads as an ImageMaeModel"
        }
        test "from C#: ImageMaeModel.FromPyTorch reads the reference's .pth and ViTMAE safetensors; ExportPyTorch writes them back" {
            let golden = Path.Combine(fixturePath "golden", "rgb32-p8-normpix")
            use fromPth = ImageMaeModel.FromPyTorch(Path.Combine(golden, "reference.pth"), heads = 4, decoderHeads = 2)
            use fromHf = ImageMaeModel.FromPyTorch(Path.Combine(golden, "vitmae.safetensors"), heads = 4, decoderHeads = 2)
            Expect.equal (fromPth.ImageHeight, fromPth.Channels, fromPth.NumPatches) (32, 3, 16) "32x32 RGB, 4x4 patches"
            let case = GoldenTests.readCase "rgb32-p8-normpix"
            use a = fromPth.Encode(case.Get "inputs" "imgs")
            use b = fromHf.Encode(case.Get "inputs" "imgs")
            Expect.isTrue (same a b) "both files give the same encoder"
            use dir = new TempDir()
            fromPth.ExportPyTorch(dir.File "m.safetensors")
            use back = ImageMaeModel.FromPyTorch(dir.File "m.safetensors", heads = 4, decoderHeads = 2)
            use c = back.Encode(case.Get "inputs" "imgs")
            Expect.isTrue (same a c) "export then import: the same encoder"
            expectArg "Heads" "divisor" (fun () -> ImageMaeModel.FromPyTorch(Path.Combine(golden, "reference.pth"), heads = 3)) |> ignore
            // few labels from C#: the imported grey model on the MNIST fixture
            use grey = ImageMaeModel.FromPyTorch(Path.Combine(fixturePath "golden", "grey28-p7-raw", "reference.pth"), heads = 4, decoderHeads = 2)
            use data = ImageSplits.LoadIdxFolder(fixtureFolder (), 200, 32)
            let few = Evaluation.FewLabels(grey, MaeDataset.FromTensors(data.Train.Images, data.Train.Labels), MaeDataset.FromTensors(data.Test.Images, data.Test.Labels), labelsPerClass = 2, epochs = 1)
            Expect.equal (few.TrainSamples, few.TestSamples) (20, 32) "2 labels x 10 classes; the whole test split"
            Expect.isTrue (few.Pretrained >= 0.0 && few.Scratch <= 1.0 && few.LinearProbe >= 0.0) "accuracies"
        }
    ]
