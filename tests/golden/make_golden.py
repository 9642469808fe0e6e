#!/usr/bin/python3
"""Golden values for Mae's image MAE, from a re-implementation of the reference model.

The model below follows facebookresearch/mae's `models_mae.py` (MaskedAutoencoder) stage by
stage: patchify, patch embed (a strided Conv2d), fixed 2D sin-cos positions (`util/pos_embed.py`,
cls row zeros), random_masking (noise -> argsort -> ids_restore, len_keep = int(L * (1 - r))),
encoder (cls token, pre-norm ViT blocks as timm's Block, final norm), decoder (decoder_embed,
mask tokens, unshuffle, decoder_pos_embed, decoder_blocks, decoder_norm, decoder_pred) and the
loss (optional norm_pix_loss, mean over removed patches). Parameter names are the reference's
`named_parameters()` keys. The one change: random_masking takes its noise as an argument, so that
the noise can be written out and the same mask applied in Mae.

Writes tests/fixtures/golden/<case>/ (manifest.json + raw little-endian tensors) and
tests/fixtures/golden/keep_counts.json. Run with /usr/bin/python3 (PyTorch 1.13, numpy); see
tests/golden/README.md.
"""

import argparse
import json
import os
import shutil

import numpy as np
import torch
import torch.nn as nn

# ---- positions (util/pos_embed.py) ----


def sincos_1d(dim, positions):
    """positions [M] -> [M, dim]: [sin(pos * omega), cos(pos * omega)], omega_k = 10000^(-k/(dim/2))."""
    assert dim % 2 == 0
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.outer(positions.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim, grid_size, cls_token):
    """[(1+) g*g, dim]: first half encodes the column (w) index, second half the row (h) index."""
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)  # w first, as the reference
    emb = np.concatenate([sincos_1d(dim // 2, grid[0]), sincos_1d(dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return emb


# ---- timm pieces (PatchEmbed, Attention, Mlp, Block) ----


class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):  # [N, C, H, W] -> [N, L, D]
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # [N, L, D] -> [N, L, D]
        n, l, d = x.shape
        qkv = self.qkv(x).reshape(n, l, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, l, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block: x + attn(norm1(x)), then + mlp(norm2(x)); LayerNorm eps 1e-6."""

    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# ---- the MAE (models_mae.py) ----


class MaskedAutoencoder(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim, depth, num_heads,
                 decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio, norm_pix_loss):
        super().__init__()
        self.in_chans = in_chans
        # encoder
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans, bias=True)
        self.norm_pix_loss = norm_pix_loss
        self.initialize_weights()

    def initialize_weights(self):
        """The reference's init (sin-cos tables, xavier, N(0, 0.02) tokens), then every trainable
        tensor is moved by N(0, 0.05) noise so that biases and norms are not the trivial 0 and 1."""
        grid = int(self.patch_embed.num_patches ** 0.5)
        self.pos_embed.data.copy_(torch.from_numpy(sincos_2d(self.pos_embed.shape[-1], grid, True)).float().unsqueeze(0))
        self.decoder_pos_embed.data.copy_(
            torch.from_numpy(sincos_2d(self.decoder_pos_embed.shape[-1], grid, True)).float().unsqueeze(0))
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)
        with torch.no_grad():
            for p in self.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.05)

    def patchify(self, imgs):  # [N, C, H, W] -> [N, L, p*p*C]
        p = self.patch_embed.patch_size
        assert imgs.shape[2] == imgs.shape[3] and imgs.shape[2] % p == 0
        h = w = imgs.shape[2] // p
        x = imgs.reshape(imgs.shape[0], self.in_chans, h, p, w, p)
        x = torch.einsum('nchpwq->nhwpqc', x)
        return x.reshape(imgs.shape[0], h * w, p * p * self.in_chans)

    def random_masking(self, x, mask_ratio, noise):
        """x [N, L, D], noise [N, L] -> visible [N, keep, D], mask [N, L] (1 = removed), ids_restore [N, L]."""
        n, l, d = x.shape
        len_keep = int(l * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)  # small noise = keep
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones([n, l])
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask, ids_restore

    def forward_encoder(self, imgs, mask_ratio, noise):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls_tokens = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls_tokens, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def encode_all(self, imgs):
        """The encoder without masking: [N, C, H, W] -> [N, 1+L, D]."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        cls_tokens = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls_tokens, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, x, ids_restore):  # [N, 1+keep, D] -> [N, L, p*p*C]
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def forward_loss(self, imgs, pred, mask):
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, torch's default
            target = (target - mean) / (var + 1.e-6) ** .5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs, mask_ratio, noise):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask, latent, ids_restore


# ---- the cases ----

WIDTHS = dict(embed_dim=32, depth=2, num_heads=4, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
              mlp_ratio=4.0)

CASES = [
    dict(name='rgb32-p8-normpix', img_size=32, patch_size=8, in_chans=3, mask_ratio=0.75, norm_pix_loss=True,
         batch=2, seed=1),
    dict(name='grey28-p7-raw', img_size=28, patch_size=7, in_chans=1, mask_ratio=0.75, norm_pix_loss=False,
         batch=3, seed=2),
    # L = 100 at 0.9: the reference keeps int(100 * (1 - 0.9)) = int(9.999999999999998) = 9 tokens
    dict(name='rgb40-p4-mask90', img_size=40, patch_size=4, in_chans=3, mask_ratio=0.9, norm_pix_loss=True,
         batch=2, seed=3),
]

# gradients written out (besides every weight and output)
GRAD_NAMES = ['patch_embed.proj.weight', 'patch_embed.proj.bias', 'cls_token', 'blocks.0.attn.qkv.weight',
              'blocks.0.attn.qkv.bias', 'blocks.0.norm1.weight', 'blocks.1.mlp.fc2.weight', 'norm.weight',
              'norm.bias', 'decoder_embed.weight', 'mask_token', 'decoder_blocks.0.attn.proj.weight',
              'decoder_norm.weight', 'decoder_pred.weight', 'decoder_pred.bias']


def write_tensor(folder, file, t):
    """Raw little-endian bytes of t (float32 or int64), C order; returns the manifest entry."""
    a = t.detach().cpu().contiguous().numpy()
    dtype = {np.dtype(np.float32): '<f4', np.dtype(np.int64): '<i8'}[a.dtype]
    with open(os.path.join(folder, file), 'wb') as f:
        f.write(a.astype(dtype).tobytes(order='C'))
    return dict(file=file, dtype=str(a.dtype), shape=list(a.shape))


# ---- the PyTorch world's files: the reference's torch.save checkpoints, HuggingFace ViTMAE safetensors ----

# the cases that also get a reference-shaped .pth (full and encoder-only) and a ViTMAE-named safetensors file
FILE_CASES = ['rgb32-p8-normpix', 'grey28-p7-raw']


def is_decoder(name):
    return name.startswith('decoder_') or name == 'mask_token'


def hf_layer(inner):
    """A timm Block's parameter name -> HuggingFace ViTMAELayer's (transformers' ViTMAE layout)."""
    for ref, hf in [('norm1.', 'layernorm_before.'), ('attn.proj.', 'attention.output.dense.'),
                    ('norm2.', 'layernorm_after.'), ('mlp.fc1.', 'intermediate.dense.'), ('mlp.fc2.', 'output.dense.')]:
        if inner.startswith(ref):
            return hf + inner[len(ref):]
    raise KeyError(inner)


HF_TOP = {'cls_token': 'vit.embeddings.cls_token', 'pos_embed': 'vit.embeddings.position_embeddings',
          'patch_embed.proj.weight': 'vit.embeddings.patch_embeddings.projection.weight',
          'patch_embed.proj.bias': 'vit.embeddings.patch_embeddings.projection.bias',
          'norm.weight': 'vit.layernorm.weight', 'norm.bias': 'vit.layernorm.bias',
          'mask_token': 'decoder.mask_token', 'decoder_pos_embed': 'decoder.decoder_pos_embed'}


def to_vitmae(state_dict):
    """The reference's state dict in ViTMAEForPreTraining's names; each qkv split into query, key, value."""
    out = {}
    for name, t in state_dict.items():
        if name in HF_TOP:
            out[HF_TOP[name]] = t
        elif name.split('.')[0] in ('decoder_embed', 'decoder_norm', 'decoder_pred'):
            out['decoder.' + name] = t
        else:
            kind, index, inner = name.split('.', 2)
            layer = {'blocks': 'vit.encoder.layer.', 'decoder_blocks': 'decoder.decoder_layers.'}[kind] + index + '.'
            if inner.startswith('attn.qkv.'):
                for part, piece in zip(['query', 'key', 'value'], t.chunk(3, dim=0)):
                    out[layer + 'attention.attention.' + part + '.' + inner[len('attn.qkv.'):]] = piece
            else:
                out[layer + hf_layer(inner)] = t
    return out


def write_safetensors(path, tensors):
    """float32 tensors in the safetensors layout (huggingface/safetensors): an 8-byte little-endian
    header size, a JSON header {name: {dtype, shape, data_offsets}}, padded with spaces to a
    multiple of 8, then the raw bytes. Written here because Debian 12 has no python3-safetensors."""
    header, blobs, offset = {'__metadata__': {'format': 'pt'}}, [], 0
    for name in sorted(tensors):
        a = tensors[name].detach().contiguous().numpy().astype('<f4')
        b = a.tobytes(order='C')
        header[name] = dict(dtype='F32', shape=list(a.shape), data_offsets=[offset, offset + len(b)])
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(',', ':')).encode('utf-8')
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(len(h).to_bytes(8, 'little'))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_pytorch_files(folder, model):
    """reference.pth: torch.save({'model': state_dict}) as facebookresearch/mae's checkpoints;
    reference-encoder.pth: the same without the decoder (as mae_pretrain_vit_*.pth);
    vitmae.safetensors: the whole model in HuggingFace ViTMAE's names."""
    sd = model.state_dict()
    torch.save({'model': sd}, os.path.join(folder, 'reference.pth'))
    torch.save({'model': {k: v for k, v in sd.items() if not is_decoder(k)}}, os.path.join(folder, 'reference-encoder.pth'))
    write_safetensors(os.path.join(folder, 'vitmae.safetensors'), to_vitmae(sd))


def make_case(root, case):
    folder = os.path.join(root, case['name'])
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    torch.manual_seed(case['seed'])
    model = MaskedAutoencoder(case['img_size'], case['patch_size'], case['in_chans'],
                                 norm_pix_loss=case['norm_pix_loss'], **WIDTHS)
    n, c, s = case['batch'], case['in_chans'], case['img_size']
    num_patches = model.patch_embed.num_patches
    imgs = torch.randn(n, c, s, s)
    noise = torch.rand(n, num_patches)

    loss, pred, mask, latent, ids_restore = model(imgs, case['mask_ratio'], noise)
    loss.backward()
    with torch.no_grad():
        encoded = model.encode_all(imgs)

    params = dict(model.named_parameters())
    weights = {name: write_tensor(folder, 'w.%s.bin' % name, p) for name, p in params.items()}
    grads = {name: write_tensor(folder, 'grad.%s.bin' % name, params[name].grad) for name in GRAD_NAMES}
    manifest = dict(
        case=case['name'],
        source='tests/golden/make_golden.py (facebookresearch/mae models_mae.py, re-implemented)',
        config=dict(image_size=s, patch_size=case['patch_size'], in_chans=c, embed_dim=WIDTHS['embed_dim'],
                    depth=WIDTHS['depth'], num_heads=WIDTHS['num_heads'],
                    decoder_embed_dim=WIDTHS['decoder_embed_dim'], decoder_depth=WIDTHS['decoder_depth'],
                    decoder_num_heads=WIDTHS['decoder_num_heads'], mlp_ratio=WIDTHS['mlp_ratio'],
                    mask_ratio=case['mask_ratio'], norm_pix_loss=case['norm_pix_loss'], batch=n,
                    num_patches=num_patches, len_keep=int(num_patches * (1 - case['mask_ratio'])),
                    seed=case['seed']),
        weights=weights,
        inputs=dict(imgs=write_tensor(folder, 'imgs.bin', imgs), noise=write_tensor(folder, 'noise.bin', noise)),
        expected=dict(
            loss=write_tensor(folder, 'loss.bin', loss),
            pred=write_tensor(folder, 'pred.bin', pred),
            mask=write_tensor(folder, 'mask.bin', mask),
            ids_restore=write_tensor(folder, 'ids_restore.bin', ids_restore),
            latent=write_tensor(folder, 'latent.bin', latent),
            encoded=write_tensor(folder, 'encoded.bin', encoded)),
        grads=grads)
    if case['name'] in FILE_CASES:
        write_pytorch_files(folder, model)
        manifest['pytorch_files'] = ['reference.pth', 'reference-encoder.pth', 'vitmae.safetensors']
    with open(os.path.join(folder, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1)
        f.write('\n')
    print('%s: L = %d, keep = %d, loss = %.6f' % (case['name'], num_patches, manifest['config']['len_keep'],
                                                   loss.item()))


# ---- kept counts ----

RATIOS = sorted(set([k / 20 for k in range(1, 20)] + [0.75, 0.8, 0.9]))
TOKENS = list(range(1, 257))


def make_keep_counts(root):
    """MAE's random_masking keeps int(L * (1 - r)); VideoMAE's TubeMaskingGenerator hides
    int(r * S) per frame and keeps S - int(r * S). Python float arithmetic, as the references."""
    counts = dict(
        source='tests/golden/make_golden.py',
        ratios=RATIOS,
        tokens=TOKENS,
        mae_keep_rule='int(L * (1 - r))  # facebookresearch/mae models_mae.py random_masking',
        mae_keep=[[int(l * (1 - r)) for r in RATIOS] for l in TOKENS],
        tube_hidden_rule='int(r * S)  # MCG-NJU/VideoMAE masking_generator.py TubeMaskingGenerator, per frame',
        tube_hidden_per_slot=[[int(r * s) for r in RATIOS] for s in TOKENS])
    with open(os.path.join(root, 'keep_counts.json'), 'w') as f:
        json.dump(counts, f, separators=(',', ':'))
        f.write('\n')


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=os.path.join(here, '..', 'fixtures', 'golden'),
                        help='output folder (default: tests/fixtures/golden)')
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    for case in CASES:
        make_case(args.out, case)
    make_keep_counts(args.out)


if __name__ == '__main__':
    main()
