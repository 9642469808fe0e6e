/// Forward/backward smoke tests: every preset (reduced where it would be slow), non-square images,
/// rectangular patches, every masking strategy and both attention kernels.
module Mae.Tests.Unit.ModelTests

open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

/// Runs forward + backward on `n` random images and checks shapes, the hidden count and gradients;
/// `more` checks the output further (its tensors live until `smokeWith` returns).
let smokeWith (cfg: MaeConfig) (n: int) (more: MaeOutput -> unit) =
    use _ = torch.NewDisposeScope()
    use m = MaskedAutoencoder.Create(cfg, 1L)
    m.train ()
    let h, w = cfg.Image.ImageSize
    use g = gen 5
    let imgs = torch.randn([| int64 n; int64 cfg.Image.Channels; int64 h; int64 w |], generator = g)
    let out = m.Forward(imgs, g)
    let l = int64 cfg.NumTokens
    Expect.equal (shape out.Loss) [] "loss is a scalar"
    Expect.isTrue (allFinite out.Loss) "loss is finite"
    Expect.isGreaterThan (out.Loss.item<float32>()) 0.0f "an untrained model has a positive loss"
    Expect.equal (shape out.Pred) [ int64 n; l; int64 cfg.Image.PatchDim ] "Pred [N, L, ph*pw*C]"
    Expect.equal (shape out.Mask) [ int64 n; l ] "Mask [N, L]"
    let hidden = out.Mask.sum(1L) |> fun t -> t.data<float32>().ToArray()
    let expected = float32 (hiddenCount cfg.NumTokens cfg.MaskRatio)
    Expect.all hidden (fun c -> c = expected) (sprintf "every sample hides %g tokens: %A" expected hidden)
    Expect.isTrue (out.Mask.eq(torch.tensor 0.0f).logical_or(out.Mask.eq(torch.tensor 1.0f)).all().item<bool>()) "mask is 0/1"
    out.Loss.backward()
    for struct (name, p) in m.named_parameters() do
        if p.requires_grad then
            Expect.isNotNull p.grad (sprintf "%s has a gradient" name)
            Expect.isTrue (allFinite p.grad) (sprintf "%s's gradient is finite" name)
            Expect.isGreaterThan (p.grad.abs().sum().item<float32>()) 0.0f (sprintf "%s's gradient is not all zero" name)
        else Expect.isNull p.grad (sprintf "%s is fixed and gets no gradient" name)
    more out

let smoke cfg n = smokeWith cfg n ignore

let private distinctRows (mask: Tensor) =
    [ for i in 0L .. mask.shape.[0] - 1L -> mask.[i].data<float32>().ToArray() |> List.ofArray ]
    |> List.distinct
    |> List.length

/// A preset at a size that runs in seconds: a 2x2 patch grid and at most 2 blocks each side,
/// keeping the preset's widths, heads and patch size.
let reduced (c: MaeConfig) =
    let ph, pw = c.Image.PatchSize
    { (MaeConfig.withImage (2 * ph, 2 * pw) c.Image.PatchSize c.Image.Channels c) with Depth = min c.Depth 2; DecoderDepth = min c.DecoderDepth 1 }

let tests =
    testList "model" [
        test "tiny: forward and backward" { smoke MaeConfig.tiny 3 }
        testList "presets at reduced size: forward and backward" [
            for name in MaeConfig.names do
                if name <> "tiny" then
                    test name { smoke (reduced (MaeConfig.ofName name)) 2 }
        ]
        test "non-square images with rectangular patches and 3 channels" {
            let cfg = (MaeConfig.withImage (28, 42) (7, 14) 3 small)
            Expect.equal cfg.Image.Grid (4, 3) "4 rows x 3 columns of patches"
            smokeWith cfg 2 (fun out -> Expect.equal out.Pred.shape.[2] (7L * 14L * 3L) "token width ph*pw*C")
            use m = MaskedAutoencoder.Create(cfg, 0L)
            use x = torch.randn(2L, 3L, 28L, 42L)
            use back = m.Reassemble(m.Target x)
            Expect.isTrue (same back x) "unpatchify (patchify x) = x"
        }
        test "no cls token, learned positions, plain MSE" {
            smoke { small with ClsToken = false; LearnedPosEmbed = true; NormPixLoss = false } 2
        }
        test "RandomShared masking hides the same tokens in every sample" {
            smokeWith { small with Masking = RandomShared 0.5 } 4 (fun out ->
                let first = out.Mask.narrow(0L, 0L, 1L)
                Expect.isTrue (out.Mask.eq(first).all().item<bool>()) "one mask for the batch")
        }
        test "BlockWise masking hides the configured share" {
            smokeWith { small with Masking = BlockWise 0.6 } 4 (fun out ->
                Expect.equal (out.Mask.sum().item<float32>()) (float32 (4 * hiddenCount 16 0.6)) "hidden count"
                // per-sample masks: with 4 samples at least two differ
                Expect.isGreaterThan (distinctRows out.Mask) 1 "masks differ between samples")
        }
        test "RandomPerSample masks differ between samples" {
            smokeWith small 4 (fun out -> Expect.isGreaterThan (distinctRows out.Mask) 1 "masks differ between samples")
        }
        test "the Sdpa and Math attention kernels give the same outputs for the same weights" {
            use _ = torch.NewDisposeScope()
            use sdpa = MaskedAutoencoder.Create({ small with Attention = AttentionKernel.Sdpa }, 7L)
            use math = MaskedAutoencoder.Create({ small with Attention = AttentionKernel.Math }, 7L)
            math.load_state_dict(sdpa.state_dict()) |> ignore
            let x = torch.randn(3L, 1L, 28L, 28L)
            let a = (use g = gen 9 in sdpa.Forward(x, g))
            let b = (use g = gen 9 in math.Forward(x, g))
            Expect.isTrue (same a.Mask b.Mask) "same masks"
            Expect.isTrue (a.Pred.allclose(b.Pred, rtol = 1e-4, atol = 1e-5)) "same predictions"
            Expect.floatClose Accuracy.medium (a.Loss.item<float32>() |> float) (b.Loss.item<float32>() |> float) "same loss"
            Expect.isTrue ((sdpa.Encode x).allclose(math.Encode x, rtol = 1e-4, atol = 1e-5)) "same unmasked encoding"
            a.Loss.backward()
            b.Loss.backward()
            let ga = (param sdpa "blocks.0.attn.qkv.weight").grad
            let gb = (param math "blocks.0.attn.qkv.weight").grad
            Expect.isTrue (ga.allclose(gb, rtol = 1e-3, atol = 1e-5)) "same gradients"
        }
        test "masking before the patch embedding equals embedding every patch and masking after" {
            use _ = torch.NewDisposeScope()
            let cfg = (MaeConfig.withImage (28, 21) (7, 3) 3 small)
            use m = MaskedAutoencoder.Create(cfg, 2L)
            let x = torch.randn([| 3L; 3L; 28L; 21L |], generator = gen 3)
            let fast = (use g = gen 4 in m.Forward(x, g))
            let slow = (use g = gen 4 in m.Forward(x, fun t -> m.Mask(t, g)))
            Expect.isTrue (same fast.Mask slow.Mask) "same masks"
            Expect.isTrue (fast.Pred.allclose(slow.Pred, rtol = 1e-4, atol = 1e-5)) "same predictions"
            Expect.floatClose Accuracy.high (fast.Loss.item<float32>() |> float) (slow.Loss.item<float32>() |> float) "same loss"
            // and the matrix-product embedding equals the reference's strided convolution
            let w, b = param m "patch_embed.proj.weight", param m "patch_embed.proj.bias"
            let conv = torch.nn.functional.conv2d(x, w, b, strides = [| 7L; 3L |]).flatten(2L).transpose(1L, 2L)
            Expect.isTrue ((m.Embed x - (param m "pos_embed").narrow(1L, 1L, 28L)).allclose(conv, rtol = 1e-4, atol = 1e-5)) "Embed = conv2d(stride = patch) + positions"
        }
        test "bf16 precision: products in bfloat16, fp32 parameters, gradients and loss, close to fp32" {
            use _ = torch.NewDisposeScope()
            use m = MaskedAutoencoder.Create({ small with Attention = AttentionKernel.Math }, 2L)
            let x = torch.randn([| 4L; 1L; 28L; 28L |], generator = gen 3)
            let full = (use g = gen 4 in m.Forward(x, g))
            Expect.equal (Precision.current ()) Float32 "fp32 outside a scope"
            let low =
                use _ = Precision.scope BFloat16
                Expect.equal (Precision.current ()) BFloat16 "bf16 inside the scope"
                (use _ = Precision.scope Float32 in Expect.equal (Precision.current ()) Float32 "scopes nest")
                Expect.equal (Precision.current ()) BFloat16 "an inner scope restores the outer precision"
                use g = gen 4
                m.Forward(x, g)
            Expect.equal (Precision.current ()) Float32 "fp32 again after the scope"
            Expect.equal low.Loss.dtype ScalarType.Float32 "the loss is fp32"
            Expect.equal low.Pred.dtype ScalarType.Float32 "predictions come back as fp32"
            let a, b = float (full.Loss.item<float32>()), float (low.Loss.item<float32>())
            Expect.isLessThan (abs (a - b) / a) 0.02 (sprintf "bf16 loss %g within 2%% of fp32 loss %g" b a)
            Expect.isFalse (same full.Pred low.Pred) "the products really ran in bfloat16 (results differ in the last bits)"
            low.Loss.backward()
            for struct (name, p) in m.named_parameters() do
                Expect.equal p.dtype ScalarType.Float32 (sprintf "%s stays fp32" name)
                if p.requires_grad then
                    Expect.equal p.grad.dtype ScalarType.Float32 (sprintf "%s's gradient is fp32" name)
                    Expect.isTrue (allFinite p.grad) (sprintf "%s's gradient is finite" name)
            expectArg "precision" "fp32" (fun () -> Precision.ofName "fp16") |> ignore
        }
        test "the seed decides the weights" {
            use a = MaskedAutoencoder.Create(small, 3L)
            use b = MaskedAutoencoder.Create(small, 3L)
            use c = MaskedAutoencoder.Create(small, 4L)
            let w (m: MaskedAutoencoder) = param m "blocks.1.mlp.fc1.weight"
            Expect.isTrue (same (w a) (w b)) "same seed, same weights"
            Expect.isFalse (same (w a) (w c)) "another seed, other weights"
        }
        test "features: cls token or mean of patch tokens, [N, D]" {
            use _ = torch.NewDisposeScope()
            use m = MaskedAutoencoder.Create(small, 0L)
            m.eval ()
            let x = torch.randn(3L, 1L, 28L, 28L)
            let z = m.Encode x
            Expect.equal (shape z) [ 3L; 17L; 32L ] "Encode [N, 1+L, D]"
            Expect.isTrue ((m.Features(x, false)).allclose(z.select(1L, 0L))) "cls feature"
            Expect.isTrue ((m.Features(x, true)).allclose(z.narrow(1L, 1L, 16L).mean([| 1L |]), atol = 1e-6)) "mean-pooled feature"
        }
    ]
