using System;
using System.Collections.Generic;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;

namespace Mae
{
    /// <summary>What one pretraining pass returns. The caller disposes the tensors.</summary>
    public sealed class ReconstructionOutput
    {
        internal ReconstructionOutput(Tensor loss, Tensor predictions, Tensor mask)
        {
            Loss = loss; Predictions = predictions; Mask = mask;
        }

        /// <summary>Scalar reconstruction loss over the hidden tokens.</summary>
        public Tensor Loss { get; }

        /// <summary>[N, L, P] predicted targets per token (images: P = ph*pw*C pixels of a patch, per-patch normalised with norm-pix loss).</summary>
        public Tensor Predictions { get; }

        /// <summary>[N, L]: 1 where a token was hidden, 0 where it was visible.</summary>
        public Tensor Mask { get; }
    }

    /// <summary>
    /// A masked autoencoder of any modality: the modality's input adapter, a transformer encoder and
    /// a small decoder. Made by <see cref="MaeBuilder"/> or loaded with <see cref="Load"/>; an image
    /// model is an <see cref="ImageMaeModel"/>. Dispose it to free its native memory.
    /// </summary>
    public class MaeModel : IDisposable
    {
        internal MaeModel(MaskedAutoencoder model) => Core = model;

        internal MaskedAutoencoder Core { get; }

        /// <summary>The modality's name, as checkpoints record it ("image").</summary>
        public string Modality => Core.Modality;

        /// <summary>Tokens per sample, L.</summary>
        public int NumTokens => Core.Config.NumTokens;

        /// <summary>Encoder width D: the size of one feature vector.</summary>
        public int FeatureSize => Core.Config.EmbedDim;

        /// <summary>Share of tokens hidden during pretraining.</summary>
        public double MaskRatio => Core.Config.MaskRatio;

        /// <summary>The model's parameter names (for images, the reference MAE checkpoint's keys).</summary>
        public IReadOnlyList<string> ParameterNames => Core.named_parameters().Select(p => p.name).ToArray();

        /// <summary>
        /// Pretraining pass on a batch of the modality's samples (images [N, C, H, W]): tokenized,
        /// masked (masks drawn from <paramref name="generator"/> by the model's masking strategy),
        /// encoded, decoded and scored on the hidden tokens. Throws <see cref="ArgumentException"/>
        /// naming a batch of another shape.
        /// </summary>
        public ReconstructionOutput Forward(Tensor batch, Generator generator)
        {
            ArgumentNullException.ThrowIfNull(batch);
            ArgumentNullException.ThrowIfNull(generator);
            var o = Core.Forward(batch, generator);
            return new ReconstructionOutput(o.Loss, o.Pred, o.Mask);
        }

        /// <summary>
        /// Pretraining pass with a given mask <paramref name="hidden"/> [N, L] (1 = hidden, 0 =
        /// visible; the same number of hidden tokens in every row).
        /// </summary>
        public ReconstructionOutput Forward(Tensor batch, Tensor hidden)
        {
            ArgumentNullException.ThrowIfNull(batch);
            ArgumentNullException.ThrowIfNull(hidden);
            var o = Core.Forward(batch, hidden);
            return new ReconstructionOutput(o.Loss, o.Pred, o.Mask);
        }

        /// <summary>
        /// Encoder without masking: a batch [N, ...] to features [N, D] — the cls token's output,
        /// or the mean of the other tokens when <paramref name="meanPool"/> is true. The caller
        /// disposes the result.
        /// </summary>
        public Tensor Encode(Tensor batch, bool meanPool = false)
        {
            ArgumentNullException.ThrowIfNull(batch);
            using var _ = torch.no_grad();
            return Core.Features(batch, meanPool);
        }

        /// <summary>
        /// Writes a PNG grid (original, masked input, reconstruction) of <paramref name="batch"/>
        /// [K, C, H, W], with masks drawn from <paramref name="seed"/>. <paramref name="mean"/> and
        /// <paramref name="std"/> undo the input normalisation for display (MNIST: 0.1307, 0.3081).
        /// </summary>
        public void Reconstruct(string pngPath, Tensor batch, long seed = 0, double mean = 0.0, double std = 1.0)
        {
            ArgumentException.ThrowIfNullOrEmpty(pngPath);
            ArgumentNullException.ThrowIfNull(batch);
            using var g = new Generator((ulong)seed, torch.CPU);
            Visualize.reconstruction(pngPath, Core, g, Microsoft.FSharp.Core.FuncConvert.FromFunc<Tensor, Tensor>(x => x * std + mean), batch);
        }

        /// <summary>Saves the whole model (encoder and decoder) and its configuration, atomically.</summary>
        public void Save(string path)
        {
            ArgumentException.ThrowIfNullOrEmpty(path);
            var meta = new Checkpoint.Meta(Core.Config, 0, 0, 0, new System.Text.Json.Nodes.JsonObject());
            Checkpoint.save(path, Core, null, null, meta);
        }

        /// <summary>Writes the encoder's weights alone (no decoder), atomically.</summary>
        public void ExportEncoder(string path)
        {
            ArgumentException.ThrowIfNullOrEmpty(path);
            Checkpoint.exportEncoder(path, Core);
        }

        /// <summary>
        /// Writes the model for PyTorch, atomically: <c>.pth</c>/<c>.pt</c>/<c>.bin</c> as
        /// <c>torch.save({'model': state_dict})</c> with the reference MAE's names, <c>.safetensors</c>
        /// with HuggingFace ViTMAE's names; <paramref name="encoderOnly"/> writes the encoder alone
        /// (as mae_pretrain_vit_*.pth). Image models only; another extension is an
        /// <see cref="ArgumentException"/> naming the path.
        /// </summary>
        public void ExportPyTorch(string path, bool encoderOnly = false)
        {
            ArgumentException.ThrowIfNullOrEmpty(path);
            PyTorch.export(path, Core, encoderOnly);
        }

        /// <summary>
        /// Loads a model of any modality saved by <see cref="Save"/> or by pretraining checkpoints
        /// (an image model comes back as an <see cref="ImageMaeModel"/>).
        /// </summary>
        public static MaeModel Load(string path, string? device = null)
        {
            ArgumentException.ThrowIfNullOrEmpty(path);
            var loaded = Checkpoint.loadModel(path, Runtime.device(device ?? ""));
            return Wrap(loaded.Item1);
        }

        internal static MaeModel Wrap(MaskedAutoencoder core) =>
            core.Modality == "image" ? new ImageMaeModel(core) : new MaeModel(core);

        /// <inheritdoc />
        public void Dispose()
        {
            Core.Dispose();
            GC.SuppressFinalize(this);
        }
    }
}
