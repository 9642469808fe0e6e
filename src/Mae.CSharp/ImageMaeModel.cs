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

        /// <summary>Scalar reconstruction loss over the hidden patches.</summary>
        public Tensor Loss { get; }

        /// <summary>[N, L, ph*pw*C] predicted patches (per-patch normalised with norm-pix loss).</summary>
        public Tensor Predictions { get; }

        /// <summary>[N, L]: 1 where a patch was hidden, 0 where it was visible.</summary>
        public Tensor Mask { get; }
    }

    /// <summary>
    /// An image masked autoencoder (ViT encoder + small decoder). Made by <see cref="MaeBuilder"/>
    /// or loaded with <see cref="Load"/>; dispose it to free its native memory.
    /// </summary>
    public sealed class ImageMaeModel : IDisposable
    {
        internal ImageMaeModel(MaskedAutoencoder model) => Core = model;

        internal MaskedAutoencoder Core { get; }

        /// <summary>Input height and width in pixels.</summary>
        public int ImageHeight => Core.Config.Image.ImageSize.Item1;

        /// <summary>Input width in pixels.</summary>
        public int ImageWidth => Core.Config.Image.ImageSize.Item2;

        /// <summary>Input channels.</summary>
        public int Channels => Core.Config.Image.Channels;

        /// <summary>Tokens (patches) per image.</summary>
        public int NumPatches => Core.Config.NumTokens;

        /// <summary>Encoder width D: the size of one feature vector.</summary>
        public int FeatureSize => Core.Config.EmbedDim;

        /// <summary>Share of patches hidden during pretraining.</summary>
        public double MaskRatio => Core.Config.MaskRatio;

        /// <summary>The model's parameter names (the reference MAE checkpoint's keys).</summary>
        public IReadOnlyList<string> ParameterNames => Core.named_parameters().Select(p => p.name).ToArray();

        /// <summary>
        /// Pretraining pass: images [N, C, H, W] are patchified, masked (masks drawn from
        /// <paramref name="generator"/>), encoded, decoded and scored on the hidden patches.
        /// </summary>
        public ReconstructionOutput Forward(Tensor images, Generator generator)
        {
            ArgumentNullException.ThrowIfNull(images);
            ArgumentNullException.ThrowIfNull(generator);
            var o = Core.Forward(images, generator);
            return new ReconstructionOutput(o.Loss, o.Pred, o.Mask);
        }

        /// <summary>
        /// Encoder without masking: images [N, C, H, W] to features [N, D] — the cls token's output,
        /// or the mean of the patch tokens when <paramref name="meanPool"/> is true. The caller
        /// disposes the result.
        /// </summary>
        public Tensor Encode(Tensor images, bool meanPool = false)
        {
            ArgumentNullException.ThrowIfNull(images);
            using var _ = torch.no_grad();
            return Core.Features(images, meanPool);
        }

        /// <summary>
        /// Writes a PNG grid (original, masked input, reconstruction) of <paramref name="images"/>
        /// [K, C, H, W], with masks drawn from <paramref name="seed"/>. <paramref name="mean"/> and
        /// <paramref name="std"/> undo the input normalisation for display (MNIST: 0.1307, 0.3081).
        /// </summary>
        public void Reconstruct(string pngPath, Tensor images, long seed = 0, double mean = 0.0, double std = 1.0)
        {
            ArgumentException.ThrowIfNullOrEmpty(pngPath);
            ArgumentNullException.ThrowIfNull(images);
            using var g = new Generator((ulong)seed, torch.CPU);
            Visualize.reconstruction(pngPath, Core, g, Microsoft.FSharp.Core.FuncConvert.FromFunc<Tensor, Tensor>(x => x * std + mean), images);
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

        /// <summary>Loads a model saved by <see cref="Save"/> or by pretraining checkpoints.</summary>
        public static ImageMaeModel Load(string path, string? device = null)
        {
            ArgumentException.ThrowIfNullOrEmpty(path);
            var loaded = Checkpoint.loadModelOf("image", path, Runtime.device(device ?? ""));
            return new ImageMaeModel(loaded.Item1);
        }

        /// <inheritdoc />
        public void Dispose() => Core.Dispose();
    }
}
