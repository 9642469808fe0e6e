/// The learning-rate schedule and MAE's weight-decay rule.
module Mae.Tests.Unit.OptimTests

open System
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
            use m = MaskedAutoencoder.Create(small, 0L)
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
            use learned = MaskedAutoencoder.Create({ small with LearnedPosEmbed = true }, 0L)
            Expect.isFalse (Optim.decays "pos_embed" (param learned "pos_embed")) "learned pos_embed does not decay"
        }
        test "decayGroups puts each trainable parameter in exactly one group" {
            use m = MaskedAutoencoder.Create(small, 0L)
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
            use m = MaskedAutoencoder.Create(small, 0L)
            let groups = Optim.decayGroups 0.05 m |> Array.mapi (fun i g -> { g with LrScale = float (i + 1) })
            use opt = Optim.adamW 1.0 (0.9, 0.95) groups
            Optim.setLr opt groups 0.01
            let rates = [ for i in 0 .. opt.GroupCount - 1 -> opt.LearningRate i ]
            Expect.equal rates [ 0.01; 0.02 ] "lr x scale"
        }
        test "the packed AdamW follows torch.optim.AdamW step for step, with two groups and a changed rate" {
            use _ = torch.NewDisposeScope()
            use a = MaskedAutoencoder.Create(small, 3L)
            use b = MaskedAutoencoder.Create(small, 3L)
            let ga = Optim.decayGroups 0.05 a
            use ours = Optim.adamW 2e-3 (0.9, 0.95) ga
            let pgs =
                Optim.decayGroups 0.05 b
                |> Array.map (fun g -> Modules.AdamW.ParamGroup(g.Parameters, lr = 2e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = g.WeightDecay, amsgrad = false, maximize = false))
            use theirs = torch.optim.AdamW(pgs, lr = 2e-3, beta1 = 0.9, beta2 = 0.95)
            let pb = b.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> Map.ofSeq
            use g = gen 11
            for step in 1 .. 6 do
                if step = 4 then
                    Optim.setLr ours ga 5e-4
                    for pg in theirs.ParamGroups do pg.LearningRate <- 5e-4
                // the same gradients for both (of mixed scales, some near zero)
                for struct (name, p) in a.named_parameters() do
                    if p.requires_grad then
                        let grad = torch.randn(p.shape, generator = g) * torch.rand(p.shape, generator = g).pow((4.0).ToScalar())
                        p.grad <- grad.clone()
                        pb.[name].grad <- grad.clone()
                ours.Step()
                ours.ZeroGrad()
                theirs.step() |> ignore
                theirs.zero_grad()
            for struct (name, p) in a.named_parameters() do
                Expect.isTrue (p.allclose(pb.[name], rtol = 1e-5, atol = 1e-7)) (sprintf "%s after 6 steps" name)
                if p.requires_grad then Expect.isNull p.grad (sprintf "%s's gradient dropped by ZeroGrad" name)
            use fresh = MaskedAutoencoder.Create(small, 3L)
            Expect.isFalse (same (param a "blocks.0.mlp.fc1.weight") (param fresh "blocks.0.mlp.fc1.weight")) "the model's own parameters moved"
            Expect.equal ours.Steps 6L "six steps counted"
        }
        test "the packed AdamW's state round-trips: a restored optimizer continues identically" {
            use _ = torch.NewDisposeScope()
            let train (m: MaskedAutoencoder) (opt: Optim.AdamW) (steps: int list) =
                let x = torch.randn([| 4L; 1L; 28L; 28L |], generator = gen 2)
                for s in steps do
                    (use g = gen s in m.Forward(x, g).Loss).backward()
                    opt.Step()
                    opt.ZeroGrad()
            use a = MaskedAutoencoder.Create(small, 4L)
            use oa = Optim.adamW 1e-3 (0.9, 0.95) (Optim.decayGroups 0.05 a)
            train a oa [ 1; 2 ]
            use ms = new IO.MemoryStream()
            do (use w = new IO.BinaryWriter(ms, Text.Encoding.UTF8, true) in oa.Save w)
            use b = MaskedAutoencoder.Create(small, 5L)
            b.load_state_dict(a.state_dict()) |> ignore
            use ob = Optim.adamW 1e-3 (0.9, 0.95) (Optim.decayGroups 0.05 b)
            ms.Position <- 0L
            do (use r = new IO.BinaryReader(ms, Text.Encoding.UTF8, true) in ob.Load r)
            train a oa [ 3; 4 ]
            train b ob [ 3; 4 ]
            let pb = snapshot b
            for struct (name, p) in a.named_parameters() do
                Expect.isTrue (same p pb.[name]) (sprintf "%s bit-identical after resuming" name)
            use c = MaskedAutoencoder.Create({ small with EmbedDim = 64 }, 5L)
            use oc = Optim.adamW 1e-3 (0.9, 0.95) (Optim.decayGroups 0.05 c)
            ms.Position <- 0L
            expectExn<IO.InvalidDataException> "a state of another model" (fun () -> use r = new IO.BinaryReader(ms) in oc.Load r) |> ignore
            // the state TorchSharp's own AdamW writes (what checkpoints held before) is refused clearly
            let pgs = Optim.decayGroups 0.05 c |> Array.map (fun g -> Modules.AdamW.ParamGroup(g.Parameters, lr = 1e-3))
            use theirs = torch.optim.AdamW(pgs, lr = 1e-3)
            use old = new IO.MemoryStream()
            do (use w = new IO.BinaryWriter(old, Text.Encoding.UTF8, true) in theirs.save_state_dict w)
            old.Position <- 0L
            expectExn<IO.InvalidDataException> "TorchSharp's AdamW state" (fun () -> use r = new IO.BinaryReader(old) in oc.Load r) |> ignore
        }
        test "the packed AdamW rejects bad settings by name" {
            use m = MaskedAutoencoder.Create(small, 0L)
            let groups = Optim.decayGroups 0.05 m
            expectArg "lr" ">= 0" (fun () -> new Optim.AdamW(groups, -1.0, (0.9, 0.95), 1e-8) |> ignore) |> ignore
            expectArg "betas" "[0, 1)" (fun () -> new Optim.AdamW(groups, 1e-3, (1.0, 0.95), 1e-8) |> ignore) |> ignore
            expectArg "eps" "> 0" (fun () -> new Optim.AdamW(groups, 1e-3, (0.9, 0.95), 0.0) |> ignore) |> ignore
            expectArg "groups" "one group only" (fun () -> new Optim.AdamW(Array.append groups groups, 1e-3, (0.9, 0.95), 1e-8) |> ignore) |> ignore
        }
    ]
