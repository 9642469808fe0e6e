/// Golden values from the reference MAE: tests/golden/make_golden.py re-implements
/// facebookresearch/mae's models_mae.py in PyTorch and wrote tests/fixtures/golden (no Python is
/// needed here). For each case the reference's weights are loaded into Mae's MaskedAutoencoder
/// by name, the same mask is drawn from the committed noise, and the loss, prediction, mask,
/// encoder outputs and gradients must match. keep_counts.json holds the references' kept counts
/// (MAE's random_masking, VideoMAE's tube masking) for many (L, r).
module Mae.Tests.Unit.GoldenTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open Expecto.Logging
open Expecto.Logging.Message
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

let private logger = Log.create "golden"

/// Elementwise tolerance: |actual - expected| <= absTol + relTol * |expected|.
let relTol, absTol = 1e-5, 1e-6

/// The cases make_golden.py writes.
let caseNames = [ "rgb32-p8-normpix"; "grey28-p7-raw"; "rgb40-p4-mask90" ]

/// The cases with reference.pth, reference-encoder.pth and vitmae.safetensors beside them.
let fileCaseNames = [ "rgb32-p8-normpix"; "grey28-p7-raw" ]

/// tests/fixtures/golden.
let internal goldenFolder = lazy (fixturePath "golden")

let private readJson (path: string) = JsonNode.Parse(File.ReadAllText path)

/// One tensor from its manifest entry (file, dtype, shape): raw little-endian float32 or int64.
let private readTensor (folder: string) (entry: JsonNode) : Tensor =
    if not BitConverter.IsLittleEndian then failtest "the golden files are little-endian"
    let file = entry.["file"].GetValue<string>()
    let shape = entry.["shape"].AsArray() |> Seq.map (fun d -> d.GetValue<int64>()) |> Array.ofSeq
    let count = Array.fold (*) 1L shape
    let bytes = File.ReadAllBytes(Path.Combine(folder, file))
    let read (size: int) (zero: 'T[]) =
        if int64 bytes.Length <> count * int64 size then
            failtestf "%s: %d bytes, expected %d values of %d bytes for shape %A" file bytes.Length count size shape
        Buffer.BlockCopy(bytes, 0, zero, 0, bytes.Length)
        zero
    match entry.["dtype"].GetValue<string>() with
    | "float32" -> torch.tensor(read 4 (Array.zeroCreate<float32> (int count))).reshape(shape)
    | "int64" -> torch.tensor(read 8 (Array.zeroCreate<int64> (int count))).reshape(shape)
    | other -> failtestf "%s: unknown dtype %s" file other

/// A case's manifest and its tensors, by group ("weights", "inputs", "expected", "grads") and name.
type internal Case =
    { Config: JsonNode
      Tensors: Map<string, Map<string, Tensor>> }
    member c.Get (group: string) (name: string) = c.Tensors.[group].[name]

let internal readCase (name: string) =
    let folder = Path.Combine(goldenFolder.Value, name)
    let manifest = readJson (Path.Combine(folder, "manifest.json"))
    let group (key: string) =
        manifest.[key].AsObject()
        |> Seq.map (fun kv -> kv.Key, readTensor folder kv.Value)
        |> Map.ofSeq
    { Config = manifest.["config"]
      Tensors = Map.ofList [ for g in [ "weights"; "inputs"; "expected"; "grads" ] -> g, group g ] }

/// Mae's configuration for the case's reference model.
let internal configOf (c: JsonNode) (kernel: AttentionKernel) =
    let get (key: string) = c.[key].GetValue<int>()
    { MaeConfig.tiny with
        Input = Image { ImageSize = (get "image_size", get "image_size"); PatchSize = (get "patch_size", get "patch_size"); Channels = get "in_chans" }
        EmbedDim = get "embed_dim"
        Depth = get "depth"
        Heads = get "num_heads"
        DecoderEmbedDim = get "decoder_embed_dim"
        DecoderDepth = get "decoder_depth"
        DecoderHeads = get "decoder_num_heads"
        MlpRatio = c.["mlp_ratio"].GetValue<float>()
        Masking = RandomPerSample(c.["mask_ratio"].GetValue<float>())
        NormPixLoss = c.["norm_pix_loss"].GetValue<bool>()
        ClsToken = true
        LearnedPosEmbed = false
        Attention = kernel }

/// Copies every reference weight into the parameter of that name; fails naming every missing,
/// extra or mis-shaped name.
let private loadWeights (model: MaskedAutoencoder) (weights: Map<string, Tensor>) =
    let ours = model.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> Map.ofSeq
    let missing = weights |> Map.filter (fun n _ -> not (ours.ContainsKey n)) |> Map.keys |> List.ofSeq
    let extra = ours |> Map.filter (fun n _ -> not (weights.ContainsKey n)) |> Map.keys |> List.ofSeq
    let misShaped =
        [ for KeyValue(n, w) in weights do
              match ours.TryFind n with
              | Some p when p.shape <> w.shape -> yield sprintf "%s: Mae %A, reference %A" n p.shape w.shape
              | _ -> () ]
    if not (missing.IsEmpty && extra.IsEmpty && misShaped.IsEmpty) then
        failtestf "parameter names differ from the reference: not in Mae %A; not in the reference %A; mis-shaped %A"
            missing extra misShaped
    use _ = torch.no_grad()
    for KeyValue(n, p) in ours do
        p.copy_(weights.[n]) |> ignore

/// How far `actual` is from `expected`: max |diff|, max |diff| / |expected| (over |expected| >=
/// absTol), and the share of the tolerance used (<= 1 passes).
type Difference =
    { Name: string
      MaxAbs: float
      MaxRel: float
      Used: float }

let difference (name: string) (actual: Tensor) (expected: Tensor) =
    if actual.shape <> expected.shape then
        failtestf "%s: shape %A, reference %A" name actual.shape expected.shape
    use _ = torch.NewDisposeScope()
    let a = actual.detach().cpu().to_type(ScalarType.Float64)
    let e = expected.to_type(ScalarType.Float64)
    let d = (a - e).abs()
    let scale = e.abs()
    let rel = torch.where(scale.ge(absTol.ToScalar()), d / scale.clamp_min(absTol.ToScalar()), torch.zeros_like(d))
    { Name = name
      MaxAbs = d.max().item<float>()
      MaxRel = rel.max().item<float>()
      Used = (d / (scale * relTol + absTol)).max().item<float>() }

let private show (d: Difference) =
    sprintf "%s: max abs diff %.3g, max rel diff %.3g (%.0f%% of the tolerance)" d.Name d.MaxAbs d.MaxRel (100.0 * d.Used)

/// Bit-equal integer or 0/1 tensors.
let private expectExact (name: string) (actual: Tensor) (expected: Tensor) =
    Expect.sequenceEqual actual.shape expected.shape (name + ": shape")
    let differing = actual.cpu().to_type(expected.dtype).ne(expected).sum().item<int64>()
    Expect.equal differing 0L (sprintf "%s: entries that differ from the reference" name)

/// Where a case's weights come from: the manifest's raw tensors by name, or one of the PyTorch
/// files make_golden.py wrote beside them (imported with Mae.PyTorch).
type internal WeightsSource =
    | ByName
    | File of string

/// Runs Mae on one case with the reference's weights, noise and inputs; compares every output
/// (with an encoder-only file: the encoder's outputs, the decoder being left at its initial weights).
let private checkCase (name: string) (kernel: AttentionKernel) (source: WeightsSource) =
    use _ = torch.NewDisposeScope()
    let case = readCase name
    let cfg = configOf case.Config kernel
    use model = new MaskedAutoencoder(cfg)
    // Mae's own fixed sin-cos tables, before loading: the reference's values
    let tables =
        [ for t in [ "pos_embed"; "decoder_pos_embed" ] -> difference (t + " (Mae's own table)") (param model t) (case.Get "weights" t) ]
    let encoderOnly =
        match source with
        | ByName ->
            loadWeights model case.Tensors.["weights"]
            false
        | File file ->
            let imported = PyTorch.loadInto model (PyTorch.readReference (Path.Combine(goldenFolder.Value, name, file)))
            Expect.equal imported.Tensors (if imported.Decoder then model.parameters() |> Seq.length else model.EncoderParameterNames.Length) "every tensor of the model (or of its encoder) loaded"
            not imported.Decoder
    let imgs, noise = case.Get "inputs" "imgs", case.Get "inputs" "noise"
    let keep = Masking.keepCount cfg.NumTokens cfg.MaskRatio
    Expect.equal keep (case.Config.["len_keep"].GetValue<int>()) "Mae's kept count = the reference's len_keep"
    let masking (x: Tensor) = Masking.fromShuffle x (noise.argsort(dim = 1L)) keep
    let out = model.Forward(imgs, masking)
    out.Loss.backward()
    let latent, idsRestore, encoded =
        use _ = torch.no_grad()
        let enc = model.ForwardEncoder(imgs, masking)
        enc.Latent, enc.Masking.IdsRestore, model.Encode imgs
    expectExact "mask" out.Mask (case.Get "expected" "mask")
    expectExact "ids_restore" idsRestore (case.Get "expected" "ids_restore")
    let expected = case.Get "expected"
    let diffs =
        if encoderOnly then
            tables
            @ [ difference "latent" latent (expected "latent")
                difference "encoded (no masking)" encoded (expected "encoded") ]
        else
            tables
            @ [ difference "loss" out.Loss (expected "loss")
                difference "pred" out.Pred (expected "pred")
                difference "latent" latent (expected "latent")
                difference "encoded (no masking)" encoded (expected "encoded") ]
            @ [ for KeyValue(n, g) in case.Tensors.["grads"] ->
                    let p = param model n
                    if isNull p.grad then failtestf "grad of %s: Mae computed none" n
                    difference ("grad of " + n) p.grad g ]
    Expect.isGreaterThanOrEqual diffs.Length (if encoderOnly then 4 else 12) "the case compares the outputs (and at least 8 gradients)"
    logger.logWithAck LogLevel.Debug (eventX (sprintf "%s, %A attention:\n  %s" name kernel (diffs |> List.map show |> String.concat "\n  ")))
    |> Async.RunSynchronously
    let failing = diffs |> List.filter (fun d -> not (d.Used <= 1.0))
    if not failing.IsEmpty then
        failtestf "%s (%A attention) differs from the reference (tolerance %g + %g |expected|):\n%s" name kernel absTol relTol
            (failing |> List.map show |> String.concat "\n")

/// keep_counts.json: ratios, token counts and the references' counts per (L, r).
/// Fails listing the (first 20 of the) mismatches, if any.
let private expectNoMismatch (what: string) (pairs: int) (mismatches: string list) =
    if not mismatches.IsEmpty then
        failtestf "%s for %d of %d pairs:\n%s" what mismatches.Length pairs
            (mismatches |> List.truncate 20 |> String.concat "\n")

let private keepCounts () =
    let counts = readJson (Path.Combine(goldenFolder.Value, "keep_counts.json"))
    let ints (node: JsonNode) = node.AsArray() |> Seq.map (fun v -> v.GetValue<int>()) |> Array.ofSeq
    let ratios = counts.["ratios"].AsArray() |> Seq.map (fun v -> v.GetValue<float>()) |> Array.ofSeq
    let tokens = ints counts.["tokens"]
    let table (key: string) = counts.[key].AsArray() |> Seq.map ints |> Array.ofSeq
    let mae, tube = table "mae_keep", table "tube_hidden_per_slot"
    for t in [ mae; tube ] do
        Expect.equal t.Length tokens.Length "one row per token count"
        Expect.all t (fun row -> row.Length = ratios.Length) "one column per ratio"
    let at (t: int[][]) l r = t.[Array.findIndex ((=) l) tokens].[Array.findIndex ((=) r) ratios]
    // the pairs where the reference's double arithmetic truncates below the exact value
    Expect.equal (at mae 100 0.9) 9 "the file has MAE's int(100 * (1 - 0.9)) = 9"
    Expect.equal (at mae 50 0.8) 9 "the file has MAE's int(50 * (1 - 0.8)) = 9"
    ratios, tokens, mae, tube

let tests =
    testList "golden" [
        testSequenced (
            testList "reference MAE (models_mae.py)" [
                for name in caseNames do
                    for kernel in [ AttentionKernel.Math; AttentionKernel.Sdpa ] do
                        test (sprintf "%s, %A attention: loss, pred, mask, latent, encoding and gradients" name kernel) {
                            checkCase name kernel ByName
                        }
            ]
        )
        testSequenced (
            testList "the reference's files imported (Mae.PyTorch)" [
                for name in fileCaseNames do
                    test (sprintf "%s: reference.pth ({'model': state_dict}, torch.save) gives the golden values" name) {
                        checkCase name AttentionKernel.Sdpa (File "reference.pth")
                    }
                    test (sprintf "%s: reference-encoder.pth (encoder only) gives the golden encoder outputs" name) {
                        checkCase name AttentionKernel.Sdpa (File "reference-encoder.pth")
                    }
                    test (sprintf "%s: vitmae.safetensors (HuggingFace ViTMAE names) gives the golden values" name) {
                        checkCase name AttentionKernel.Sdpa (File "vitmae.safetensors")
                    }
            ]
        )
        test "keepCount is MAE's int(L(1-r)) for every (L, r) of keep_counts.json" {
            let ratios, tokens, mae, _ = keepCounts ()
            let mismatches =
                [ for i, l in Array.indexed tokens do
                      for j, r in Array.indexed ratios do
                          let reference = mae.[i].[j]
                          let ours = try Some(Masking.keepCount l r) with :? ArgumentException -> None
                          match ours with
                          | Some k when k = reference -> ()
                          | None when reference = 0 -> ()
                          | _ -> yield sprintf "L = %d, r = %g: reference %d, Mae %A" l r reference ours ]
            expectNoMismatch "Mae's kept count differs from the reference's (None: Mae raised)" (tokens.Length * ratios.Length) mismatches
        }
        test "tube masking keeps slots * (S - int(r*S)), VideoMAE's rule, for every (S, r) of keep_counts.json" {
            let ratios, tokens, _, tube = keepCounts ()
            use g = gen 3
            let slots = 2
            let mismatches =
                [ for i, s in Array.indexed tokens do
                      for j, r in Array.indexed ratios do
                          use _ = torch.NewDisposeScope()
                          let expected = int64 (slots * (s - tube.[i].[j]))
                          let kept =
                              try
                                  let m = Masking.tube g r slots (torch.zeros(1L, int64 (slots * s), 1L))
                                  let hidden = int64 (m.Mask.sum().item<float32>())
                                  if hidden = int64 (slots * s) - m.IdsKeep.shape.[1] then Some m.IdsKeep.shape.[1] else None
                              with :? ArgumentException -> None
                          if kept <> Some expected then
                              yield sprintf "S = %d, r = %g: VideoMAE keeps %d, Mae %A" s r expected kept ]
            expectNoMismatch "Mae's tube masking keeps another count than VideoMAE (None: Mae raised, or its mask hides another count than IdsKeep leaves)" (tokens.Length * ratios.Length) mismatches
        }
    ]
