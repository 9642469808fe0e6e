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
    ]
