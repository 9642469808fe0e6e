/// A configuration as JSON (checkpoints, `mae info`) and the differences between two of them.
/// Discriminated unions are spelled out: System.Text.Json does not know them.
module Mae.ConfigJson

open System
open System.IO
open System.Text.Json.Nodes

let private obj (pairs: (string * JsonNode) list) =
    JsonObject(pairs |> Seq.map (fun (k, v) -> Collections.Generic.KeyValuePair(k, v)))

let private value (x: 'a) = JsonValue.Create x :> JsonNode

/// The input part: { "imageHeight", "imageWidth", "patchHeight", "patchWidth", "channels" } for images.
let inputToJson (m: Modality) : JsonObject =
    match m with
    | Image i ->
        let (h, w), (ph, pw) = i.ImageSize, i.PatchSize
        obj [ "imageHeight", value h; "imageWidth", value w; "patchHeight", value ph; "patchWidth", value pw; "channels", value i.Channels ]
    | Video v ->
        let (h, w), (ph, pw) = v.FrameSize, v.PatchSize
        obj [ "frames", value v.Frames; "frameHeight", value h; "frameWidth", value w; "tubeletSize", value v.TubeletSize
              "patchHeight", value ph; "patchWidth", value pw; "channels", value v.Channels; "positions", value v.Positions.Name ]
    | TimeSeries s ->
        obj [ "channels", value s.Channels; "length", value s.Length; "patchLength", value s.PatchLength; "patchStride", value s.PatchStride
              "channelIndependent", value s.ChannelIndependent; "revin", value s.RevIN; "loss", value s.Loss.Name ]

/// The whole configuration: "modality", "input" and the model's settings.
let toJson (c: MaeConfig) : JsonObject =
    let masking =
        [ yield "masking", value c.Masking.Name
          match c.Masking with
          | TimeFrequency (t, f) -> yield! [ "timeRatio", value t; "freqRatio", value f ]
          | _ -> yield "maskRatio", value c.MaskRatio ]
    obj (
        [ "modality", value c.Modality
          "input", inputToJson c.Input :> JsonNode
          "embedDim", value c.EmbedDim; "depth", value c.Depth; "heads", value c.Heads
          "decoderEmbedDim", value c.DecoderEmbedDim; "decoderDepth", value c.DecoderDepth
          "decoderHeads", value c.DecoderHeads; "mlpRatio", value c.MlpRatio ]
        @ masking
        @ [ "normPixLoss", value c.NormPixLoss; "clsToken", value c.ClsToken
            "learnedPosEmbed", value c.LearnedPosEmbed
            "attention", value (match c.Attention with AttentionKernel.Sdpa -> "sdpa" | AttentionKernel.Math -> "math")
            "encoderInput", value (match c.EncoderInput with VisibleOnly -> "visible" | AllWithMaskToken -> "mask-tokens") ])

let private bad (what: string) = raise (InvalidDataException what)

let private field (o: JsonNode) (k: string) : JsonNode =
    match o.[k] with
    | null -> bad (sprintf "the configuration has no \"%s\"" k)
    | v -> v

let private imageOf (o: JsonNode) =
    let i (k: string) = (field o k).GetValue<int>()
    Image { ImageSize = i "imageHeight", i "imageWidth"; PatchSize = i "patchHeight", i "patchWidth"; Channels = i "channels" }

let private videoOf (o: JsonNode) =
    let i (k: string) = (field o k).GetValue<int>()
    let positions =
        match (field o "positions").GetValue<string>() with
        | "sinusoid" -> Sinusoid
        | "sincos3d" -> SinCos3d
        | other -> bad (sprintf "unknown video positions \"%s\"" other)
    Video
        { Frames = i "frames"; FrameSize = i "frameHeight", i "frameWidth"; TubeletSize = i "tubeletSize"
          PatchSize = i "patchHeight", i "patchWidth"; Channels = i "channels"; Positions = positions }

let private seriesOf (o: JsonNode) =
    let i (k: string) = (field o k).GetValue<int>()
    let b (k: string) = (field o k).GetValue<bool>()
    let loss =
        match (field o "loss").GetValue<string>() with
        | "mse" -> Mse
        | "l1" -> L1
        | other -> bad (sprintf "unknown series loss \"%s\"" other)
    TimeSeries
        { Channels = i "channels"; Length = i "length"; PatchLength = i "patchLength"; PatchStride = i "patchStride"
          ChannelIndependent = b "channelIndependent"; RevIN = b "revin"; Loss = loss }

/// Reads what `toJson` wrote; also the flat image configuration of the first checkpoints
/// (kind mae-image-checkpoint/1: image fields at the top, no "modality"). InvalidDataException
/// for an unknown modality, masking or attention.
let ofJson (o: JsonNode) : MaeConfig =
    let i (k: string) = (field o k).GetValue<int>()
    let f (k: string) = (field o k).GetValue<float>()
    let b (k: string) = (field o k).GetValue<bool>()
    let s (k: string) = (field o k).GetValue<string>()
    let input =
        match o.["modality"] with
        | null -> imageOf o
        | m ->
            match m.GetValue<string>() with
            | "image" -> imageOf (field o "input")
            | "video" -> videoOf (field o "input")
            | "timeseries" -> seriesOf (field o "input")
            | other -> bad (sprintf "unknown modality \"%s\" (this Mae knows %s)" other (String.Join(", ", Modality.Names)))
    let masking =
        match s "masking" with
        | "time-frequency" -> TimeFrequency(f "timeRatio", f "freqRatio")
        | name when Array.contains name MaskingStrategy.names -> MaskingStrategy.ofName name (f "maskRatio")
        | other -> bad (sprintf "unknown masking \"%s\"" other)
    { Input = input
      EmbedDim = i "embedDim"; Depth = i "depth"; Heads = i "heads"
      DecoderEmbedDim = i "decoderEmbedDim"; DecoderDepth = i "decoderDepth"; DecoderHeads = i "decoderHeads"
      MlpRatio = f "mlpRatio"
      Masking = masking
      NormPixLoss = b "normPixLoss"; ClsToken = b "clsToken"; LearnedPosEmbed = b "learnedPosEmbed"
      Attention =
        (match s "attention" with
         | "math" -> AttentionKernel.Math
         | "sdpa" -> AttentionKernel.Sdpa
         | other -> bad (sprintf "unknown attention \"%s\"" other))
      EncoderInput =
        (match o.["encoderInput"] with
         | null -> VisibleOnly
         | v ->
             match v.GetValue<string>() with
             | "visible" -> VisibleOnly
             | "mask-tokens" -> AllWithMaskToken
             | other -> bad (sprintf "unknown encoderInput \"%s\"" other)) }

/// The settings in which two configurations differ: (path, value in `a`, value in `b`), paths
/// like "depth" or "input.imageHeight"; empty when they are equal.
let differences (a: MaeConfig) (b: MaeConfig) : (string * string * string)[] =
    let rec flat (prefix: string) (n: JsonNode) : (string * string) list =
        match n with
        | :? JsonObject as o -> [ for kv in o do yield! flat (if prefix = "" then kv.Key else prefix + "." + kv.Key) kv.Value ]
        | v -> [ prefix, (if isNull v then "null" else v.ToJsonString()) ]
    let fa, fb = Map.ofList (flat "" (toJson a)), Map.ofList (flat "" (toJson b))
    [| for k in Set.union (set fa.Keys) (set fb.Keys) do
           let va = fa.TryFind k |> Option.defaultValue "-"
           let vb = fb.TryFind k |> Option.defaultValue "-"
           if va <> vb then yield k, va, vb |]
