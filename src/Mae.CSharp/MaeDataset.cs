using System;
using System.Collections.Generic;
using TorchSharp;
using static TorchSharp.torch;

namespace Mae
{
    /// <summary>
    /// Samples read on demand by index: a folder of images read file by file (data larger than
    /// memory), or tensors held in memory. Pretraining, probes and k-NN read it through Mae's batch
    /// loader (seeded order per epoch, per-sample transforms, prefetch workers).
    /// </summary>
    public sealed class MaeDataset
    {
        internal MaeDataset(Data.IDataset core) => Core = core;

        internal Data.IDataset Core { get; }

        /// <summary>Number of samples.</summary>
        public int Count => Core.Count;

        /// <summary>Channels of every sample (images: 1 grey, 3 RGB).</summary>
        public int Channels => Core.Channels;

        /// <summary>Class names in label order: label k is <c>ClassNames[k]</c>.</summary>
        public IReadOnlyList<string> ClassNames => Core.ClassNames;

        /// <summary>Where sample <paramref name="index"/> comes from: its file, or "sample i of …".</summary>
        public string Describe(int index) => Core.Describe(index);

        /// <summary>
        /// Samples held in memory: <paramref name="inputs"/> [N, C, ...] (images [N, C, H, W]) and
        /// <paramref name="labels"/> [N] int64 (null for unlabelled data: every label 0). The
        /// tensors stay the caller's and must outlive the dataset. Batches are taken with one
        /// index_select when no transform is given.
        /// </summary>
        public static MaeDataset FromTensors(Tensor inputs, Tensor? labels = null)
        {
            ArgumentNullException.ThrowIfNull(inputs);
            if (labels is null)
                return new MaeDataset(new Data.InMemoryDataset(inputs, torch.zeros(inputs.shape[0], dtype: ScalarType.Int64), new[] { "unlabelled" }));
            return new MaeDataset(new Data.InMemoryDataset(inputs, labels));
        }

        /// <summary>
        /// A folder of PNG/JPEG images in class folders, torchvision's ImageFolder layout
        /// (<c>DIR/CLASS/*.png</c>): classes sorted by name, label = index; images read when a batch
        /// needs them, as [C, H, W] floats in [0, 1]. <paramref name="channels"/>: 1, 3, or 0 for
        /// those of the first image. Throws <see cref="System.IO.DirectoryNotFoundException"/> or
        /// <see cref="System.IO.InvalidDataException"/> naming a missing, empty or image-less folder.
        /// </summary>
        public static MaeDataset OpenImageClasses(string folder, int channels = 0)
        {
            ArgumentException.ThrowIfNullOrEmpty(folder);
            return new MaeDataset(Data.ImageFolder.openClasses(folder, channels));
        }

        /// <summary>
        /// Train and test splits of an image folder as users lay them out: <c>DIR/train/CLASS/*</c>
        /// with <c>DIR/val/CLASS/*</c> (ImageNet's layout; <c>test/</c> is read like <c>val/</c>), or
        /// one class tree split by a permutation drawn from <paramref name="seed"/>, with
        /// round(N × <paramref name="testFraction"/>) images in the test split.
        /// </summary>
        public static MaeDatasetSplits OpenImageFolder(string folder, double testFraction = 0.2, long seed = 0, int channels = 0)
        {
            ArgumentException.ThrowIfNullOrEmpty(folder);
            var s = Data.ImageFolder.openSplits(folder, testFraction, seed, channels);
            return new MaeDatasetSplits(new MaeDataset(s.Train), new MaeDataset(s.Val), s.Layout);
        }

        /// <summary>
        /// Moving-MNIST clips (Srivastava et al. 2015) generated on demand from MNIST digits as
        /// <see cref="ImageSplits.LoadMnist"/> or <see cref="ImageSplits.LoadIdxFolder"/> load them
        /// (normalised with MNIST's statistics; the clips hold pixel / 255 in [0, 1]):
        /// <paramref name="trainCount"/> clips from the training digits and
        /// <paramref name="testCount"/> from the test digits, each [1, frames, canvasSize,
        /// canvasSize] with <paramref name="digitsPerClip"/> digits (1 or 2) bouncing at 2–4 pixels
        /// per frame, labelled with the first digit's class. A clip depends only on the seed and its
        /// index (the test split uses <paramref name="seed"/> + 1). The digit tensors are copied;
        /// <paramref name="digits"/> may be disposed afterwards. Throws
        /// <see cref="ArgumentException"/> naming a bad count, frame count or canvas size.
        /// </summary>
        public static MaeDatasetSplits MovingMnist(ImageSplits digits, int trainCount = 20000, int testCount = 2000, int frames = 8,
            int canvasSize = 48, int digitsPerClip = 1, long seed = 0)
        {
            ArgumentNullException.ThrowIfNull(digits);
            MaeDataset Clips(ImageDataset set, int count, long s)
            {
                using var unit = set.Images * Data.Idx.mnistStd + Data.Idx.mnistMean;
                var labels = set.Labels ?? torch.zeros(set.Images.shape[0], dtype: ScalarType.Int64);
                var options = new Data.MovingMnistOptions(frames, canvasSize, digitsPerClip, Data.MovingMnistOptionsModule.defaults.Speed, count, s);
                return new MaeDataset(new Data.MovingMnistDataset(unit, labels, options));
            }
            return new MaeDatasetSplits(Clips(digits.Train, trainCount, seed), Clips(digits.Test, testCount, seed + 1), "Moving-MNIST");
        }

        /// <summary>
        /// A CSV file of multivariate series (read with CsvHelper) cut into windows of
        /// <paramref name="window"/> steps every <paramref name="stride"/> steps: each group's rows
        /// (<paramref name="groupColumn"/>; one series without it) split 70/10/20 in time order, or
        /// the <paramref name="testGroups"/> held out whole as the test split; every column
        /// standardised with the training rows' statistics; a window's label is its last step's
        /// (<paramref name="labelColumn"/>). Windows are [C, T] samples. Defaults: the first column
        /// is time, the value columns are the other numeric ones. Throws
        /// <see cref="System.IO.InvalidDataException"/> naming the file, row and column of a cell that
        /// is not a finite number (missing values and NaN are rejected), or a missing column.
        /// </summary>
        public static MaeSeriesSplits OpenSeriesCsv(string path, int window = 32, int stride = 1, string? timeColumn = null,
            IReadOnlyList<string>? columns = null, string? labelColumn = null, string? groupColumn = null, IReadOnlyList<string>? testGroups = null)
        {
            ArgumentException.ThrowIfNullOrEmpty(path);
            var csv = new Data.SeriesCsvOptions(timeColumn!, columns is null ? null! : [.. columns], labelColumn!, groupColumn!);
            return Windows(Data.SeriesCsv.read(path, csv), window, stride, testGroups);
        }

        /// <summary>
        /// vega-datasets' weather.csv (Seattle and New York, daily 2012–2015: precipitation,
        /// temp_max, temp_min, wind; labelled with the day's weather), fetched once with npm,
        /// checksum-verified and cached, as <see cref="OpenSeriesCsv"/> reads it.
        /// </summary>
        public static MaeSeriesSplits Weather(int window = 32, int stride = 1, Action<string>? log = null)
        {
            var path = Data.SeriesData.weatherCsv(Microsoft.FSharp.Core.FuncConvert.FromAction(log ?? (_ => { })));
            return Windows(Data.SeriesCsv.read(path, Data.SeriesData.weatherOptions), window, stride, null);
        }

        private static MaeSeriesSplits Windows(Data.SeriesTable table, int window, int stride, IReadOnlyList<string>? testGroups)
        {
            var options = new Data.SeriesWindowOptions(window, stride, 0, 0.7, 0.1, testGroups is null ? [] : [.. testGroups]);
            var s = Data.SeriesWindows.split(table, options);
            return new MaeSeriesSplits(new MaeDataset(s.Train.Windows), new MaeDataset(s.Val.Windows), new MaeDataset(s.Test.Windows),
                s.Columns, s.ClassNames);
        }
    }

    /// <summary>A train and a test split read on demand.</summary>
    public sealed class MaeDatasetSplits
    {
        internal MaeDatasetSplits(MaeDataset train, MaeDataset test, string layout)
        {
            Train = train; Test = test; Layout = layout;
        }

        /// <summary>The training split.</summary>
        public MaeDataset Train { get; }

        /// <summary>The test split (<c>val/</c> or <c>test/</c>, or the held-out share).</summary>
        public MaeDataset Test { get; }

        /// <summary>How the folder was read: its train/val layout, or the split of one class tree.</summary>
        public string Layout { get; }
    }

    /// <summary>Per-channel normalisation statistics, in the units of the samples (image folders: pixel / 255).</summary>
    public sealed class ChannelStatistics
    {
        /// <summary>One mean and one standard deviation (positive) per channel.</summary>
        public ChannelStatistics(IReadOnlyList<double> mean, IReadOnlyList<double> std)
        {
            ArgumentNullException.ThrowIfNull(mean);
            ArgumentNullException.ThrowIfNull(std);
            Mean = [.. mean];
            Std = [.. std];
        }

        /// <summary>Mean per channel.</summary>
        public IReadOnlyList<double> Mean { get; }

        /// <summary>Standard deviation per channel.</summary>
        public IReadOnlyList<double> Std { get; }

        /// <summary>ImageNet's RGB statistics (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225), MAE's default.</summary>
        public static ChannelStatistics ImageNet => FromCore(Data.Transforms.imageNet);

        /// <summary>Mean and standard deviation per channel over every sample of <paramref name="data"/> (one pass).</summary>
        public static ChannelStatistics Of(MaeDataset data)
        {
            ArgumentNullException.ThrowIfNull(data);
            return FromCore(Data.Transforms.statistics(data.Core));
        }

        internal static ChannelStatistics FromCore(Data.ChannelStats s) => new(s.Mean, s.Std);

        internal Data.ChannelStats ToCore() => new([.. Mean], [.. Std]);
    }

    /// <summary>
    /// MAE's per-sample image transforms, each given the sample's own <see cref="Random"/> by the
    /// loader so that a run is the same with any number of workers (main_pretrain.py,
    /// util/datasets.py of facebookresearch/mae).
    /// </summary>
    public static class ImageTransforms
    {
        /// <summary>
        /// Pretraining: random resized crop (scale 0.2–1, aspect 3/4–4/3, bicubic) to
        /// <paramref name="height"/>×<paramref name="width"/>, horizontal flip with probability 0.5, normalisation.
        /// </summary>
        public static Func<Random, Tensor, Tensor> Pretraining(int height, int width, ChannelStatistics statistics)
        {
            ArgumentNullException.ThrowIfNull(statistics);
            return Data.Transforms.forPretraining(height, width, statistics.ToCore());
        }

        /// <summary>
        /// Evaluation: resize the shorter side to size / 0.875, centre crop to
        /// <paramref name="height"/>×<paramref name="width"/>, normalisation.
        /// </summary>
        public static Func<Random, Tensor, Tensor> Evaluation(int height, int width, ChannelStatistics statistics)
        {
            ArgumentNullException.ThrowIfNull(statistics);
            return Data.Transforms.forEvaluation(height, width, statistics.ToCore());
        }
    }

    /// <summary>The windows of a CSV series: a training, validation and test split, in time order.</summary>
    public sealed class MaeSeriesSplits
    {
        internal MaeSeriesSplits(MaeDataset train, MaeDataset validation, MaeDataset test, string[] columns, string[] classNames)
        {
            Train = train; Validation = validation; Test = test; Columns = columns; ClassNames = classNames;
        }

        /// <summary>Windows of the first 70% of each group's rows.</summary>
        public MaeDataset Train { get; }
        /// <summary>Windows of the next 10%.</summary>
        public MaeDataset Validation { get; }
        /// <summary>Windows of the last 20% (or of the held-out groups).</summary>
        public MaeDataset Test { get; }
        /// <summary>The value columns, in channel order.</summary>
        public IReadOnlyList<string> Columns { get; }
        /// <summary>The label column's classes, sorted ("unlabelled" without one).</summary>
        public IReadOnlyList<string> ClassNames { get; }
    }
}
