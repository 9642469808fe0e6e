/// Checkpoints: one zip file holding the model's weights, the optimizer's state, the step, the
/// masking generator's state, the modality and the configuration. Written to a temporary file first and renamed
/// over the target, so a crash never leaves a half-written checkpoint in place of a good one.
module Mae.Checkpoint

open System
open System.IO
open System.IO.Compression
open System.Text.Json
open System.Text.Json.Nodes
open TorchSharp

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

/// The kind written now (configuration with "modality" and "input").
let private kind = "mae-checkpoint/2"

/// The kind of the first checkpoints (image models, flat image configuration); still read.
let private imageKind = "mae-image-checkpoint/1"

let private entry (zip: ZipArchive) (name: string) (write: Stream -> unit) =
    use s = zip.CreateEntry(name, CompressionLevel.Fastest).Open()
    write s

/// Saves model (+ optimizer and generator state when given) and meta to `path` atomically.
/// Never writes a non-finite weight or optimizer state: InvalidOperationException naming the
/// tensors instead, and the file already at `path` stays as it was.
let save (path: string) (model: MaskedAutoencoder) (optimizer: Optim.AdamW option) (generator: Generator option) (meta: Meta) =
    let bad =
        Weights.nonFinite (Weights.named model)
        |> Array.append (match optimizer with Some o -> Weights.nonFinite (o.State()) | None -> [||])
    if bad.Length > 0 then
        raise (InvalidOperationException(sprintf "not saved to %s: %d tensor(s) hold NaN or infinity (%s); the file there is unchanged." path bad.Length (String.Join(", ", bad))))
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
                  "modality", JsonValue.Create meta.Config.Modality
                  "config", ConfigJson.toJson meta.Config :> JsonNode
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
    if isNull k || (k.GetValue<string>() <> kind && k.GetValue<string>() <> imageKind) then
        raise (InvalidDataException(sprintf "%s is not a %s checkpoint." path kind))
    let config =
        try ConfigJson.ofJson node.["config"]
        with :? InvalidDataException as e -> raise (InvalidDataException(sprintf "%s: %s." path e.Message, e))
    { Config = config
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
/// The checkpoint's configuration must equal the model's (same modality, same shapes): otherwise
/// InvalidDataException naming every setting that differs with both values, nothing loaded.
let loadInto (path: string) (model: MaskedAutoencoder) (optimizer: Optim.AdamW option) (generator: Generator option) =
    let meta = readMeta path
    match ConfigJson.differences meta.Config model.Config with
    | [||] -> ()
    | diffs ->
        let text = diffs |> Array.map (fun (k, c, m) -> sprintf "%s: %s in the checkpoint, %s in the model" k c m)
        raise (InvalidDataException(sprintf "%s holds a model of another configuration: %s." path (String.Join("; ", text))))
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
let loadModel (path: string) (device: Device) : MaskedAutoencoder * Meta =
    let meta = readMeta path
    let model = new MaskedAutoencoder(meta.Config)
    loadInto path model None None
    if not (isNull device) then model.``to``(device) |> ignore
    model, meta

/// `loadModel` for a caller that reads one modality: InvalidDataException naming both modalities
/// when the checkpoint holds a model of another.
let loadModelOf (modality: string) (path: string) (device: Device) : MaskedAutoencoder * Meta =
    let meta = readMeta path
    if meta.Config.Modality <> modality then
        raise (InvalidDataException(sprintf "%s holds a model of modality %s; expected modality %s here." path meta.Config.Modality modality))
    loadModel path device

/// Writes the encoder's weights alone (no decoder, no mask token) in TorchSharp's format.
let exportEncoder (path: string) (model: MaskedAutoencoder) =
    let decoderNames =
        model.named_parameters()
        |> Seq.map (fun struct (n, _) -> n)
        |> Seq.filter (fun n -> not (Array.contains n model.EncoderParameterNames))
        |> Array.ofSeq
    // Module.save(Stream) closes the stream it is given; writeAtomically still has to flush it.
    writeAtomically path (fun s ->
        use w = new BinaryWriter(s, Text.Encoding.UTF8, true)
        model.save(w, skip = decoderNames) |> ignore)
