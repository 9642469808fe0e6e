/// Video files as clips: decoded by ffmpeg (Debian's, through FFMpegCore), frames sampled at a
/// stride, resized, and read as [C, T, H, W] floats in [0, 1]; and folders of them in class
/// sub-folders, laid out as image folders are (ImageFolder.openSplitsOf).
namespace Mae.Data

open System
open System.IO
open FFMpegCore
open FFMpegCore.Pipes
open TorchSharp
open Mae

/// How a clip is cut from a video file.
type VideoSampling =
    { /// Frames T per clip.
      Frames: int
      /// Step between sampled frames (VideoMAE: 4 on Kinetics-400, 2 on Something-Something v2).
      Stride: int
      /// Frame height and width in pixels after resizing.
      FrameSize: int * int }

module VideoFile =

    /// The file name endings read as video (compared ignoring case).
    let extensions = [| ".mp4"; ".webm"; ".avi"; ".mkv"; ".mov" |]

    /// The first line of ffmpeg's complaint, for messages.
    let private firstLine (e: exn) =
        let text = if isNull e.Message then e.GetType().Name else e.Message
        let lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
        lines |> Array.tryFindBack (fun l -> l.Length > 0) |> Option.defaultValue text

    let private failOn (path: string) (what: string) (e: exn) =
        match e with
        | :? ComponentModel.Win32Exception ->
            raise (InvalidOperationException("ffmpeg is not installed (or not on PATH): video files are decoded by ffmpeg. On Debian: apt-get install --no-install-recommends ffmpeg (./build.sh setup does it).", e))
        | _ -> raise (BadSample.error path (sprintf "%s: %s" what (firstLine e)) e)

    /// The channels of a video file: 1 for grey pixel formats, 3 otherwise (colour is read as RGB).
    /// InvalidDataException naming the file when ffprobe cannot read it or it has no video stream.
    let channels (path: string) =
        let info = try FFProbe.Analyse path with e -> failOn path "ffprobe could not read it as a video" e
        match info.PrimaryVideoStream with
        | null -> raise (BadSample.error path "it holds no video stream" null)
        | v -> if not (isNull v.PixelFormat) && v.PixelFormat.StartsWith "gray" then 1 else 3

    /// Decodes every frame of `path`, resized to cover (h, w) and centre-cropped to it (the short
    /// side scaled, as VideoMAE's loader does), as bytes [F, H, W, C] with C = 1 (grey) or 3 (RGB):
    /// (bytes, F). InvalidDataException naming the file when ffmpeg cannot decode it or it holds
    /// no frame.
    let decode (path: string) (h: int, w: int) (channels: int) : byte[] * int =
        if channels <> 1 && channels <> 3 then Guard.fail "channels" channels "1 (grey) or 3 (RGB)"
        Guard.positive "frame height" h
        Guard.positive "frame width" w
        if not (File.Exists path) then raise (FileNotFoundException(sprintf "video file %s does not exist." path, path))
        use sink = new MemoryStream()
        let filter = sprintf "scale=%d:%d:force_original_aspect_ratio=increase,crop=%d:%d" w h w h
        let pixelFormat = if channels = 1 then "gray" else "rgb24"
        try
            FFMpegArguments
                .FromFileInput(path)
                .OutputToPipe(
                    StreamPipeSink(sink),
                    fun o -> o.ForceFormat("rawvideo").WithCustomArgument(sprintf "-an -pix_fmt %s -vf %s" pixelFormat filter) |> ignore
                )
                .ProcessSynchronously(true)
            |> ignore
        with e -> failOn path "ffmpeg could not decode it" e
        let bytes = sink.ToArray()
        let frameBytes = h * w * channels
        if bytes.Length < frameBytes then raise (BadSample.error path "ffmpeg decoded no video frame" null)
        bytes, bytes.Length / frameBytes

    /// The frame indices of a clip of `frames` frames taken every `stride` frames from a video of
    /// `count` frames: centred in the video, the last frame repeated when the video is shorter
    /// than the span (VideoMAE's loaders clamp the indices the same way).
    let indices (count: int) (frames: int) (stride: int) =
        Guard.positive "count" count
        let span = (frames - 1) * stride + 1
        let start = max 0 ((count - span) / 2)
        Array.init frames (fun k -> min (start + k * stride) (count - 1))

    /// A clip of `path`: [C, T, H, W] float32 in [0, 1], T frames every `Stride` frames from the
    /// middle of the video, each resized to `FrameSize`. Errors as `decode`.
    let read (sampling: VideoSampling) (path: string) (channels: int) : Tensor =
        Guard.positive "Frames" sampling.Frames
        Guard.positive "Stride" sampling.Stride
        let h, w = sampling.FrameSize
        let bytes, count = decode path (h, w) channels
        let frameBytes = h * w * channels
        let picked = indices count sampling.Frames sampling.Stride
        let clip: byte[] = Array.zeroCreate (picked.Length * frameBytes)
        picked |> Array.iteri (fun k f -> Array.blit bytes (f * frameBytes) clip (k * frameBytes) frameBytes)
        use thwc = torch.tensor(clip).reshape(int64 picked.Length, int64 h, int64 w, int64 channels)
        use cthw = thwc.permute(3L, 0L, 1L, 2L)
        use contiguous = cthw.contiguous()
        contiguous.to_type(ScalarType.Float32).div_(255.0.ToScalar())

    /// The file kind of video files cut as `sampling` says, for ImageFolder.openSplitsOf.
    let kind (sampling: VideoSampling) : FileKind =
        { Name = "video"; Extensions = extensions; Channels = channels; Read = read sampling }

module VideoFolder =

    /// The splits of a folder of video files in class folders (DIR/CLASS/*.mp4|webm|avi|mkv|mov,
    /// or DIR/train + DIR/val), as `ImageFolder.openSplitsOf` lays them out, each file read as a
    /// clip by `VideoFile.read sampling` with `channels` (1 grey, 3 RGB, 0 = the first file's).
    let openSplits (folder: string) (sampling: VideoSampling) (valFraction: float) (seed: int64) (channels: int) =
        ImageFolder.openSplitsOf (VideoFile.kind sampling) folder valFraction seed channels
