open System.Threading
open TorchSharp
open Mae
open Mae.Data

let train, test = Mnist.load (printfn "%s") 0 0 // fetched once, checksum-verified, cached
let model = MaskedAutoencoder.Create(MaeConfig.tiny, 0L)
let options = { PretrainOptions.defaults with Epochs = 5; BaseLr = 1e-3 }
let result = Pretrain.run model train.Images options null ignore CancellationToken.None
let features (x: Tensor) = model.Features(x, false) // encoder only, no masking: [N, D]
let probe = Probe.linearOn Probe.defaultLinearOptions 10 features torch.CPU 512 train test
printfn "loss %.3f, linear-probe accuracy %.3f" result.FinalLoss probe.TestAccuracy
