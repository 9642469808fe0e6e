// Pretrain a masked autoencoder on MNIST from C#, then probe its encoder.
// Usage: CSharpQuickStart [EPOCHS] [IDX-FOLDER]   (no folder: MNIST is fetched once and cached)
//        CSharpQuickStart EPOCHS IMAGE-FOLDER     (class folders of PNG/JPEG files: ImageFolderExample.cs)
//        CSharpQuickStart video EPOCHS [IDX-FOLDER [CLIPS]]   (Moving-MNIST clips: VideoExample.cs)
//        CSharpQuickStart series EPOCHS [CSV]    (windows of a CSV series, weather by default: SeriesExample.cs)
using Mae;

if (args.Length > 0 && args[0] == "series")
{
    var series = args.Length > 2
        ? MaeDataset.OpenSeriesCsv(args[2], window: 32, stride: 2, timeColumn: "t", labelColumn: "state", groupColumn: "site")
        : MaeDataset.Weather(window: 32, log: Console.WriteLine);
    SeriesExample.Run(series, args.Length > 1 ? int.Parse(args[1]) : 20);
    return;
}

if (args.Length > 0 && args[0] == "video")
{
    using var digits = args.Length > 2 ? ImageSplits.LoadIdxFolder(args[2]) : ImageSplits.LoadMnist(log: Console.WriteLine);
    VideoExample.Run(digits, args.Length > 1 ? int.Parse(args[1]) : 10, args.Length > 3 ? int.Parse(args[3]) : 20000);
    return;
}
int epochs = args.Length > 0 ? int.Parse(args[0]) : 5;
if (args.Length > 1 && !Directory.EnumerateFiles(args[1], "train-images*").Any())
{
    ImageFolderExample.Run(args[1], epochs);
    return;
}
using var data = args.Length > 1 ? ImageSplits.LoadIdxFolder(args[1]) : ImageSplits.LoadMnist(log: Console.WriteLine);

// README.md shows the lines from here to the end marker, word for word (a test compares them).
// <readme>

using var mae = MaeBuilder.ForImages(imageSize: 28, patchSize: 7, channels: 1)
    .MaskRatio(0.75)
    .Encoder(e => e.Width(128).Depth(4).Heads(4))
    .Decoder(d => d.Width(128).Depth(1).Heads(4))
    .NormPixLoss()
    .Seed(0)
    .Build();

var options = new PretrainerOptions { Epochs = epochs, BatchSize = Math.Min(256, data.Train.Count), BaseLr = 1e-3 };
var progress = new Progress<PretrainProgressInfo>(p =>
{
    if (p.Step % 100 == 0 || p.Step == p.TotalSteps)
        Console.WriteLine($"step {p.Step}/{p.TotalSteps}  loss {p.Loss:F4}  {p.ImagesPerSecond:F0} img/s");
});
var result = Pretrainer.Pretrain(mae, data.Train, options, progress);

var probe = Evaluation.LinearProbe(mae, data.Train, data.Test, classes: 10);
mae.Reconstruct("reconstruction.png", data.Test.Images.narrow(0, 0, 8), mean: ImageSplits.MnistMean, std: ImageSplits.MnistStd);
Console.WriteLine($"final loss {result.FinalLoss:F4}; linear-probe accuracy {probe.TestAccuracy:F4}; reconstruction.png written");
// </readme>
