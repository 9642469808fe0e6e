// Pretraining a VideoMAE on Moving-MNIST clips (real MNIST digits bouncing, generated on demand),
// then a linear probe of the digit from the frozen encoder and a strip of reconstructed frames.
// Run: CSharpQuickStart video EPOCHS [IDX-FOLDER [CLIPS]]
using Mae;

static class VideoExample
{
    // README.md shows the lines between the markers, word for word (a test compares them).
    public static void Run(ImageSplits digits, int epochs, int clipCount)
    {
        // <readme>
        var clips = MaeDataset.MovingMnist(digits, trainCount: clipCount, testCount: clipCount / 10); // [1, 8, 48, 48] each
        using var mae = MaeBuilder.ForVideo(frames: 8, frameSize: 48, tubeletSize: 2, patchSize: 8, channels: 1)
            .Masking(MaskingKind.Tube, 0.9) // VideoMAE: one spatial mask for every time slot
            .Build();
        var options = new PretrainerOptions { Epochs = epochs, BatchSize = 128, BaseLr = 1e-3, Workers = 2 };
        Pretrainer.Pretrain(mae, clips.Train, options);
        var probe = Evaluation.LinearProbe(mae, clips.Train, clips.Test, classes: 10, transform: null); // clips as read
        Console.WriteLine($"video: linear-probe accuracy {probe.TestAccuracy:F4} on {clips.Test.Count} clips");
        // </readme>
    }
}
