/// The learning-rate schedule and MAE's weight-decay rule.
module Mae.Tests.Unit.OptimTests

open Expecto
open TorchSharp
open Mae
open Mae.Tests.Unit.Common

let private lr, minLr, warmup, total = 1e-3, 1e-5, 10, 100
let private sched = Optim.scheduledLr lr minLr warmup total

let tests =
    testList "optimizer" [
        test "scheduledLr: 0 at the start, linear warmup, peak at warmup end, minLr at the end" {
            Expect.equal (sched 0) 0.0 "0 at it = 0"
            for it in 1 .. warmup do
                Expect.floatClose Accuracy.veryHigh (sched it) (lr * float it / float warmup) (sprintf "linear at %d" it)
            Expect.floatClose Accuracy.veryHigh (sched warmup) lr "peak at the end of warmup"
            Expect.floatClose Accuracy.veryHigh (sched total) minLr "minLr at total"
            Expect.floatClose Accuracy.veryHigh (sched (total + 50)) minLr "stays at minLr after total"
            // half-cycle cosine: halfway between warmup and total it is the midpoint of lr and minLr
            Expect.floatClose Accuracy.veryHigh (sched 55) ((lr + minLr) / 2.0) "cosine midpoint"
            let after = [ for it in warmup .. total -> sched it ]
            for a, b in List.pairwise after do
                Expect.isLessThan b a "strictly decreasing after warmup"
            Expect.all [ 0 .. total ] (fun it -> sched it <= lr) "never above the peak"
        }
        test "scheduledLr without warmup starts at the peak" {
            Expect.floatClose Accuracy.veryHigh (Optim.scheduledLr lr 0.0 0 10 0) lr "peak at it = 0"
            Expect.floatClose Accuracy.veryHigh (Optim.scheduledLr lr 0.0 0 10 10) 0.0 "0 at total"
        }
        test "scaledLr is MAE's linear scaling rule" {
            Expect.floatClose Accuracy.veryHigh (Optim.scaledLr 1.5e-4 4096) 2.4e-3 "1.5e-4 x 4096 / 256"
        }
        test "decays: matrices and kernels yes; biases, norms, tokens and positional tables no" {
            use m = MaskedAutoencoderViT.Create(small, 0L)
            let decays name = Optim.decays name (param m name)
            for name in [ "patch_embed.proj.weight"; "blocks.0.attn.qkv.weight"; "blocks.1.mlp.fc2.weight"
                          "decoder_embed.weight"; "decoder_blocks.0.attn.proj.weight"; "decoder_pred.weight" ] do
                Expect.isTrue (decays name) (sprintf "%s decays" name)
            for name in [ "patch_embed.proj.bias"; "blocks.0.attn.qkv.bias"; "blocks.0.norm1.weight"; "blocks.0.norm2.bias"
                          "norm.weight"; "norm.bias"; "decoder_norm.weight"; "decoder_pred.bias"
                          "cls_token"; "mask_token"; "pos_embed"; "decoder_pos_embed" ] do
                Expect.isFalse (decays name) (sprintf "%s does not decay" name)
            for struct (name, p) in m.named_parameters() do
                if p.ndim < 2L then Expect.isFalse (Optim.decays name p) (sprintf "rank-1 %s does not decay" name)
            // the learned tables are rank 3 and trainable, but still positional tables
            use learned = MaskedAutoencoderViT.Create({ small with LearnedPosEmbed = true }, 0L)
            Expect.isFalse (Optim.decays "pos_embed" (param learned "pos_embed")) "learned pos_embed does not decay"
        }
        test "decayGroups puts each trainable parameter in exactly one group" {
            use m = MaskedAutoencoderViT.Create(small, 0L)
            let groups = Optim.decayGroups 0.05 m
            Expect.equal groups.Length 2 "decay and no-decay"
            let handles (g: Optim.Group) = g.Parameters |> Array.map (fun p -> p.Handle)
            let all = groups |> Array.collect handles
            Expect.equal all.Length (Array.distinct all).Length "no parameter twice"
            let trainable =
                m.named_parameters() |> Seq.filter (fun struct (_, p) -> p.requires_grad) |> Seq.map (fun struct (_, p) -> p.Handle) |> Set.ofSeq
            Expect.equal (Set.ofArray all) trainable "every trainable parameter, nothing fixed"
            Expect.isFalse (Set.contains (param m "pos_embed").Handle (Set.ofArray all)) "the fixed table is not optimised"
            let byName = m.named_parameters() |> Seq.map (fun struct (n, p) -> p.Handle, n) |> Map.ofSeq
            for g in groups do
                for p in g.Parameters do
                    let name = byName.[p.Handle]
                    Expect.equal g.WeightDecay (if Optim.decays name p then 0.05 else 0.0) (sprintf "%s's weight decay" name)
                    Expect.equal g.LrScale 1.0 "no lr scaling"
        }
        test "setLr sets every group's rate times its scale" {
            use m = MaskedAutoencoderViT.Create(small, 0L)
            let groups = Optim.decayGroups 0.05 m |> Array.mapi (fun i g -> { g with LrScale = float (i + 1) })
            use opt = Optim.adamW 1.0 (0.9, 0.95) groups
            Optim.setLr opt groups 0.01
            let rates = opt.ParamGroups |> Seq.map (fun g -> g.LearningRate) |> List.ofSeq
            Expect.equal rates [ 0.01; 0.02 ] "lr x scale"
        }
    ]
