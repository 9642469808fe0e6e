using System;
using static TorchSharp.torch;

namespace Mae
{
    /// <summary>
    /// An image masked autoencoder (ViT encoder + small decoder): a <see cref="MaeModel"/> whose
    /// samples are images [C, H, W]. Made by <see cref="MaeBuilder.ForImages(int, int, int)"/> or
    /// loaded with <see cref="Load"/>; dispose it to free its native memory.
    /// </summary>
    public sealed class ImageMaeModel : MaeModel
    {
        internal ImageMaeModel(MaskedAutoencoder model) : base(model) { }

        /// <summary>Input height in pixels.</summary>
        public int ImageHeight => Core.Config.Image.ImageSize.Item1;

        /// <summary>Input width in pixels.</summary>
        public int ImageWidth => Core.Config.Image.ImageSize.Item2;

        /// <summary>Input channels.</summary>
        public int Channels => Core.Config.Image.Channels;

        /// <summary>Tokens (patches) per image.</summary>
        public int NumPatches => Core.Config.NumTokens;

        /// <summary>
        /// Loads an image model saved by <see cref="MaeModel.Save"/> or by pretraining checkpoints;
        /// a checkpoint of another modality is an <see cref="ArgumentException"/> naming it.
        /// </summary>
        public static new ImageMaeModel Load(string path, string? device = null)
        {
            ArgumentException.ThrowIfNullOrEmpty(path);
            var loaded = Checkpoint.loadModelOf("image", path, Runtime.device(device ?? ""));
            return new ImageMaeModel(loaded.Item1);
        }
    }
}
