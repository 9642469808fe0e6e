/// The general core's parts beyond MAE's defaults: an encoder that reads mask tokens, the linear
/// head, extra objective terms, a given mask, structured strategies on the adapter's grid, and a
/// model of parts moved to another dtype.
module Mae.Tests.Unit.PartsTests

open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

let private images (seed: int) (n: int) =
    use g = gen seed
    torch.randn([| int64 n; 1L; 28L; 28L |], generator = g)

/// Hides the first `k` tokens of every sample: [n, 16] bool.
let private firstHidden (n: int) (k: int) =
    let rows = Array.init (n * 16) (fun i -> i % 16 < k)
    torch.tensor(rows, [| int64 n; 16L |])

let tests =
    testList "parts" [
        test "an encoder that reads mask tokens (AllWithMaskToken) sees every token and nothing of the hidden ones" {
            use _ = torch.NewDisposeScope()
            use m = MaskedAutoencoder.Create({ small with EncoderInput = AllWithMaskToken }, 3L)
            Expect.contains (names m) "enc_mask_token" "the encoder's mask token (GraphMAE's name)"
            Expect.isFalse (Array.contains "enc_mask_token" m.EncoderParameterNames) "not part of an encoder export"
            let x = images 1 2
            let hidden = firstHidden 2 12
            let enc = m.ForwardEncoder(x, hidden)
            Expect.equal (shape enc.Latent) [ 2L; 17L; 32L ] "cls + all 16 tokens"
            Expect.isTrue enc.AllTokens "all tokens, in order"
            // change the pixels of hidden patches only: the encoder's output must not move
            let changed = x.clone()
            changed.narrow(2L, 0L, 21L).add_(torch.tensor 5.0f) |> ignore // rows 0..20 = patch rows 0..2 = tokens 0..11
            let enc2 = m.ForwardEncoder(changed, hidden)
            Expect.isTrue (same enc.Latent enc2.Latent) "hidden tokens reach the encoder as the mask token only"
            let out = m.Forward(x, hidden)
            out.Loss.backward()
            Expect.isTrue (allFinite out.Loss) "finite loss"
            Expect.isGreaterThan ((param m "enc_mask_token").grad.abs().sum().item<float32>()) 0.0f "the mask token learns"
        }
        test "a linear head (DecoderDepth = 0) predicts every token from the encoder's codes" {
            use _ = torch.NewDisposeScope()
            use visible = MaskedAutoencoder.Create({ small with DecoderDepth = 0 }, 3L)
            let decoderNames = names visible |> List.filter (fun n -> not (Array.contains n visible.EncoderParameterNames))
            Expect.equal decoderNames [ "mask_token"; "decoder_pred.weight"; "decoder_pred.bias" ] "mask token of the encoder's width and decoder_pred"
            Expect.equal (shape (param visible "mask_token")) [ 1L; 1L; 32L ] "encoder width"
            use g = gen 2
            let out = visible.Forward(images 1 3, g)
            Expect.equal (shape out.Pred) [ 3L; 16L; 49L ] "[N, L, P]"
            use all = MaskedAutoencoder.Create({ small with DecoderDepth = 0; EncoderInput = AllWithMaskToken }, 3L)
            Expect.isFalse (List.contains "mask_token" (names all)) "no decoder mask token when the encoder reads them"
            let out = all.Forward(images 1 3, firstHidden 3 8)
            out.Loss.backward()
            Expect.isTrue (allFinite out.Loss) "finite loss"
        }
        test "extra objective terms add their weighted value to the reconstruction loss" {
            use _ = torch.NewDisposeScope()
            use plain = MaskedAutoencoder.Create(small, 4L)
            let objective =
                Objective.mse true
                |> Objective.withTerm "latent energy" 0.5 (fun i -> i.Latent.square().mean())
                |> Objective.withTerm "constant" 2.0 (fun _ -> torch.tensor 3.0f)
            torch.manual_seed 4L |> ignore
            use extra = new MaskedAutoencoder(small, objective)
            let x = images 2 2
            let hidden = firstHidden 2 12
            let a = plain.Forward(x, hidden)
            let b = extra.Forward(x, hidden)
            let latent = extra.ForwardEncoder(x, hidden).Latent
            let expected = a.Loss.item<float32>() + 0.5f * latent.square().mean().item<float32>() + 6.0f
            Expect.floatClose Accuracy.medium (float (b.Loss.item<float32>())) (float expected) "recon + 0.5 * energy + 2 * 3"
            Expect.isTrue (same a.Pred b.Pred) "the terms do not change the model"
        }
        test "a given mask hides exactly its tokens; a row hiding another count is refused" {
            use _ = torch.NewDisposeScope()
            use m = MaskedAutoencoder.Create(small, 5L)
            let hidden = firstHidden 2 10
            let out = m.Forward(images 3 2, hidden)
            Expect.isTrue (same out.Mask (hidden.to_type(ScalarType.Float32))) "the mask is the one given"
            let uneven = firstHidden 2 10
            uneven.[1L, 12L] <- torch.tensor true
            expectArg "hidden" "the same hidden count in every row" (fun () -> m.Forward(images 3 2, uneven)) |> ignore
        }
        test "tube and time-frequency masking run on the adapter's grid" {
            use _ = torch.NewDisposeScope()
            use tube = MaskedAutoencoder.Create({ small with Masking = Tube 0.5 }, 6L)
            use g = gen 7
            let out = tube.Forward(images 4 3, g)
            // the 4 x 4 grid as 4 slots (rows) of 4: the same columns hidden in every row
            let m = out.Mask.reshape(3L, 4L, 4L)
            Expect.isTrue (same m (m.narrow(1L, 0L, 1L).expand(3L, 4L, 4L))) "a tube: each row hides the same columns"
            Expect.isTrue (out.Mask.sum(1L).eq(torch.tensor 8.0f).all().item<bool>()) "4 slots x int(0.5 * 4) hidden"
            use tf = MaskedAutoencoder.Create({ small with Masking = TimeFrequency(0.5, 0.25) }, 6L)
            let out = tf.Forward(images 4 2, g)
            Expect.isTrue (allFinite out.Loss) "time-frequency masking trains"
            Expect.isTrue (out.Mask.sum(1L).eq(torch.tensor 10.0f).all().item<bool>()) "16 - 2 kept columns x 3 kept rows = 10 hidden"
        }
        test "a model of parts moved to float64 moves every part's tensors and still runs" {
            use _ = torch.NewDisposeScope()
            use m = MaskedAutoencoder.Create(small, 8L)
            m.``to``(ScalarType.Float64) |> ignore
            Expect.all (m.parameters()) (fun p -> p.dtype = ScalarType.Float64) "every registered parameter is float64"
            Expect.equal (m.Encoder.TokenPositions.dtype) ScalarType.Float64 "the encoder part's own positions moved"
            use g = gen 1
            let x = (images 5 2).to_type(ScalarType.Float64)
            let out = m.Forward(x, g)
            out.Loss.backward()
            Expect.isTrue (allFinite out.Loss) "runs in float64"
            Expect.isNotNull (param m "cls_token").grad "the registered cls_token is the one the encoder uses"
        }
    ]
