/// Weights from and to the PyTorch world: the reference MAE's `torch.save` checkpoints
/// (facebookresearch/mae: `{'model': state_dict}`, full or encoder-only, e.g.
/// mae_pretrain_vit_base.pth, mae_visualize_vit_large.pth) and HuggingFace ViTMAE safetensors
/// (facebook/vit-mae-base). Files are read and written by TorchSharp.PyBridge; this module maps the
/// names, infers a configuration from the shapes, and loads every tensor or names each one that
/// does not fit.
module Mae.PyTorch

open System
open System.Collections
open System.Collections.Generic
open System.IO
open System.Text.RegularExpressions
open TorchSharp

/// The two file formats.
type WeightsFormat =
    /// `torch.save` (zip + pickle), the reference's names, the state dict under "model".
    | TorchSave
    /// safetensors with HuggingFace ViTMAE's names.
    | Safetensors

/// The format of a file from its first bytes: a zip archive ("PK\003\004") is `torch.save`'s;
/// anything else is read as safetensors (8-byte header length, then a JSON header).
let formatOf (path: string) =
    Guard.notNull "path" path
    if not (File.Exists path) then raise (FileNotFoundException(sprintf "%s: no such file." path, path))
    use f = File.OpenRead path
    let head = Array.zeroCreate<byte> 4
    let n = f.Read(head, 0, 4)
    if n = 4 && head.[0] = 0x50uy && head.[1] = 0x4buy && head.[2] = 0x03uy && head.[3] = 0x04uy then TorchSave
    else Safetensors

/// The format a path's extension asks for when writing: .safetensors, or .pth / .pt / .bin.
let formatFor (path: string) =
    match Path.GetExtension(path).ToLowerInvariant() with
    | ".safetensors" -> Safetensors
    | ".pth" | ".pt" | ".bin" -> TorchSave
    | other -> Guard.fail "path" (sprintf "\"%s\" (extension \"%s\")" path other) "a file ending in .pth, .pt, .bin (torch.save) or .safetensors"

// ---- HuggingFace ViTMAE names <-> the reference's (transformers' convert_vit_mae_to_pytorch.py) ----

/// Inner names of one transformer layer: the reference's (timm Block) and HuggingFace's.
let private layerNames =
    [ "norm1.", "layernorm_before."
      "attn.proj.", "attention.output.dense."
      "norm2.", "layernorm_after."
      "mlp.fc1.", "intermediate.dense."
      "mlp.fc2.", "output.dense." ]

/// Top-level names: the reference's and HuggingFace ViTMAEForPreTraining's.
let private topNames =
    [ "cls_token", "vit.embeddings.cls_token"
      "pos_embed", "vit.embeddings.position_embeddings"
      "patch_embed.proj.weight", "vit.embeddings.patch_embeddings.projection.weight"
      "patch_embed.proj.bias", "vit.embeddings.patch_embeddings.projection.bias"
      "norm.weight", "vit.layernorm.weight"
      "norm.bias", "vit.layernorm.bias"
      "mask_token", "decoder.mask_token"
      "decoder_pos_embed", "decoder.decoder_pos_embed"
      "decoder_embed.weight", "decoder.decoder_embed.weight"
      "decoder_embed.bias", "decoder.decoder_embed.bias"
      "decoder_norm.weight", "decoder.decoder_norm.weight"
      "decoder_norm.bias", "decoder.decoder_norm.bias"
      "decoder_pred.weight", "decoder.decoder_pred.weight"
      "decoder_pred.bias", "decoder.decoder_pred.bias" ]

let private layerPattern = Regex(@"^(vit\.encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$")
let private blockPattern = Regex(@"^(blocks|decoder_blocks)\.(\d+)\.(.+)$")

/// Whether a state dict uses HuggingFace's ViTMAE names (ViTMAEForPreTraining's "vit.*" and
/// "decoder.*", or ViTMAEModel's "embeddings.*", "encoder.layer.*", "layernorm.*").
let isHuggingFace (names: string seq) =
    names |> Seq.exists (fun n -> n.StartsWith "vit." || n.StartsWith "embeddings." || n.StartsWith "encoder.layer." || n.StartsWith "decoder.decoder_")

/// HuggingFace ViTMAE names -> the reference's; query, key and value of each layer become one
/// qkv tensor (stacked in that order along dim 0, as timm's Attention reads it). A name that is
/// neither is kept, so that it is reported as extra when loaded.
let ofHuggingFace (sd: (string * Tensor)[]) : (string * Tensor)[] =
    let top = dict [ for r, h in topNames -> h, r ]
    let normalise (n: string) = if n.StartsWith "vit." || n.StartsWith "decoder." then n else "vit." + n // ViTMAEModel has no "vit." prefix
    let qkv = Dictionary<string, Dictionary<string, Tensor>>()
    let out = ResizeArray<string * Tensor>()
    for name, t in sd do
        let n = normalise name
        match top.TryGetValue n with
        | true, r -> out.Add(r, t)
        | _ ->
            let m = layerPattern.Match n
            if not m.Success then out.Add(name, t)
            else
                let block = (if m.Groups.[1].Value = "vit.encoder.layer" then "blocks." else "decoder_blocks.") + m.Groups.[2].Value + "."
                let inner = m.Groups.[3].Value
                let qkvPart = Regex.Match(inner, @"^attention\.attention\.(query|key|value)\.(weight|bias)$")
                if qkvPart.Success then
                    let key = block + "attn.qkv." + qkvPart.Groups.[2].Value
                    if not (qkv.ContainsKey key) then qkv.[key] <- Dictionary()
                    qkv.[key].[qkvPart.Groups.[1].Value] <- t
                else
                    match layerNames |> List.tryFind (fun (_, h) -> inner.StartsWith h) with
                    | Some (r, h) -> out.Add(block + r + inner.Substring h.Length, t)
                    | None -> out.Add(name, t)
    for KeyValue (key, parts) in qkv do
        let missing = [ "query"; "key"; "value" ] |> List.filter (parts.ContainsKey >> not)
        if not missing.IsEmpty then
            raise (InvalidDataException(sprintf "%s: the file has %s but not %s." key (String.Join(", ", parts.Keys)) (String.Join(", ", missing))))
        out.Add(key, torch.cat([| parts.["query"]; parts.["key"]; parts.["value"] |], 0L))
    out.ToArray()

/// The reference's names -> HuggingFace ViTMAEForPreTraining's; each qkv tensor split in three
/// equal parts along dim 0 (query, key, value).
let toHuggingFace (sd: (string * Tensor)[]) : (string * Tensor)[] =
    let top = dict topNames
    [| for name, t in sd do
           match top.TryGetValue name with
           | true, h -> yield h, t
           | _ ->
               let m = blockPattern.Match name
               if not m.Success then Guard.fail "name" name "a parameter name of the reference MAE"
               let layer = (if m.Groups.[1].Value = "blocks" then "vit.encoder.layer." else "decoder.decoder_layers.") + m.Groups.[2].Value + "."
               let inner = m.Groups.[3].Value
               if inner.StartsWith "attn.qkv." then
                   let kind = inner.Substring "attn.qkv.".Length
                   let parts = t.chunk(3L, 0L)
                   for part, piece in Array.zip [| "query"; "key"; "value" |] parts do
                       yield layer + "attention.attention." + part + "." + kind, piece
               else
                   match layerNames |> List.tryFind (fun (r, _) -> inner.StartsWith r) with
                   | Some (r, h) -> yield layer + h + inner.Substring r.Length, t
                   | None -> Guard.fail "name" name "a parameter name of the reference MAE" |]

// ---- reading and writing ----

// ---- VideoMAE's names (MCG-NJU/VideoMAE modeling_pretrain.py) <-> Mae's ----

/// Whether a state dict uses VideoMAE's pretraining names ("encoder.patch_embed.*",
/// "encoder_to_decoder.weight").
let isVideoMae (names: string seq) =
    names |> Seq.exists (fun n -> n.StartsWith "encoder.patch_embed." || n = "encoder_to_decoder.weight")

let private videoTop =
    [ "encoder.patch_embed.", "patch_embed."
      "encoder.blocks.", "blocks."
      "encoder.norm.", "norm."
      "encoder_to_decoder.", "decoder_embed."
      "decoder.blocks.", "decoder_blocks."
      "decoder.norm.", "decoder_norm."
      "decoder.head.", "decoder_pred." ]

let private renamePrefix (pairs: (string * string) list) (n: string) =
    match pairs |> List.tryFind (fun (a, _) -> n.StartsWith a) with
    | Some (a, b) -> b + n.Substring a.Length
    | None -> n

/// VideoMAE's pretraining names -> Mae's: encoder.{patch_embed, blocks, norm}.* lose "encoder.",
/// encoder_to_decoder.* -> decoder_embed.*, decoder.blocks.* -> decoder_blocks.*, decoder.norm.* ->
/// decoder_norm.*, decoder.head.* -> decoder_pred.*; each block's attn.q_bias and attn.v_bias
/// become one attn.qkv.bias with a zero key part, as VideoMAE's Attention builds it (a key bias
/// adds a constant to each query's logits, which softmax ignores). VideoMAE keeps its sinusoid
/// tables out of the state dict; other names are kept, so that loading reports them as extra.
let ofVideoMae (sd: (string * Tensor)[]) : (string * Tensor)[] =
    let q = dict [ for n, t in sd do if n.EndsWith ".attn.q_bias" then yield n.Substring(0, n.Length - "q_bias".Length), t ]
    let v = dict [ for n, t in sd do if n.EndsWith ".attn.v_bias" then yield n.Substring(0, n.Length - "v_bias".Length), t ]
    [| for n, t in sd do
           if n.EndsWith ".attn.q_bias" then
               let prefix = n.Substring(0, n.Length - "q_bias".Length)
               match v.TryGetValue prefix with
               | true, vb -> yield renamePrefix videoTop (prefix + "qkv.bias"), torch.cat([| t; torch.zeros_like(t); vb |], 0L)
               | _ -> yield renamePrefix videoTop n, t
           elif n.EndsWith ".attn.v_bias" && q.ContainsKey(n.Substring(0, n.Length - "v_bias".Length)) then ()
           else yield renamePrefix videoTop n, t |]

/// Mae's names -> VideoMAE's (the inverse of `ofVideoMae`): a qkv bias splits into q_bias and
/// v_bias (its key part, which attention ignores, is dropped); the fixed positional tables
/// (pos_embed, decoder_pos_embed), which VideoMAE does not save, are left out.
let toVideoMae (sd: (string * Tensor)[]) : (string * Tensor)[] =
    let back = videoTop |> List.map (fun (a, b) -> b, a)
    [| for n, t in sd do
           if n = "pos_embed" || n = "decoder_pos_embed" then ()
           elif n.EndsWith ".attn.qkv.bias" then
               let prefix = renamePrefix back (n.Substring(0, n.Length - "qkv.bias".Length))
               let d = t.shape.[0] / 3L
               // copies: a view at a storage offset is written with its whole storage by the pickler
               yield prefix + "q_bias", t.narrow(0L, 0L, d).clone()
               yield prefix + "v_bias", t.narrow(0L, 2L * d, d).clone()
           else yield renamePrefix back n, t |]

/// The tensors of a `torch.save` pickle: the state dict itself, or the one under "model" (the
/// reference's checkpoints) or "state_dict"; entries that are not tensors (epoch, args) are left out.
let private stateDictOfPickle (path: string) (root: Hashtable) =
    let tensors (h: IDictionary) =
        [| for e in h |> Seq.cast<DictionaryEntry> do
               match e.Value with
               | :? Tensor as t -> yield string e.Key, t
               | _ -> () |]
    let nested =
        [ "model"; "state_dict" ]
        |> List.tryPick (fun k -> match root.[k] with :? IDictionary as d -> Some d | _ -> None)
    match nested with
    | Some d -> tensors d
    | None ->
        let own = tensors root
        if own.Length = 0 then
            raise (InvalidDataException(sprintf "%s holds no tensors (neither a state dict nor one under \"model\" or \"state_dict\")." path))
        own

/// The state dict of a file (format from its first bytes: `formatOf`) as (name, tensor) pairs
/// on the CPU, in the file's names. FileNotFoundException for a missing file; InvalidDataException
/// naming the file for one that is neither format or holds no tensors.
let read (path: string) : (string * Tensor)[] =
    let format = formatOf path
    try
        match format with
        | TorchSave -> stateDictOfPickle path (PyBridge.PyTorchUnpickler.UnpickleStateDict path)
        | Safetensors -> [| for KeyValue (n, t) in PyBridge.Safetensors.LoadStateDict path -> n, t |]
    with
    | :? InvalidDataException -> reraise ()
    | e -> raise (InvalidDataException(sprintf "%s could not be read as %s: %s" path (if format = TorchSave then "a torch.save file" else "safetensors") e.Message, e))

/// `read`, with HuggingFace ViTMAE's or VideoMAE's names mapped to Mae's (the reference MAE's).
/// Tensors the mapping merged into others (query, key and value into qkv; q_bias and v_bias into
/// a qkv bias) are disposed.
let readReference (path: string) =
    let sd = read path
    let names = Array.map fst sd
    let mapping = if isVideoMae names then Some ofVideoMae elif isHuggingFace names then Some ofHuggingFace else None
    match mapping with
    | None -> sd
    | Some map ->
        let mapped = map sd
        let kept = HashSet<Tensor>(Seq.map snd mapped, HashIdentity.Reference)
        for _, t in sd do
            if not (kept.Contains t) then t.Dispose()
        mapped

/// Writes (name, tensor) pairs in Mae's names, atomically: .pth/.pt/.bin as
/// `torch.save({'model': state_dict})` (as the reference's checkpoints), .safetensors with
/// HuggingFace ViTMAE's names; a video model's (VideoMAE's names, `toVideoMae`) in both formats
/// when `video`.
let writeAs (video: bool) (path: string) (sd: (string * Tensor)[]) =
    let format = formatFor path
    use _ = torch.NewDisposeScope()
    let sd = if video then toVideoMae sd else sd
    let cpu = [| for n, t in sd -> n, t.detach().cpu().contiguous() |]
    Checkpoint.writeAtomically path (fun stream ->
        match format with
        | TorchSave ->
            let model = Hashtable()
            for n, t in cpu do model.[n] <- t
            let root = Hashtable()
            root.["model"] <- model
            PyBridge.PyTorchPickler.PickleStateDict(stream, root, leaveOpen = true)
        | Safetensors ->
            let d = Dictionary<string, Tensor>()
            for n, t in (if video then cpu else toHuggingFace cpu) do d.[n] <- t
            PyBridge.Safetensors.SaveStateDict(stream, d, leaveOpen = true))

/// `writeAs` for an image model.
let write (path: string) (sd: (string * Tensor)[]) = writeAs false path sd

// ---- configurations from shapes ----

/// The image MAE a state dict (reference names) describes: image and patch size, channels, widths
/// and depths, MLP ratio and whether it has a cls token read from the shapes. Heads cannot be read
/// from shapes: `heads` / `decoderHeads` when given (> 0), else those of the preset with the same
/// widths and depths (base, large, huge: 64 channels per encoder head, 16 decoder heads), else 64
/// (encoder) and 32 (decoder) channels per head where they divide the width. For an encoder-only
/// file the decoder is the reference's (512 x 8, 16 heads). ArgumentException naming what is
/// missing or does not fit.
let inferConfig (sd: (string * Tensor)[]) (heads: int) (decoderHeads: int) : MaeConfig =
    let d = dict sd
    let shape (n: string) =
        match d.TryGetValue n with
        | true, t -> t.shape
        | _ -> Guard.fail "weights" (sprintf "no tensor %s" n) "the reference MAE's patch_embed.proj.weight, pos_embed and blocks.N.* tensors"
    let proj = shape "patch_embed.proj.weight" // [D, C, ph, pw]
    let dim, channels, ph, pw = int proj.[0], int proj.[1], int proj.[2], int proj.[3]
    let count (prefix: string) =
        sd |> Seq.choose (fun (n, _) -> let m = blockPattern.Match n in if m.Success && m.Groups.[1].Value = prefix then Some(int m.Groups.[2].Value) else None)
        |> Seq.distinct |> Seq.length
    let depth = count "blocks"
    if depth = 0 then Guard.fail "weights" "no blocks.N.* tensors" "an encoder of at least one block"
    let hidden = int (shape "blocks.0.mlp.fc1.weight").[0]
    let clsToken = d.ContainsKey "cls_token"
    let positions = int (shape "pos_embed").[1] - (if clsToken then 1 else 0)
    let side = int (Math.Round(sqrt (float positions)))
    if side * side <> positions then
        Guard.fail "pos_embed" (Guard.shapeOf d.["pos_embed"]) "a square grid of positions (plus the cls token): the image size cannot be read otherwise"
    let hasDecoder = d.ContainsKey "decoder_embed.weight"
    let decDim = if hasDecoder then int (shape "decoder_embed.weight").[0] else 512
    let decDepth = if hasDecoder then count "decoder_blocks" else 8
    let preset =
        [ MaeConfig.``base``; MaeConfig.large; MaeConfig.huge ]
        |> List.tryFind (fun p -> p.EmbedDim = dim && p.Depth = depth && p.DecoderEmbedDim = decDim && p.DecoderDepth = decDepth)
    let pick (given: int) (fromPreset: MaeConfig -> int) (width: int) (perHead: int) =
        if given > 0 then given
        else
            match preset with
            | Some p -> fromPreset p
            | None -> if width % perHead = 0 then width / perHead else 1
    { (preset |> Option.defaultValue MaeConfig.``base``) with
        Input = Image { ImageSize = (side * ph, side * pw); PatchSize = (ph, pw); Channels = channels }
        EmbedDim = dim
        Depth = depth
        Heads = pick heads (fun p -> p.Heads) dim 64
        DecoderEmbedDim = decDim
        DecoderDepth = decDepth
        DecoderHeads = pick decoderHeads (fun p -> p.DecoderHeads) decDim 32
        MlpRatio = float hidden / float dim
        ClsToken = clsToken }
    |> MaeConfig.validate

// ---- loading into and exporting from the image MAE ----

/// What `loadInto` read.
type Imported =
    { /// Tensors copied into the model.
      Tensors: int
      /// Whether the file held the decoder (false for an encoder-only file: the decoder keeps its
      /// initial weights).
      Decoder: bool }

/// Copies a state dict (reference names; `readReference`) into an image MAE: every encoder tensor,
/// and every decoder tensor or none (an encoder-only file, such as mae_pretrain_vit_base.pth).
/// Anything else — a tensor missing, one the model has no place for, another shape, part of a
/// decoder — is an ArgumentException naming each with both shapes, and nothing is copied.
let loadInto (model: MaskedAutoencoder) (sd: (string * Tensor)[]) : Imported =
    Guard.notNull "model" model
    // VideoMAE keeps its fixed sinusoid tables out of the state dict: the model's own stand in
    let sd =
        match model.Config.Input with
        | Video _ when not model.Config.LearnedPosEmbed ->
            let present = set (Array.map fst sd)
            Array.append sd [| for n, t in Weights.named model do if (n = "pos_embed" || n = "decoder_pos_embed") && not (present.Contains n) then yield n, t |]
        | _ -> sd
    let all = Weights.named model
    let encoder = set model.EncoderParameterNames
    let decoderInFile = sd |> Array.exists (fun (n, _) -> all |> Array.exists (fun (m, _) -> m = n && not (encoder.Contains m)))
    let target = if decoderInFile then all else all |> Array.filter (fun (n, _) -> encoder.Contains n)
    Weights.copy sd target (fun _ -> false) (fun _ s _ -> s) (fun text ->
        ArgumentException(sprintf "the weights do not match the model: %s." text, "weights") :> exn)
    { Tensors = target.Length; Decoder = decoderInFile }

/// Reads a file (`readReference`), builds the image MAE it describes (`inferConfig`, or `config`
/// when given; `normPixLoss`, which no weight records, when given) and loads it (`loadInto`). The
/// caller disposes the model.
let importModel (path: string) (config: MaeConfig option) (heads: int) (decoderHeads: int) (normPixLoss: bool option)
                : MaskedAutoencoder * Imported =
    let sd = readReference path
    try
        let cfg =
            match config with
            | Some c -> c
            | None when sd |> Array.exists (fun (n, t) -> n = "patch_embed.proj.weight" && t.dim() = 5L) ->
                Guard.fail "config" "none" "a video configuration (a video preset): VideoMAE's files do not record the clip size"
            | None -> inferConfig sd heads decoderHeads
        let cfg = MaeConfig.validate (match normPixLoss with Some v -> { cfg with NormPixLoss = v } | None -> cfg)
        let model = new MaskedAutoencoder(cfg)
        try
            model, loadInto model sd
        with _ ->
            model.Dispose()
            reraise ()
    finally
        for _, t in sd do t.Dispose()

/// Writes an image MAE's weights in the reference's layout (`write`), a video MAE's in VideoMAE's
/// (`writeAs true`): every tensor, or the encoder's alone when `encoderOnly` (as
/// mae_pretrain_vit_*.pth). ArgumentException for a model of another modality.
let export (path: string) (model: MaskedAutoencoder) (encoderOnly: bool) =
    Guard.notNull "model" model
    let video =
        match model.Config.Input with
        | Image _ -> false
        | Video _ -> true
        | _ -> Guard.fail "model" (sprintf "a model of modality %s" model.Config.Modality) "an image MAE (the reference MAE's layout) or a video MAE (VideoMAE's)"
    let encoder = set model.EncoderParameterNames
    let sd = Weights.named model |> Array.filter (fun (n, _) -> not encoderOnly || encoder.Contains n)
    writeAs video path sd
