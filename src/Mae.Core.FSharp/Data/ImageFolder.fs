/// Folders of images laid out as torchvision's ImageFolder (DIR/CLASS/*.png|jpg|jpeg), decoded on
/// demand with StbImageSharp (a managed port of stb_image: no native code), and the splits users
/// lay out: DIR/train + DIR/val (ImageNet's layout; DIR/test read like DIR/val), or one class
/// tree split by a seeded fraction.
namespace Mae.Data

open System
open System.IO
open TorchSharp
open StbImageSharp
open Mae

/// A read-only stream over a file's bytes that allows at most `budget` operations (calls plus
/// bytes read), then raises InvalidDataException. stb_image's managed port can loop forever on
/// some damaged JPEG headers (reading at the end of the data or seeking backwards); every one of
/// its parse loops goes through the stream, so the budget turns such a loop into an error.
type internal BoundedStream(bytes: byte[], budget: int64) =
    inherit Stream()
    let inner = new MemoryStream(bytes, false)
    let mutable spent = 0L
    let spend (n: int64) =
        spent <- spent + 1L + max 0L n
        if spent > budget then
            raise (InvalidDataException(sprintf "the decoder did not finish within %d stream operations (a damaged file)" budget))
    override _.CanRead = true
    override _.CanSeek = true
    override _.CanWrite = false
    override _.Length = inner.Length
    override _.Position
        with get () = inner.Position
        and set v =
            spend 0L
            inner.Position <- v
    override _.Flush() = ()
    override _.Read(buffer: byte[], offset: int, count: int) =
        let n = inner.Read(buffer, offset, count)
        spend (int64 n)
        n
    override _.ReadByte() =
        spend 1L
        inner.ReadByte()
    override _.Seek(offset: int64, origin: SeekOrigin) =
        spend 0L
        inner.Seek(offset, origin)
    override _.SetLength _ = raise (NotSupportedException())
    override _.Write(_, _, _) = raise (NotSupportedException())

/// Decoding one image file.
module ImageFile =

    /// Stream operations allowed to stb_image per decode: 32 per byte of the file plus 1 Mi
    /// (a sound file needs about 2 per byte: the header is read twice, the data once).
    let private budgetOf (bytes: byte[]) = 32L * int64 bytes.Length + 1048576L

    /// The file name endings read as images (compared ignoring case, as torchvision does).
    let extensions = [| ".png"; ".jpg"; ".jpeg" |]

    let isImage (path: string) =
        let name = Path.GetFileName path
        not (name.StartsWith ".") && extensions |> Array.exists (fun e -> name.EndsWith(e, StringComparison.OrdinalIgnoreCase))

    let private isPng (b: byte[]) =
        b.Length >= 8 && b.[0] = 0x89uy && b.[1] = 0x50uy && b.[2] = 0x4Euy && b.[3] = 0x47uy
        && b.[4] = 0x0Duy && b.[5] = 0x0Auy && b.[6] = 0x1Auy && b.[7] = 0x0Auy

    let private isJpeg (b: byte[]) = b.Length >= 3 && b.[0] = 0xFFuy && b.[1] = 0xD8uy && b.[2] = 0xFFuy

    /// Channels kept from stb's components: grey and grey+alpha -> 1, RGB and RGBA -> 3 (alpha dropped).
    let private keptChannels (c: ColorComponents) =
        match c with
        | ColorComponents.Grey | ColorComponents.GreyAlpha -> 1
        | _ -> 3

    let private crcTable =
        Array.init 256 (fun n ->
            let mutable c = uint32 n
            for _ in 1..8 do
                c <- if c &&& 1u <> 0u then 0xEDB88320u ^^^ (c >>> 1) else c >>> 1
            c)

    /// CRC-32 of PNG (ISO 3309) over bytes [offset, offset + count).
    let private crc32 (b: byte[]) (offset: int) (count: int) =
        let mutable c = 0xFFFFFFFFu
        for i in offset .. offset + count - 1 do
            c <- crcTable.[int ((c ^^^ uint32 b.[i]) &&& 0xFFu)] ^^^ (c >>> 8)
        c ^^^ 0xFFFFFFFFu

    let private bigEndian (b: byte[]) (o: int) =
        (uint32 b.[o] <<< 24) ||| (uint32 b.[o + 1] <<< 16) ||| (uint32 b.[o + 2] <<< 8) ||| uint32 b.[o + 3]

    /// What is wrong with a PNG's chunk structure, or null: every chunk inside the file with the
    /// CRC it states, ending with IEND. stb_image checks no CRC, so without this a damaged
    /// compressed stream could decode to wrong pixels without an error.
    let private pngDamage (b: byte[]) : string =
        let rec chunk (o: int) =
            if o + 12 > b.Length then "truncated (no IEND chunk)"
            else
                let length = bigEndian b o
                let kind = Text.Encoding.ASCII.GetString(b, o + 4, 4)
                if length > uint32 (b.Length - o - 12) then sprintf "truncated inside its %s chunk" kind
                else
                    let n = int length
                    if crc32 b (o + 4) (n + 4) <> bigEndian b (o + 8 + n) then sprintf "corrupt (CRC mismatch in its %s chunk)" kind
                    elif kind = "IEND" then null
                    else chunk (o + 12 + n)
        chunk 8

    let private bytesOf (path: string) =
        let bytes =
            try File.ReadAllBytes path
            with e -> raise (BadSample.error path ("could not be read: " + e.Message) e)
        if bytes.Length = 0 then raise (BadSample.error path ("is empty, not an image") null)
        if not (isPng bytes || isJpeg bytes) then
            let head = bytes |> Array.truncate 4 |> Array.map (sprintf "%02x") |> String.concat " "
            raise (BadSample.error path (sprintf "is not an image: neither PNG nor JPEG (starts with %s)" head) null)
        if isPng bytes then
            match pngDamage bytes with
            | null -> ()
            | damage -> raise (BadSample.error path ("could not be decoded: PNG " + damage) null)
        // a JPEG ends with the end-of-image marker FF D9 (possibly followed by other data); stb_image
        // decodes a truncated one without an error, filling the missing part
        elif not (Seq.exists (fun i -> bytes.[i] = 0xFFuy && bytes.[i + 1] = 0xD9uy) (seq { bytes.Length - 2 .. -1 .. 2 })) then
            raise (BadSample.error path "could not be decoded: JPEG truncated (no end-of-image marker)" null)
        bytes

    /// The most pixels an image may claim: PIL's decompression-bomb error threshold (2 x 89,478,485).
    let maxPixels = 178956970L

    let private header (path: string) (bytes: byte[]) =
        let info =
            try
                use s = new BoundedStream(bytes, budgetOf bytes)
                ImageInfo.FromStream s
            with e -> raise (BadSample.error path ("could not be decoded: " + e.Message) e)
        match Option.ofNullable info with
        | None -> raise (BadSample.error path "could not be decoded: header not understood" null)
        | Some i when int64 i.Width * int64 i.Height > maxPixels || i.Width <= 0 || i.Height <= 0 ->
            raise (BadSample.error path (sprintf "could not be decoded: the header claims %d x %d pixels (at most %d are read, PIL's decompression-bomb limit)" i.Width i.Height maxPixels) null)
        | Some i -> i

    /// The channels (1 or 3) the file decodes to, from its header; InvalidDataException naming the
    /// file if it cannot be read or is not a PNG/JPEG image with a header stb_image understands.
    let channels (path: string) = keptChannels (header path (bytesOf path)).ColorComponents

    /// Decodes the file to [C, H, W] float32, pixel / 255 in [0, 1], C = 1 for grey (+alpha) and
    /// 3 for RGB (+alpha); alpha is dropped, 16-bit PNGs are reduced to 8 bits by stb_image.
    /// `expectedChannels` > 0: a file with another channel count raises InvalidDataException naming
    /// the file, its channels and the expected. Any failure is an InvalidDataException whose
    /// message starts with the file's path and says what was wrong (not an image, could not be
    /// decoded, channel count). A new tensor: the caller disposes it. Safe to call from several
    /// threads; stb_image keeps its failure reason in one static field, so when two files fail
    /// at the same moment the reason given may be the other file's (the file named is right).
    let read (path: string) (expectedChannels: int) : Tensor =
        let bytes = bytesOf path
        let info = header path bytes
        let c = keptChannels info.ColorComponents
        if expectedChannels > 0 && c <> expectedChannels then
            raise (BadSample.error path (sprintf "has %d channel(s) (%O); the dataset's images have %d" c info.ColorComponents expectedChannels) null)
        let decoded =
            // stb_image reports failures as InvalidOperationException with its reason; a corrupt
            // stream can also surface as another managed exception of the port
            try
                use s = new BoundedStream(bytes, budgetOf bytes)
                ImageResult.FromStream(s, (if c = 1 then ColorComponents.Grey else ColorComponents.RedGreenBlue))
            with e -> raise (BadSample.error path ("could not be decoded: " + e.Message) e)
        let c = if decoded.Comp = ColorComponents.Grey then 1 else 3
        let h, w = decoded.Height, decoded.Width
        if h <= 0 || w <= 0 || isNull decoded.Data || decoded.Data.Length <> h * w * c then
            raise (BadSample.error path (sprintf "could not be decoded: %d x %d x %d image with %d bytes" h w c (if isNull decoded.Data then 0 else decoded.Data.Length)) null)
        use hwc = torch.tensor(decoded.Data).reshape(int64 h, int64 w, int64 c) // [H, W, C] bytes
        use p = hwc.permute(2L, 0L, 1L)
        use chw = p.contiguous() // [C, H, W] bytes
        chw.to_type(ScalarType.Float32).div_(255.0.ToScalar())

/// What a class-folder tree holds: the files it reads (by name ending), how many channels a file
/// has and how a file becomes a sample. Images (ImageFile) and video clips (VideoFile) are kinds.
type FileKind =
    { /// What a file is called in messages ("image", "video").
      Name: string
      /// The file name endings read (compared ignoring case).
      Extensions: string[]
      /// The channels of a file (InvalidDataException naming it when it cannot be read).
      Channels: string -> int
      /// A file -> its sample tensor with that many channels (InvalidDataException naming it).
      Read: string -> int -> Tensor }

    /// Whether `path` is a file of this kind (by its ending; hidden files left out).
    member k.Matches(path: string) =
        let name = Path.GetFileName path
        not (name.StartsWith ".") && k.Extensions |> Array.exists (fun e -> name.EndsWith(e, StringComparison.OrdinalIgnoreCase))

module FileKind =
    /// PNG/JPEG images, read by ImageFile as [C, H, W] in [0, 1].
    let image = { Name = "image"; Extensions = ImageFile.extensions; Channels = ImageFile.channels; Read = ImageFile.read }

/// The files of a class-folder tree, read on demand: sample i is Files[i] with label Labels[i].
/// Built by the ImageFolder functions; every file is read with `Channels` channels by its kind
/// (images by default; VideoFolder for clips).
type ImageFolderDataset internal (root: string, files: string[], labels: int[], classNames: string[], channels: int, kind: FileKind) =
    internal new(root, files, labels, classNames, channels) = ImageFolderDataset(root, files, labels, classNames, channels, FileKind.image)
    /// The folder the class folders are in.
    member _.Root = root
    /// The files, class by class (classes sorted by name), files sorted by relative path.
    member _.Files: string[] = Array.copy files
    /// The label of each file (index into ClassNames).
    member _.Labels: int[] = Array.copy labels
    /// What the files are and how they are read.
    member _.Kind = kind
    member _.Subset(indices: int[]) =
        ImageFolderDataset(root, indices |> Array.map (fun i -> files.[i]), indices |> Array.map (fun i -> labels.[i]), classNames, channels, kind)
    interface IDataset with
        member _.Count = files.Length
        member _.Channels = channels
        member _.ClassNames = Array.copy classNames
        member _.Read index =
            if index < 0 || index >= files.Length then Guard.fail "index" index (sprintf "a sample index in [0, %d)" files.Length)
            { Input = kind.Read files.[index] channels; Label = int64 labels.[index] }
        member _.Describe index = files.[index]
        member _.Labels() = labels |> Array.map int64

/// A training split and a validation split over the same classes.
type ImageFolderSplits =
    { Train: ImageFolderDataset
      /// DIR/val (or DIR/test), or the held-out fraction of a single class tree.
      Val: ImageFolderDataset
      /// "train/val", "train/test" or "fraction".
      Layout: string }

module ImageFolder =

    let private visibleDirs (folder: string) =
        Directory.GetDirectories folder
        |> Array.filter (fun d -> not ((Path.GetFileName d).StartsWith "."))
        |> Array.sortWith (fun a b -> String.CompareOrdinal(Path.GetFileName a, Path.GetFileName b))

    let private requireFolder (kind: FileKind) (folder: string) =
        Guard.notNull "folder" folder
        if not (Directory.Exists folder) then
            raise (DirectoryNotFoundException(sprintf "%s folder %s does not exist." kind.Name folder))

    let private classNamesOf (kind: FileKind) (folder: string) =
        requireFolder kind folder
        let names = visibleDirs folder |> Array.map Path.GetFileName
        if names.Length = 0 then
            raise (
                InvalidDataException(
                    sprintf "%s folder %s has no class folders (expected %s/CLASS/*%s)." kind.Name folder folder (String.Join("|", kind.Extensions))
                )
            )
        names

    /// The class names of DIR: its sub-folders sorted by name (ordinal, as Python's sorted),
    /// hidden ones (".name") left out. InvalidDataException naming DIR if it has none.
    let classNames (folder: string) = classNamesOf FileKind.image folder

    /// The files of one class folder (searched recursively, as torchvision), sorted.
    let private filesOf (kind: FileKind) (classDir: string) =
        let files =
            Directory.EnumerateFiles(classDir, "*", SearchOption.AllDirectories)
            |> Seq.filter kind.Matches
            |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b))
            |> Array.ofSeq
        if files.Length = 0 then
            raise (InvalidDataException(sprintf "class folder %s holds no %s (no %s file)." classDir kind.Name (String.concat ", " kind.Extensions)))
        files

    /// The channels of a set of files: those of the first whose header reads.
    let private firstChannels (kind: FileKind) (folder: string) (files: string[]) =
        let rec go i (firstError: exn) =
            if i = files.Length then
                raise (InvalidDataException(sprintf "no file in %s could be read as %s %s (first error: %s)" folder (if kind.Name.StartsWith "i" then "an" else "a") kind.Name firstError.Message, firstError))
            else
                try kind.Channels files.[i]
                with :? InvalidDataException as e -> go (i + 1) (if isNull firstError then e :> exn else firstError)
        go 0 null

    /// DIR/CLASS/* with the given class list (label = index in `classes`); a class folder of
    /// DIR not in `classes` is an error, a class of `classes` missing from DIR is allowed.
    let private openWith (kind: FileKind) (folder: string) (classes: string[]) (channels: int) =
        let present = classNamesOf kind folder
        match present |> Array.tryFind (fun c -> not (Array.contains c classes)) with
        | Some extra ->
            raise (InvalidDataException(sprintf "class folder %s is not among the training classes [%s]." (Path.Combine(folder, extra)) (String.concat ", " classes)))
        | None -> ()
        let perClass = present |> Array.map (fun c -> Array.IndexOf(classes, c), filesOf kind (Path.Combine(folder, c)))
        let files = perClass |> Array.collect snd
        let labels = perClass |> Array.collect (fun (k, fs) -> Array.create fs.Length k)
        let channels = if channels > 0 then channels else firstChannels kind folder files
        ImageFolderDataset(folder, files, labels, classes, channels, kind)

    let private openClassesOf (kind: FileKind) (folder: string) (channels: int) =
        if channels <> 0 && channels <> 1 && channels <> 3 then Guard.fail "channels" channels "0 (from the files), 1 or 3"
        openWith kind folder (classNamesOf kind folder) channels

    /// DIR/CLASS/*.png|jpg|jpeg as torchvision's ImageFolder: classes sorted by name, label =
    /// index. `channels`: 1 or 3, or 0 = those of the first image (grey -> 1, RGB -> 3, alpha
    /// dropped); a file with other channels fails when read, naming it. Raises
    /// DirectoryNotFoundException (no DIR) or InvalidDataException (no class folder, a class folder
    /// without images), naming the folder.
    let openClasses (folder: string) (channels: int) : ImageFolderDataset = openClassesOf FileKind.image folder channels

    /// The splits of DIR as users lay them out:
    /// - DIR/train/CLASS/* with DIR/val/CLASS/* (ImageNet's layout; DIR/test/ when there is no val/):
    ///   classes are train's, val uses train's labels and channels; `valFraction` is not used;
    /// - otherwise DIR/CLASS/*, split by a permutation drawn from `seed`: round(N * valFraction)
    ///   samples go to Val, the rest to Train (each kept in file order).
    /// `channels` as in `openClasses`; the files are of `kind` (`openSplits`: images). Errors as
    /// `openClasses`; ArgumentException when the fraction leaves a split empty.
    let openSplitsOf (kind: FileKind) (folder: string) (valFraction: float) (seed: int64) (channels: int) : ImageFolderSplits =
        requireFolder kind folder
        let train = Path.Combine(folder, "train")
        if Directory.Exists train then
            let trainSet = openClassesOf kind train channels
            let heldOut = [ "val"; "test" ] |> List.map (fun n -> n, Path.Combine(folder, n)) |> List.tryFind (snd >> Directory.Exists)
            match heldOut with
            | None -> raise (InvalidDataException(sprintf "%s folder %s has train/ but neither val/ nor test/." kind.Name folder))
            | Some (name, dir) ->
                let ds = trainSet :> IDataset
                { Train = trainSet; Val = openWith kind dir ds.ClassNames ds.Channels; Layout = "train/" + name }
        else
            if not (valFraction > 0.0 && valFraction < 1.0) then Guard.fail "valFraction" valFraction "a fraction in (0, 1) for a single class tree"
            let all = openClassesOf kind folder channels
            let n = all.Files.Length
            let nVal = int (Math.Round(float n * valFraction))
            if nVal = 0 || nVal = n then
                Guard.fail "valFraction" valFraction (sprintf "a fraction that leaves both splits non-empty for %d files" n)
            let order =
                use g = new torch.Generator(uint64 seed, torch.CPU)
                use p = torch.randperm(int64 n, generator = g)
                p.data<int64>().ToArray() |> Array.map int
            let valIdx = order.[.. nVal - 1] |> Array.sort
            let trainIdx = order.[nVal ..] |> Array.sort
            { Train = all.Subset trainIdx; Val = all.Subset valIdx; Layout = "fraction" }

    /// `openSplitsOf` for images (PNG/JPEG).
    let openSplits (folder: string) (valFraction: float) (seed: int64) (channels: int) : ImageFolderSplits =
        openSplitsOf FileKind.image folder valFraction seed channels
