/// The dataset abstraction: samples read on demand by index, so that data larger than memory
/// (a folder of images) and data held in memory (IDX/MNIST tensors) look the same to the batch
/// loader (Loader.fs).
namespace Mae.Data

open System
open System.IO
open TorchSharp
open Mae

/// One sample as a dataset reads it, before any transform.
type Sample =
    { /// [C, H, W] float32 (image folders: pixel / 255 in [0, 1]). A new tensor: the caller
      /// disposes it (or lets its dispose scope do so) and may modify it.
      Input: Tensor
      /// The class index, 0 <= Label < ClassNames.Length.
      Label: int64 }

/// Samples read on demand by index. `Read` may be called from several threads at once (the
/// batch loader's workers), so implementations keep no mutable per-read state.
type IDataset =
    /// Number of samples, N.
    abstract Count: int
    /// Channels C of every sample's input.
    abstract Channels: int
    /// Class names in label order: label k is ClassNames[k].
    abstract ClassNames: string[]
    /// Reads sample `index` (0 <= index < Count). Raises ArgumentException for an index out of
    /// range and InvalidDataException (BadSample.error) for a sample that cannot be read (a file that is not an image,
    /// cannot be decoded, or has another channel count).
    abstract Read: index: int -> Sample
    /// Where sample `index` comes from, for messages: a file path, or "sample i of <what>".
    abstract Describe: index: int -> string
    /// The label of every sample, in index order, without reading any input (an image folder
    /// knows them from its class folders): what few-label subsets are drawn from.
    abstract Labels: unit -> int64[]

/// The error of a sample that cannot be read: an InvalidDataException whose message starts with
/// its source (a file path for image folders) and says what was wrong.
module BadSample =
    let error (source: string) (reason: string) (inner: exn) =
        InvalidDataException(sprintf "%s: %s" source reason, inner)

module internal InMemory =
    /// Sample `index` of inputs [N, C, ...] and labels [N]: a float32 copy (so that a transform
    /// working in place cannot change the stored data) and the label.
    let read (inputs: Tensor) (labels: Tensor) (index: int) =
        let n = int inputs.shape.[0]
        if index < 0 || index >= n then Guard.fail "index" index (sprintf "a sample index in [0, %d)" n)
        { Input = inputs.[int64 index].to_type(ScalarType.Float32, copy = true)
          Label = labels.[int64 index].item<int64> () }

    /// Labels [N] int64 as an array.
    let labels (labels: Tensor) : int64[] =
        use c = labels.cpu().contiguous()
        c.data<int64>().ToArray()

    /// The class names "0", "1", ..., up to the largest label (labelled digits such as MNIST).
    let numberedClasses (labels: Tensor) =
        let count =
            if labels.numel () = 0L then 0
            else
                use top = labels.max ()
                int (top.item<int64> ()) + 1
        Array.init count string

/// A dataset over tensors held in memory: inputs [N, C, ...] (images [N, C, H, W], series
/// [N, C, T], ...; any float dtype, read as float32) and labels [N] int64. The tensors stay owned
/// by the caller and must outlive the dataset.
type InMemoryDataset(inputs: Tensor, labels: Tensor, classNames: string[]) =
    do
        Guard.notNull "inputs" inputs
        if inputs.ndim < 2L then Guard.fail "inputs" (Guard.shapeOf inputs) "a tensor of rank 2 or more laid out as [N, C, ...]"
        Guard.rank "labels" 1 "[N]" labels
        if labels.shape.[0] <> inputs.shape.[0] then
            Guard.fail "labels" (Guard.shapeOf labels) (sprintf "one label per input ([%d])" inputs.shape.[0])
        if labels.dtype <> ScalarType.Int64 then Guard.fail "labels dtype" labels.dtype "Int64"
        Guard.notNull "classNames" classNames
    let n = int inputs.shape.[0]

    /// A dataset whose class names are the numbers "0" .. the largest label.
    new(inputs: Tensor, labels: Tensor) = InMemoryDataset(inputs, labels, InMemory.numberedClasses labels)

    member _.Inputs = inputs
    member _.Labels = labels

    interface IDataset with
        member _.Count = n
        member _.Channels = int inputs.shape.[1]
        member _.ClassNames = classNames
        member _.Read index = InMemory.read inputs labels index
        member _.Describe index = sprintf "sample %d of an in-memory dataset of %d" index n
        member _.Labels() = InMemory.labels labels

/// The samples `indices` of `parent`, in that order (sample i is parent's indices[i]); reads go to
/// the parent, which must outlive the subset.
type SubsetDataset(parent: IDataset, indices: int[]) =
    do
        Guard.notNull "parent" parent
        Guard.notNull "indices" indices
        match indices |> Array.tryFind (fun i -> i < 0 || i >= parent.Count) with
        | Some bad -> Guard.fail "indices" (sprintf "an array holding %d" bad) (sprintf "sample indices in [0, %d)" parent.Count)
        | None -> ()
    let indices = Array.copy indices
    /// The parent's index of each sample.
    member _.Indices = Array.copy indices
    member _.Parent = parent
    interface IDataset with
        member _.Count = indices.Length
        member _.Channels = parent.Channels
        member _.ClassNames = parent.ClassNames
        member _.Read index =
            if index < 0 || index >= indices.Length then Guard.fail "index" index (sprintf "a sample index in [0, %d)" indices.Length)
            parent.Read indices.[index]
        member _.Describe index = parent.Describe indices.[index]
        member _.Labels() =
            let all = parent.Labels()
            indices |> Array.map (fun i -> all.[i])
