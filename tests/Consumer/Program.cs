// A fresh C# program that uses Mae only through the NuGet packages in a local folder feed
// (build.sh writes its project file and NuGet.config). It pretrains for a few steps on the
// committed MNIST fixture and checks that the loss is finite.
using Mae;

if (args.Length != 1) { Console.Error.WriteLine("usage: Consumer IDX-FOLDER"); return 2; }
using var data = ImageSplits.LoadIdxFolder(args[0], trainLimit: 256, testLimit: 64);
using var mae = MaeBuilder.ForImages(imageSize: 28, patchSize: 7, channels: 1)
    .Encoder(e => e.Width(32).Depth(1).Heads(2))
    .Decoder(d => d.Width(32).Depth(1).Heads(2))
    .Seed(0)
    .Build();
var result = Pretrainer.Pretrain(mae, data.Train, new PretrainerOptions { Epochs = 1, BatchSize = 64, BaseLr = 1e-3 });
var ok = result.Steps == 4 && double.IsFinite(result.FinalLoss);
Console.WriteLine($"consumer: {result.Steps} steps, final loss {result.FinalLoss:F4} ({(ok ? "ok" : "FAILED")})");
return ok ? 0 : 1;
