/// The batch loader: each epoch's order is a permutation, batches depend on (seed, epoch) alone,
/// prefetching and the number of workers change nothing, and resuming at iteration k gives what
/// an uninterrupted run sees from k on.
module Mae.Tests.Properties.DataProps

open System
open Expecto
open FsCheck.FSharp
open TorchSharp
open Mae
open Mae.Data
open Mae.Tests.Properties.Generators

type LoaderCase =
    { Count: int
      BatchSize: int
      DropLast: bool
      Shuffle: bool
      Seed: int64
      Epoch: int
      Workers: int
      Prefetch: int }

let loaderCases =
    gen {
        let! count = Gen.choose (1, 40)
        let! dropLast = Gen.elements [ true; false ]
        let! batch = Gen.choose (1, (if dropLast then count else count + 5))
        let! shuffle = Gen.frequency [ 3, Gen.constant true; 1, Gen.constant false ]
        let! seed = seeds
        let! epoch = Gen.choose (0, 1000)
        let! workers = Gen.choose (1, 4)
        let! prefetch = Gen.choose (1, 4)
        return { Count = count; BatchSize = batch; DropLast = dropLast; Shuffle = shuffle; Seed = seed; Epoch = epoch; Workers = workers; Prefetch = prefetch }
    }

/// n samples [1, 6, 6] of seeded noise whose label is their index, so a batch's labels say which
/// samples it holds.
let private dataset (n: int) =
    let x = randn 11L [| int64 n; 1L; 6L; 6L |]
    InMemoryDataset(x, torch.arange(int64 n, dtype = ScalarType.Int64)) :> IDataset

/// A random crop to 4 x 4 with a flip: the output depends on each sample's generator.
let private augment = Transforms.randomResizedCrop (4, 4) (0.3, 1.0) Transforms.defaultRatio

let private loader (c: LoaderCase) (workers: int) =
    BatchLoader(dataset c.Count,
                { BatchSize = c.BatchSize; Shuffle = c.Shuffle; DropLast = c.DropLast; Seed = c.Seed; Workers = workers
                  Prefetch = c.Prefetch; OnBadSample = OnBadSample.Stop; Transform = augment })

/// The batches of an epoch from `start` on, copied out: iteration, labels, input values.
let private batches (l: BatchLoader) (epoch: int) (start: int) =
    [ for b in l.Epoch(epoch, start, Threading.CancellationToken.None) do
          use b = b
          Expect.equal b.Inputs.dtype ScalarType.Float32 "float32 inputs"
          Expect.equal (b.Labels.data<int64>().ToArray()) (b.Indices |> Array.map int64) "labels = indices here"
          yield b.Iteration, b.Labels.data<int64>().ToArray(), b.Inputs.shape, b.Inputs.data<float32>().ToArray() ]

let orderIsAPermutation (c: LoaderCase) =
    let order = Loader.epochOrder c.Seed c.Epoch c.Count
    Expect.equal (Array.sort order) [| 0 .. c.Count - 1 |] "epochOrder is a permutation of 0..N-1"
    let l = loader c 0
    let seen = batches l c.Epoch 0 |> List.collect (fun (_, ys, _, _) -> List.ofArray ys)
    let expectedOrder = if c.Shuffle then order else [| 0 .. c.Count - 1 |]
    let full = (c.Count / c.BatchSize) * c.BatchSize
    let expected = if c.DropLast then expectedOrder.[.. full - 1] else expectedOrder
    Expect.equal (Array.ofList seen |> Array.map int) expected "the batches walk the epoch's order, each sample once"
    Expect.equal l.IterationsPerEpoch (if c.DropLast then c.Count / c.BatchSize else (c.Count + c.BatchSize - 1) / c.BatchSize) "iterations"
    for (it, ys, shape, _) in batches l c.Epoch 0 do
        let size = if it = l.IterationsPerEpoch - 1 && not c.DropLast then c.Count - it * c.BatchSize else c.BatchSize
        Expect.equal ys.Length size "B samples (a kept last batch holds the rest)"
        Expect.equal shape [| int64 size; 1L; 4L; 4L |] "[B, C, H, W]"

let deterministicForSeedAndEpoch (c: LoaderCase) =
    let a = batches (loader c 0) c.Epoch 0
    let b = batches (loader c 0) c.Epoch 0
    Expect.equal a b "two loaders, same (seed, epoch): the same batches"
    if c.Shuffle && c.Count >= 8 then
        let other = batches (loader c 0) (c.Epoch + 1) 0
        Expect.notEqual (List.map (fun (_, ys, _, _) -> ys) other) (List.map (fun (_, ys, _, _) -> ys) a) "another epoch, another order"

let prefetchChangesNothing (c: LoaderCase) =
    let sync = batches (loader c 0) c.Epoch 0
    Expect.equal (batches (loader c c.Workers) c.Epoch 0) sync (sprintf "%d workers, %d ahead = no prefetch" c.Workers c.Prefetch)
    Expect.equal (batches (loader c 1) c.Epoch 0) sync "one worker = no prefetch"

let resumeGivesTheRest (c: LoaderCase) =
    let l = loader c 0
    let all = batches l c.Epoch 0
    for k in [ 0; l.IterationsPerEpoch / 2; l.IterationsPerEpoch - 1; l.IterationsPerEpoch ] |> List.distinct |> List.filter (fun k -> k >= 0) do
        Expect.equal (batches (loader c c.Workers) c.Epoch k) (List.skip k all) (sprintf "resumed at iteration %d (with workers)" k)
        Expect.equal (batches l c.Epoch k) (List.skip k all) (sprintf "resumed at iteration %d" k)

let tests =
    testList "data loader" [
        propertyN 30 "each epoch's order is a permutation; batches walk it" loaderCases orderIsAPermutation
        propertyN 20 "batches are a function of (seed, epoch)" loaderCases deterministicForSeedAndEpoch
        propertyN 20 "prefetch and worker count change no batch" loaderCases prefetchChangesNothing
        propertyN 20 "resuming at iteration k gives the uninterrupted run's batches from k on" loaderCases resumeGivesTheRest
    ]
