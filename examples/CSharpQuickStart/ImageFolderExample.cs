// Pretraining on a folder of PNG/JPEG images in class folders, read on demand (the data need not
// fit in memory), then a linear probe. Run: CSharpQuickStart EPOCHS IMAGE-FOLDER
using Mae;

static class ImageFolderExample
{
    // README.md shows the lines between the markers, word for word (a test compares them).
    public static void Run(string folder, int epochs)
    {
        // <readme>
        var splits = MaeDataset.OpenImageFolder(folder); // DIR/train + DIR/val, or one class tree split 80/20
        var stats = splits.Train.Channels == 3 ? ChannelStatistics.ImageNet : ChannelStatistics.Of(splits.Train);
        using var mae = MaeBuilder.ForImages(imageSize: 64, patchSize: 8, channels: splits.Train.Channels).Build();
        var options = new PretrainerOptions
        {
            Epochs = epochs, BatchSize = 64, BaseLr = 1.5e-4, Workers = 2,
            Transform = ImageTransforms.Pretraining(64, 64, stats), // MAE's random resized crop + flip, per sample
        };
        Pretrainer.Pretrain(mae, splits.Train, options);
        var probe = Evaluation.LinearProbe(mae, splits.Train, splits.Test, splits.Train.ClassNames.Count,
            ImageTransforms.Evaluation(64, 64, stats));
        mae.ExportEncoder("encoder.bin");
        Console.WriteLine($"linear-probe accuracy {probe.TestAccuracy:F4} on {splits.Test.Count} images");
        // </readme>
    }
}
