/// The model's parameters carry the reference MAE checkpoint's names and shapes, and the presets
/// have the sizes of the paper's models.
module Mae.Tests.Unit.ParameterTests

open System.Diagnostics
open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

/// The keys of facebookresearch/mae's `models_mae.py` state dict for these depths.
let referenceKeys (depth: int) (decoderDepth: int) =
    let block prefix i =
        [ "norm1.weight"; "norm1.bias"; "attn.qkv.weight"; "attn.qkv.bias"; "attn.proj.weight"; "attn.proj.bias"
          "norm2.weight"; "norm2.bias"; "mlp.fc1.weight"; "mlp.fc1.bias"; "mlp.fc2.weight"; "mlp.fc2.bias" ]
        |> List.map (fun k -> sprintf "%s.%d.%s" prefix i k)
    [ "patch_embed.proj.weight"; "patch_embed.proj.bias"; "cls_token"; "pos_embed" ]
    @ List.collect (block "blocks") [ 0 .. depth - 1 ]
    @ [ "norm.weight"; "norm.bias"; "mask_token"; "decoder_embed.weight"; "decoder_embed.bias"; "decoder_pos_embed" ]
    @ List.collect (block "decoder_blocks") [ 0 .. decoderDepth - 1 ]
    @ [ "decoder_norm.weight"; "decoder_norm.bias"; "decoder_pred.weight"; "decoder_pred.bias" ]

/// Parameter count of an MAE with this configuration, from the shapes of its tensors.
let expectedCounts (c: MaeConfig) =
    let d, dd, l = int64 c.EmbedDim, int64 c.DecoderEmbedDim, int64 c.NumTokens
    let ph, pw = c.Image.PatchSize
    let block (w: int64) =
        let hidden = int64 (float w * c.MlpRatio)
        2L * w + (3L * w * w + 3L * w) + (w * w + w) + 2L * w + (hidden * w + hidden) + (w * hidden + w)
    let cls = if c.ClsToken then 1L else 0L
    let encoder =
        (d * int64 (c.Image.Channels * ph * pw) + d) + cls * d + (l + cls) * d + int64 c.Depth * block d + 2L * d
    let decoder =
        (d * dd + dd) + dd + (l + cls) * dd + int64 c.DecoderDepth * block dd + 2L * dd
        + (dd * int64 c.Image.PatchDim + int64 c.Image.PatchDim)
    encoder, decoder

let private count (m: MaskedAutoencoder) (keep: string -> bool) =
    m.named_parameters() |> Seq.sumBy (fun struct (n, p) -> if keep n then p.numel() else 0L)

let private checkNames (cfg: MaeConfig) =
    use m = MaskedAutoencoder.Create(cfg, 0L)
    let actual = names m
    let expected = referenceKeys cfg.Depth cfg.DecoderDepth
    Expect.equal (List.length actual) (List.length expected) "as many parameters as the reference"
    Expect.equal (Set.ofList actual) (Set.ofList expected) "the reference checkpoint's keys"
    let l, d, dd = int64 cfg.NumTokens, int64 cfg.EmbedDim, int64 cfg.DecoderEmbedDim
    let ph, pw = cfg.Image.PatchSize
    Expect.equal (shape (param m "pos_embed")) [ 1L; l + 1L; d ] "pos_embed [1, L+1, D]"
    Expect.equal (shape (param m "decoder_pos_embed")) [ 1L; l + 1L; dd ] "decoder_pos_embed [1, L+1, Dd]"
    Expect.equal (shape (param m "decoder_pred.weight")) [ int64 cfg.Image.PatchDim; dd ] "decoder_pred.weight [ph*pw*C, Dd]"
    Expect.equal (shape (param m "patch_embed.proj.weight")) [ d; int64 cfg.Image.Channels; int64 ph; int64 pw ] "patch_embed [D, C, ph, pw]"
    Expect.equal (shape (param m "cls_token")) [ 1L; 1L; d ] "cls_token [1, 1, D]"
    Expect.equal (shape (param m "mask_token")) [ 1L; 1L; dd ] "mask_token [1, 1, Dd]"
    Expect.equal (shape (param m "blocks.0.attn.qkv.weight")) [ 3L * d; d ] "qkv [3D, D]"
    Expect.equal (shape (param m "blocks.0.mlp.fc1.weight")) [ 4L * d; d ] "fc1 [4D, D]"

let tests =
    testList "parameters" [
        test "tiny has the reference MAE keys and shapes" { checkNames MaeConfig.tiny }
        test "a 2-block encoder and 2-block decoder has the reference keys" {
            checkNames { small with Depth = 2; DecoderDepth = 2 }
        }
        test "fixed sin-cos tables are not trained; learned ones are" {
            use fixedM = MaskedAutoencoder.Create(small, 0L)
            Expect.isFalse (param fixedM "pos_embed").requires_grad "pos_embed fixed"
            Expect.isFalse (param fixedM "decoder_pos_embed").requires_grad "decoder_pos_embed fixed"
            Expect.isTrue (param fixedM "cls_token").requires_grad "cls_token trained"
            // the fixed table is MAE's 2D sin-cos table with a zero cls row
            let table = (PosEmbed.sinCos2d small.EmbedDim small.Image.Grid true).unsqueeze(0L)
            Expect.isTrue (same (param fixedM "pos_embed") table) "pos_embed is the sin-cos table"
            use learned = MaskedAutoencoder.Create({ small with LearnedPosEmbed = true }, 0L)
            Expect.isTrue (param learned "pos_embed").requires_grad "learned pos_embed"
            Expect.isTrue (param learned "decoder_pos_embed").requires_grad "learned decoder_pos_embed"
        }
        test "tiny's parameter count follows from its shapes" {
            use m = MaskedAutoencoder.Create(MaeConfig.tiny, 0L)
            let enc, dec = expectedCounts MaeConfig.tiny
            let encNames = set m.EncoderParameterNames
            Expect.equal (count m encNames.Contains) enc "encoder parameters"
            Expect.equal (count m (encNames.Contains >> not)) dec "decoder parameters"
        }
        test "base has MAE ViT-B/16's size (85.8M encoder)" {
            let cfg = MaeConfig.``base``
            let enc, dec = expectedCounts cfg
            // ViT-B/16 at 224: patch embed 0.59M + 12 blocks of 12D^2+13D + tables: 85.8M
            Expect.isLessThan (abs (float enc - 85.8e6)) 0.05e6 "the formula gives MAE ViT-B's 85.8M encoder"
            let clock = Stopwatch.StartNew()
            use m = MaskedAutoencoder.Create(cfg, 0L)
            let seconds = clock.Elapsed.TotalSeconds
            let encNames = set m.EncoderParameterNames
            Expect.equal (count m encNames.Contains) enc "encoder parameters of the built model"
            Expect.equal (count m (encNames.Contains >> not)) dec "decoder parameters of the built model"
            Expect.equal (List.length (names m)) (List.length (referenceKeys 12 8)) "reference key count"
            Expect.isLessThan seconds 10.0 "building ViT-B is quick"
        }
        test "presets have the paper's shapes" {
            let check (c: MaeConfig) (img, patch, d, depth, heads) =
                Expect.equal (c.Image.ImageSize, c.Image.PatchSize, c.Image.Channels) ((img, img), (patch, patch), 3) "image, patch, RGB"
                Expect.equal (c.EmbedDim, c.Depth, c.Heads) (d, depth, heads) "encoder"
                Expect.equal (c.DecoderEmbedDim, c.DecoderDepth, c.DecoderHeads) (512, 8, 16) "decoder 512 x 8"
                Expect.equal c.MaskRatio 0.75 "75% masked"
                Expect.isTrue c.NormPixLoss "norm-pix loss"
                Expect.equal (MaeConfig.validate c) c "valid"
            check MaeConfig.``base`` (224, 16, 768, 12, 12)
            check MaeConfig.large (224, 16, 1024, 24, 16)
            check MaeConfig.huge (224, 14, 1280, 32, 16)
            Expect.equal MaeConfig.huge.NumTokens 256 "ViT-H/14 sees 16x16 patches"
            Expect.equal MaeConfig.large.NumTokens 196 "ViT-L/16 sees 14x14 patches"
            Expect.equal (MaeConfig.ofName "Large") MaeConfig.large "names are case-insensitive"
            Expect.equal (MaeConfig.validate MaeConfig.tiny) MaeConfig.tiny "tiny valid"
        }
    ]
