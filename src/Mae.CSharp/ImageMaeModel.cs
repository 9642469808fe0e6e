using System;
using TorchSharp;
using static TorchSharp.torch;

namespace Mae
{
    /// <summary>
    /// An image masked autoencoder, for C# callers. Wraps the F# core's
    /// <c>MaskedAutoencoderViT</c>; all logic lives there. Dispose it to free its native memory.
    /// </summary>
    public sealed class ImageMaeModel : IDisposable
    {
        private readonly MaskedAutoencoderViT _model;

        private ImageMaeModel(MaskedAutoencoderViT model) => _model = model;

        /// <summary>The preset names <see cref="FromPreset"/> accepts (tiny, base, large, huge).</summary>
        public static string[] PresetNames => (string[])MaeConfigModule.names.Clone();

        /// <summary>
        /// Creates a model from a preset with weights drawn from <paramref name="seed"/>.
        /// Throws <see cref="ArgumentException"/> naming <c>preset</c> for an unknown name.
        /// </summary>
        /// <param name="preset">tiny, base, large or huge.</param>
        /// <param name="seed">Seed of the initial weights.</param>
        /// <param name="device">Device for the weights; CPU when null.</param>
        public static ImageMaeModel FromPreset(string preset, long seed = 0, Device? device = null)
        {
            ArgumentNullException.ThrowIfNull(preset);
            var config = MaeConfigModule.ofName(preset);
            return new ImageMaeModel(MaskedAutoencoderViT.Create(config, seed, device));
        }

        /// <summary>The underlying F# model, for use with the core's training functions.</summary>
        public MaskedAutoencoderViT Core => _model;

        /// <summary>
        /// Pretraining pass: images [N, C, H, W] in, loss / predictions [N, L, P] / mask [N, L]
        /// (1 = hidden) out. Masks are drawn from <paramref name="generator"/>. The caller owns
        /// (disposes) the returned tensors.
        /// </summary>
        public MaeOutput Forward(Tensor images, Generator generator) => _model.Forward(images, generator);

        /// <summary>
        /// Encoder without masking: images [N, C, H, W] to one feature per image [N, D] (the cls
        /// token's output, or mean-pooled patch tokens when <paramref name="meanPool"/>).
        /// </summary>
        public Tensor Encode(Tensor images, bool meanPool = false) => _model.Features(images, meanPool);

        /// <inheritdoc />
        public void Dispose() => _model.Dispose();
    }
}
