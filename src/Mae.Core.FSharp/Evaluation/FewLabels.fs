/// The point of pretraining, measured: with K labelled samples per class, the pretrained encoder
/// fine-tuned on them against the same classifier trained from scratch on them, and the linear
/// probe of the frozen pretrained encoder on them, all scored on the whole test split.
namespace Mae

open System
open System.Threading
open TorchSharp
open Mae.Data

type FewLabelsOptions =
    { /// K: labelled training samples per class (Subsets.perClass).
      LabelsPerClass: int
      /// Seed of the subset, of both classifiers' new weights (the same for both) and of the data order.
      Seed: int64
      /// Fine-tuning of both classifiers (BatchSize is capped at the subset's size; Seed and
      /// Transform are this record's).
      FineTune: FineTuneOptions
      /// The linear probe on the subset (BatchSize capped likewise).
      Probe: Probe.LinearProbeOptions
      /// Per-sample transform of training and test samples (e.g. Transforms.forEvaluation for an
      /// image folder; Transforms.identity for data already at the model's size and normalised).
      Transform: Func<Random, Tensor, Tensor>
      /// Samples per batch when evaluating.
      EvalBatchSize: int
      /// Threads reading batches ahead (0: none).
      Workers: int }

type FewLabelsResult =
    { LabelsPerClass: int
      /// K x classes.
      TrainSamples: int
      TestSamples: int
      /// Test accuracy of the pretrained encoder fine-tuned on the subset.
      Pretrained: float
      /// Test accuracy of the same classifier from random weights, trained the same way.
      Scratch: float
      /// Test accuracy of the linear probe (frozen pretrained encoder) on the subset.
      LinearProbe: float
      /// Mean fine-tuning loss per epoch, pretrained and from scratch.
      PretrainedLosses: float[]
      ScratchLosses: float[] }

module FewLabels =

    /// K = 10; fine-tuning for 50 epochs in batches of 32 at base lr 4e-3 per 256 (5e-4 at 32),
    /// warmup 5 epochs, layer decay 0.75, label smoothing 0.1; the probe for 100 epochs in batches
    /// of 32.
    let defaults =
        { LabelsPerClass = 10
          Seed = 0L
          FineTune = { FineTune.defaults with Epochs = 50; BatchSize = 32; BaseLr = 4e-3; WarmupEpochs = 5.0 }
          Probe = { Probe.defaultLinearOptions with Epochs = 100; BatchSize = 32 }
          Transform = Transforms.identity
          EvalBatchSize = 256
          Workers = 0 }

    /// Runs the comparison for `mae`'s encoder: the subset of `train` (K per class, Subsets.perClass),
    /// two classifiers of the MAE's configuration with the same new weights — one given the MAE's
    /// encoder (VitClassifier.LoadEncoder), one not — fine-tuned alike (FineTune.runOn), and the
    /// linear probe; each scored on all of `test`. The MAE is not changed. ArgumentException for a
    /// bad K (naming the smallest class) or options; the datasets' errors for unreadable samples.
    let run (mae: MaskedAutoencoder) (train: IDataset) (test: IDataset) (o: FewLabelsOptions) (cancel: CancellationToken) =
        Guard.notNull "mae" mae
        Guard.notNull "train" train
        Guard.notNull "test" test
        Guard.notNull "Transform" o.Transform
        Guard.positive "EvalBatchSize" o.EvalBatchSize
        let classes = train.ClassNames.Length
        let subset = Subsets.labelsPerClass o.LabelsPerClass o.Seed train
        let n = subset.Count
        let tune = { o.FineTune with BatchSize = min o.FineTune.BatchSize n; Seed = o.Seed; Transform = o.Transform; Workers = o.Workers }
        let evaluation = { LoaderOptions.evaluation o.EvalBatchSize o.Transform with Workers = o.Workers }
        let device = Runtime.deviceOf mae
        let classifier (pretrained: bool) =
            torch.manual_seed o.Seed |> ignore
            use clf = new VitClassifier(mae.Config, classes)
            clf.``to``(device) |> ignore
            if pretrained then clf.LoadEncoder mae
            let losses = FineTune.runOn clf subset tune cancel
            losses, FineTune.evaluateOn clf evaluation test
        let pretrainedLosses, pretrained = classifier true
        let scratchLosses, scratch = classifier false
        let wasTraining = mae.training
        mae.eval ()
        let probe =
            Probe.linearOnData { o.Probe with BatchSize = min o.Probe.BatchSize n; Seed = o.Seed } classes
                (fun x -> mae.Features(x, false)) device evaluation subset test
        if wasTraining then mae.train ()
        { LabelsPerClass = o.LabelsPerClass
          TrainSamples = n
          TestSamples = test.Count
          Pretrained = pretrained
          Scratch = scratch
          LinearProbe = probe.TestAccuracy
          PretrainedLosses = pretrainedLosses
          ScratchLosses = scratchLosses }
