/// Subsets of a dataset for few-label tasks: K labelled samples per class, drawn from a seed.
module Mae.Data.Subsets

open Mae

/// The number of samples of each class (index = label), from IDataset.Labels. ArgumentException
/// for a label outside the class names.
let classCounts (data: IDataset) : int[] =
    Guard.notNull "data" data
    let classes = data.ClassNames
    let counts = Array.zeroCreate<int> classes.Length
    for l in data.Labels() do
        if l < 0L || l >= int64 classes.Length then
            Guard.fail "data" (sprintf "a sample labelled %d" l) (sprintf "labels in [0, %d), one per class name" classes.Length)
        counts.[int l] <- counts.[int l] + 1
    counts

/// The label of the class with the fewest samples, and its count (the largest possible K).
let smallestClass (data: IDataset) : int * int =
    let counts = classCounts data
    if counts.Length = 0 then Guard.fail "data" "no class names" "at least one class"
    let c = Array.findIndex ((=) (Array.min counts)) counts
    c, counts.[c]

/// The indices of `k` samples of each class of `data` (sorted), drawn from `seed`: each class's
/// samples in the order of the seeded permutation Loader.epochOrder(seed, 0), the first k of each.
/// The same (data, k, seed) gives the same subset; a larger k keeps a smaller one's samples.
/// Labels come from IDataset.Labels (no input is read). ArgumentException naming
/// `labelsPerClass` when k < 1 or a class has fewer than k samples (naming the class and its count).
let perClass (k: int) (seed: int64) (data: IDataset) : int[] =
    if k < 1 then Guard.fail "labelsPerClass" k "a positive number of labelled samples per class"
    let c, count = smallestClass data
    if count < k then
        Guard.fail "labelsPerClass" k
            (sprintf "at most the %d sample(s) of class \"%s\" (label %d), the smallest class" count data.ClassNames.[c] c)
    let labels = data.Labels()
    let classes = data.ClassNames
    let taken = Array.zeroCreate<int> classes.Length
    [| for i in Loader.epochOrder seed 0 labels.Length do
           let c = int labels.[i]
           if taken.[c] < k then
               taken.[c] <- taken.[c] + 1
               yield i |]
    |> Array.sort

/// `perClass` as a dataset: the chosen samples of `data`, which must outlive it.
let labelsPerClass (k: int) (seed: int64) (data: IDataset) : IDataset =
    SubsetDataset(data, perClass k seed data) :> IDataset
