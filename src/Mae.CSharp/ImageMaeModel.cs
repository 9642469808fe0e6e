using System;
using TorchSharp;
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
        /// Reads a PyTorch image MAE: facebookresearch/mae's <c>.pth</c> (<c>{'model': state_dict}</c>,
        /// full or encoder-only, e.g. mae_pretrain_vit_base.pth) or HuggingFace ViTMAE
        /// <c>.safetensors</c> (facebook/vit-mae-base). The configuration is read from the tensors'
        /// shapes; attention heads cannot be, so <paramref name="heads"/> and
        /// <paramref name="decoderHeads"/> (0: those of the preset of the same shape, else 64 and 32
        /// channels per head). An encoder-only file leaves the decoder at its initial weights. Throws
        /// <see cref="System.IO.FileNotFoundException"/>, <see cref="System.IO.InvalidDataException"/>
        /// naming a file that is not a state dict, and <see cref="ArgumentException"/> naming every
        /// tensor that is missing, extra or of another shape.
        /// </summary>
        public static ImageMaeModel FromPyTorch(string path, int heads = 0, int decoderHeads = 0, bool normPixLoss = true, string? device = null)
        {
            ArgumentException.ThrowIfNullOrEmpty(path);
            var (model, _) = PyTorch.importModel(path, null, heads, decoderHeads, Microsoft.FSharp.Core.FSharpOption<bool>.Some(normPixLoss)).ToValueTuple();
            try
            {
                if (device is not null) model.to(Runtime.device(device));
                return new ImageMaeModel(model);
            }
            catch
            {
                model.Dispose();
                throw;
            }
        }

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
