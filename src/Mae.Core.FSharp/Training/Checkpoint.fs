/// Checkpoints: one zip file holding the model's weights, the optimizer's state, the step, the
/// masking generator's state and the configuration. Written to a temporary file first and renamed
/// over the target, so a crash never leaves a half-written checkpoint in place of a good one.
module Mae.Checkpoint

open System
open System.IO
open System.IO.Compression
open System.Text.Json
open System.Text.Json.Nodes
open TorchSharp

// ---- configuration <-> JSON (DUs spelled out; System.Text.Json does not know them) ----

let configToJson (c: MaeConfig) : JsonObject =
    let (h, w), (ph, pw) = c.ImageSize, c.PatchSize
    let masking, ratio =
        match c.Masking with
        | RandomPerSample r -> "random", r
        | RandomShared r -> "random-shared", r
        | BlockWise r -> "block", r
    JsonObject(
        [ "imageHeight", JsonValue.Create h :> JsonNode; "imageWidth", JsonValue.Create w
          "patchHeight", JsonValue.Create ph; "patchWidth", JsonValue.Create pw
          "channels", JsonValue.Create c.Channels
          "embedDim", JsonValue.Create c.EmbedDim; "depth", JsonValue.Create c.Depth; "heads", JsonValue.Create c.Heads
          "decoderEmbedDim", JsonValue.Create c.DecoderEmbedDim; "decoderDepth", JsonValue.Create c.DecoderDepth
          "decoderHeads", JsonValue.Create c.DecoderHeads; "mlpRatio", JsonValue.Create c.MlpRatio
          "masking", JsonValue.Create masking; "maskRatio", JsonValue.Create ratio
          "normPixLoss", JsonValue.Create c.NormPixLoss; "clsToken", JsonValue.Create c.ClsToken
          "learnedPosEmbed", JsonValue.Create c.LearnedPosEmbed
          "attention", JsonValue.Create(match c.Attention with AttentionKernel.Sdpa -> "sdpa" | AttentionKernel.Math -> "math") ]
        |> Seq.map (fun (k, v) -> Collections.Generic.KeyValuePair(k, v)))

let configOfJson (o: JsonNode) : MaeConfig =
    let i (k: string) = o.[k].GetValue<int>()
    let f (k: string) = o.[k].GetValue<float>()
    let b (k: string) = o.[k].GetValue<bool>()
    let s (k: string) = o.[k].GetValue<string>()
    let ratio = f "maskRatio"
    { ImageSize = i "imageHeight", i "imageWidth"
      PatchSize = i "patchHeight", i "patchWidth"
      Channels = i "channels"
      EmbedDim = i "embedDim"; Depth = i "depth"; Heads = i "heads"
      DecoderEmbedDim = i "decoderEmbedDim"; DecoderDepth = i "decoderDepth"; DecoderHeads = i "decoderHeads"
      MlpRatio = f "mlpRatio"
      Masking =
        (match s "masking" with
         | "random" -> RandomPerSample ratio
         | "random-shared" -> RandomShared ratio
         | "block" -> BlockWise ratio
         | other -> raise (InvalidDataException(sprintf "unknown masking \"%s\" in checkpoint" other)))
      NormPixLoss = b "normPixLoss"; ClsToken = b "clsToken"; LearnedPosEmbed = b "learnedPosEmbed"
      Attention =
        (match s "attention" with
         | "math" -> AttentionKernel.Math
         | "sdpa" -> AttentionKernel.Sdpa
         | other -> raise (InvalidDataException(sprintf "unknown attention \"%s\" in checkpoint" other))) }

// ---- atomic files ----

/// Writes a file through `write`, atomically: a temporary file beside the target, flushed, then
/// renamed over it. On failure the temporary file is removed and the old target is untouched.
let writeAtomically (path: string) (write: Stream -> unit) =
    let full = Path.GetFullPath path
    let dir = Path.GetDirectoryName full
    Directory.CreateDirectory dir |> ignore
    let tmp = Path.Combine(dir, sprintf ".%s.tmp-%s" (Path.GetFileName full) (Guid.NewGuid().ToString("N")))
    try
        do
            use f = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write)
            write f
            f.Flush(true)
        File.Move(tmp, full, true)
    with _ ->
        if File.Exists tmp then File.Delete tmp
        reraise ()

// ---- checkpoints ----

/// What a checkpoint holds besides the weights.
type Meta =
    { Config: MaeConfig
      /// Micro-batches done (the position in the data stream).
      Iteration: int
      /// Optimizer steps done.
      Step: int
      Epoch: int
      /// Anything else the writer wants to keep (e.g. the training options), as JSON.
      Extra: JsonObject }

let private kind = "mae-image-checkpoint/1"

let private entry (zip: ZipArchive) (name: string) (write: Stream -> unit) =
    use s = zip.CreateEntry(name, CompressionLevel.Fastest).Open()
    write s

/// Saves model (+ optimizer and generator state when given) and meta to `path` atomically.
let save (path: string) (model: MaskedAutoencoderViT) (optimizer: Optim.AdamW option) (generator: Generator option) (meta: Meta) =
    writeAtomically path (fun f ->
        use zip = new ZipArchive(f, ZipArchiveMode.Create, true)
        entry zip "model.bin" (fun s -> model.save(s) |> ignore)
        match optimizer with
        | Some o -> entry zip "optimizer.bin" (fun s -> use w = new BinaryWriter(s) in o.Save(w))
        | None -> ()
        match generator with
        | Some g -> entry zip "generator.bin" (fun s -> let st = g.get_state() in s.Write(st.data<byte>().ToArray()))
        | None -> ()
        let json =
            JsonObject(
                [ "kind", JsonValue.Create kind :> JsonNode
                  "config", configToJson meta.Config :> JsonNode
                  "iteration", JsonValue.Create meta.Iteration
                  "step", JsonValue.Create meta.Step
                  "epoch", JsonValue.Create meta.Epoch
                  "extra", (meta.Extra.DeepClone()) ]
                |> Seq.map (fun (k, v) -> Collections.Generic.KeyValuePair(k, v)))
        entry zip "meta.json" (fun s -> use w = new Utf8JsonWriter(s, JsonWriterOptions(Indented = true)) in json.WriteTo w))

let private openZip (path: string) =
    if not (File.Exists path) then
        raise (FileNotFoundException(sprintf "checkpoint %s does not exist." path, path))
    try ZipFile.OpenRead path
    with e -> raise (InvalidDataException(sprintf "%s is not a Mae checkpoint (%s)." path e.Message, e))

/// Reads a checkpoint's meta without loading weights.
let readMeta (path: string) : Meta =
    use zip = openZip path
    let e = zip.GetEntry "meta.json"
    if isNull e then raise (InvalidDataException(sprintf "%s has no meta.json: not a Mae checkpoint." path))
    use s = e.Open()
    let node = JsonNode.Parse s
    let k = node.["kind"]
    if isNull k || k.GetValue<string>() <> kind then
        raise (InvalidDataException(sprintf "%s is not a %s checkpoint." path kind))
    { Config = configOfJson node.["config"]
      Iteration = node.["iteration"].GetValue<int>()
      Step = node.["step"].GetValue<int>()
      Epoch = node.["epoch"].GetValue<int>()
      Extra = (match node.["extra"] with :? JsonObject as o -> o.DeepClone() :?> JsonObject | _ -> JsonObject()) }

let private copyEntry (zip: ZipArchive) (name: string) =
    let e = zip.GetEntry name
    if isNull e then None
    else
        let ms = new MemoryStream()
        (use s = e.Open() in s.CopyTo ms)
        ms.Position <- 0L
        Some ms

/// Loads weights (and optimizer / generator state when given and present) into existing objects.
let loadInto (path: string) (model: MaskedAutoencoderViT) (optimizer: Optim.AdamW option) (generator: Generator option) =
    use zip = openZip path
    match copyEntry zip "model.bin" with
    | Some ms -> (use ms = ms in model.load(ms, strict = true) |> ignore)
    | None -> raise (InvalidDataException(sprintf "%s holds no model weights." path))
    match optimizer, copyEntry zip "optimizer.bin" with
    | Some o, Some ms -> (use ms = ms in use r = new BinaryReader(ms) in o.Load(r))
    | _, Some ms -> ms.Dispose()
    | _ -> ()
    match generator, copyEntry zip "generator.bin" with
    | Some g, Some ms -> (use ms = ms in g.set_state(torch.tensor(ms.ToArray())))
    | _, Some ms -> ms.Dispose()
    | _ -> ()

/// Builds the model a checkpoint describes and loads its weights.
let loadModel (path: string) (device: Device) : MaskedAutoencoderViT * Meta =
    let meta = readMeta path
    let model = new MaskedAutoencoderViT(meta.Config)
    loadInto path model None None
    if not (isNull device) then model.``to``(device) |> ignore
    model, meta

/// Writes the encoder's weights alone (no decoder, no mask token) in TorchSharp's format.
let exportEncoder (path: string) (model: MaskedAutoencoderViT) =
    let decoderNames =
        model.named_parameters()
        |> Seq.map (fun struct (n, _) -> n)
        |> Seq.filter (fun n -> not (Array.contains n model.EncoderParameterNames))
        |> Array.ofSeq
    // Module.save(Stream) closes the stream it is given; writeAtomically still has to flush it.
    writeAtomically path (fun s ->
        use w = new BinaryWriter(s, Text.Encoding.UTF8, true)
        model.save(w, skip = decoderNames) |> ignore)
