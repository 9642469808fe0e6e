// Pretraining a series MAE (PatchTST-style: channel-independent segments) on windows of a CSV
// file, then a linear probe of the window's label from the frozen encoder.
// Run: CSharpQuickStart series EPOCHS [CSV]   (no CSV: vega-datasets' weather, fetched once)
using Mae;

static class SeriesExample
{
    // README.md shows the lines between the markers, word for word (a test compares them).
    public static void Run(MaeSeriesSplits series, int epochs)
    {
        // <readme>
        using var mae = MaeBuilder.ForTimeSeries(channels: series.Columns.Count, length: 32, segmentLength: 8)
            .Masking(MaskingKind.Random, 0.5) // the same segments of every channel of a window
            .Build();
        var options = new PretrainerOptions { Epochs = epochs, BatchSize = 64, BaseLr = 1e-3 };
        Pretrainer.Pretrain(mae, series.Train, options);
        var probe = Evaluation.LinearProbe(mae, series.Train, series.Test, series.ClassNames.Count, transform: null);
        Console.WriteLine($"series: linear-probe accuracy {probe.TestAccuracy:F4} on {series.Test.Count} windows");
        // </readme>
    }
}
