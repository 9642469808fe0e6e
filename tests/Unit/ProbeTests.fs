/// Probes on synthetic features: the linear probe separates what is separable and no more, k-NN
/// finds clusters, and feature extraction equals a direct forward.
module Mae.Tests.Unit.ProbeTests

open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

/// n points in d dimensions around `classes` random centres (spread `spread`, unit noise) and their labels.
let private clusters (g: Generator) (centres: Tensor) (n: int) =
    let classes = centres.shape.[0]
    let labels = torch.randint(0L, classes, [| int64 n |], generator = g)
    let x = centres.index_select(0L, labels) + torch.randn([| int64 n; centres.shape.[1] |], generator = g)
    x, labels

let private options = { Probe.defaultLinearOptions with Epochs = 10; BatchSize = 64; Seed = 3L }

let tests =
    testList "probes" [
        test "the linear probe separates linearly separable classes" {
            use _ = torch.NewDisposeScope()
            use g = gen 31
            let centres = torch.randn([| 4L; 16L |], generator = g) * 3.0
            let trainX, trainY = clusters g centres 512
            let testX, testY = clusters g centres 256
            let r = Probe.linear options 4 trainX trainY testX testY
            Expect.isGreaterThan r.TestAccuracy 0.95 "test accuracy"
            Expect.isGreaterThan r.TrainAccuracy 0.95 "train accuracy"
        }
        test "the linear probe is at chance on random labels" {
            use _ = torch.NewDisposeScope()
            use g = gen 32
            let trainX = torch.randn([| 512L; 16L |], generator = g)
            let trainY = torch.randint(0L, 2L, [| 512L |], generator = g)
            let testX = torch.randn([| 400L; 16L |], generator = g)
            let testY = torch.randint(0L, 2L, [| 400L |], generator = g)
            let r = Probe.linear options 2 trainX trainY testX testY
            Expect.isGreaterThan r.TestAccuracy 0.38 "near chance (0.5), not far below"
            Expect.isLessThan r.TestAccuracy 0.62 "near chance (0.5), not above"
        }
        test "k-NN finds clustered classes" {
            use _ = torch.NewDisposeScope()
            use g = gen 33
            // clusters in different directions: k-NN votes by cosine similarity
            let centres = torch.nn.functional.normalize(torch.randn([| 5L; 8L |], generator = g), dim = 1L) * 6.0
            let trainX, trainY = clusters g centres 500
            let testX, testY = clusters g centres 200
            let acc = Probe.knn 10 0.07 5 trainX trainY testX testY
            Expect.isGreaterThan acc 0.9 "k-NN accuracy"
            // the same features with shuffled training labels: chance level
            let shuffled = trainY.index_select(0L, torch.randperm(500L, generator = g))
            Expect.isLessThan (Probe.knn 10 0.07 5 trainX shuffled testX testY) 0.5 "shuffled labels: near chance (0.2)"
        }
        test "accuracy counts argmax hits" {
            use logits = torch.tensor([| 0.1f; 0.9f; 0.8f; 0.2f; 0.3f; 0.7f |]).reshape(3L, 2L)
            use labels = torch.tensor([| 1L; 1L; 1L |])
            Expect.floatClose Accuracy.veryHigh (Probe.accuracy logits labels) (2.0 / 3.0) "2 of 3"
        }
        test "extract returns [N, D] equal to a direct forward" {
            use _ = torch.NewDisposeScope()
            use m = MaskedAutoencoder.Create(small, 0L)
            m.eval ()
            use g = gen 34
            let imgs = torch.randn([| 7L; 1L; 28L; 28L |], generator = g)
            for meanPool in [ false; true ] do
                let z = Probe.extract (fun x -> m.Features(x, meanPool)) torch.CPU 3 imgs
                Expect.equal (shape z) [ 7L; 32L ] "[N, D]"
                Expect.isFalse z.requires_grad "no graph kept"
                let direct = (use _ = torch.no_grad() in m.Features(imgs, meanPool))
                Expect.isTrue (z.allclose(direct, rtol = 1e-4, atol = 1e-5)) (sprintf "equals a direct forward (meanPool %b)" meanPool)
            let cls = Probe.extract (fun x -> m.Features(x, false)) torch.CPU 3 imgs
            let mean = Probe.extract (fun x -> m.Features(x, true)) torch.CPU 3 imgs
            Expect.isFalse (cls.allclose(mean)) "cls and mean-pooled features differ"
        }
        testList "bad arguments are refused before libtorch sees them" [
            // 40 samples of 8 features, labels 0..9 (each four times)
            let data () =
                use g = gen 35
                torch.randn([| 40L; 8L |], generator = g), torch.tensor(Array.init 40 (fun i -> int64 (i % 10)))
            test "labels outside [0, classes): the label found and the classes given" {
                use _ = torch.NewDisposeScope()
                let x, y = data ()
                let e = expectArg "trainY" "labels in [0, 5), for classes = 5" (fun () -> Probe.linear options 5 x y x y)
                Expect.stringContains e.Message "label 9" "says the label it found"
                expectArg "trainY" "labels in [0, 5), for classes = 5" (fun () -> Probe.knn 3 0.07 5 x y x y) |> ignore
                let negative = y - 1L
                let e = expectArg "trainY" "labels in [0, 10)" (fun () -> Probe.knn 3 0.07 10 x negative x y)
                Expect.stringContains e.Message "label -1" "says the negative label"
                expectArg "testY" "labels in [0, 10)" (fun () -> Probe.linear options 10 x y x negative) |> ignore
                expectArg "testY" "labels in [0, 10)" (fun () -> Probe.knn 3 0.07 10 x y x negative) |> ignore
            }
            test "labels: one int64 label per row of the features" {
                use _ = torch.NewDisposeScope()
                let x, y = data ()
                let e = expectArg "trainY" "[40]" (fun () -> Probe.linear options 10 x (y.narrow(0L, 0L, 30L)) x y)
                Expect.stringContains e.Message "[30]" "says the shape it saw"
                expectArg "testY" "[40]" (fun () -> Probe.knn 3 0.07 10 x y x (y.narrow(0L, 0L, 39L))) |> ignore
                expectArg "trainY" "int64" (fun () -> Probe.linear options 10 x (y.to_type(ScalarType.Float32)) x y) |> ignore
                expectArg "trainY" "int64" (fun () -> Probe.knn 3 0.07 10 x (y.to_type(ScalarType.Int32)) x y) |> ignore
            }
            test "train and test features of different widths" {
                use _ = torch.NewDisposeScope()
                let x, y = data ()
                let wide = torch.randn(40L, 9L)
                expectArg "testX" "width D = 8" (fun () -> Probe.linear options 10 x y wide y) |> ignore
                expectArg "testX" "width D = 8" (fun () -> Probe.knn 3 0.07 10 x y wide y) |> ignore
            }
            test "k-NN: k in [1, N] and a positive temperature" {
                use _ = torch.NewDisposeScope()
                let x, y = data ()
                let e = expectArg "k" "at most the number of training samples N = 40" (fun () -> Probe.knn 41 0.07 10 x y x y)
                Expect.stringContains e.Message "41" "says the k it saw"
                expectArg "k" "a positive integer" (fun () -> Probe.knn 0 0.07 10 x y x y) |> ignore
                for t in [ 0.0; -0.07; nan ] do
                    expectArg "temperature" "a positive number" (fun () -> Probe.knn 3 t 10 x y x y) |> ignore
                expectArg "classes" "a positive integer" (fun () -> Probe.knn 3 0.07 0 x y x y) |> ignore
                Expect.isGreaterThan (Probe.knn 40 0.07 10 x y x y) 0.0 "k = N is allowed"
            }
            test "extract: the batch size and the features' [B, D]" {
                use _ = torch.NewDisposeScope()
                let x, _ = data ()
                expectArg "batchSize" "a positive integer" (fun () -> Probe.extract id torch.CPU 0 x) |> ignore
                expectArg "features" "[B, D] with B = 16" (fun () -> Probe.extract (fun (b: Tensor) -> b.unsqueeze(0L)) torch.CPU 16 x) |> ignore
                expectArg "features" "[B, D] with B = 16" (fun () -> Probe.extract (fun (b: Tensor) -> b.narrow(0L, 0L, 1L)) torch.CPU 16 x) |> ignore
            }
        ]
    ]
