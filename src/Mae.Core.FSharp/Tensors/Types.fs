/// Short names for the TorchSharp types every file uses. (Opening `torch` itself would shadow
/// F#'s `int64`/`float32` conversion functions with TorchSharp's scalar-type values.)
namespace Mae

type Tensor = TorchSharp.torch.Tensor
type Generator = TorchSharp.torch.Generator
type Device = TorchSharp.torch.Device
type ScalarType = TorchSharp.torch.ScalarType
