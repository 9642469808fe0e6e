/// Forecasting with a pretrained series encoder (PatchTST's flatten head, on frozen features) and
/// the baselines it must beat: the last value repeated, and a DLinear-style linear model.
namespace Mae

open System
open TorchSharp
open TorchSharp.Modules

open type TorchSharp.torch.nn

/// Forecast errors on a split, in the units of the windows (standardised with the training
/// split's statistics): mean squared and mean absolute error over every channel and step.
type ForecastErrors = { Mse: float; Mae: float }

type ForecastOptions =
    { /// Steps predicted after each window.
      Horizon: int
      Epochs: int
      BatchSize: int
      /// AdamW learning rate.
      Lr: float
      WeightDecay: float
      /// Seed of the head's weights and the data order.
      Seed: int64 }

module ForecastOptions =
    let defaults = { Horizon = 7; Epochs = 30; BatchSize = 64; Lr = 1e-3; WeightDecay = 1e-4; Seed = 0L }

/// The frozen model a head reads, held outside the head's own modules (a Module field would be
/// registered as the head's submodule, moved and disposed with it).
type private FrozenEncoder = { Model: MaskedAutoencoder }

/// PatchTST's flatten head (FlattenHead in PatchTST_self_supervised): the encoder's L segment
/// tokens, unmasked, flattened to L*D, then one linear map to the horizon (per channel when the
/// model is channel-independent; to H*C at once when channel-mixed); with RevIN the forecast is
/// mapped back through the inverse normalisation of the window's own statistics. The encoder is
/// the model's, kept frozen: only `head.*` trains.
type FlattenHead(model: MaskedAutoencoder, horizon: int) as this =
    inherit Module<Tensor, Tensor>("FlattenHead")
    let series = model.Config.Series
    let frozen = { Model = model }
    let l = int64 series.NumPatches
    let perRow = if series.ChannelIndependent then 1L else int64 series.Channels
    let head = Linear(l * int64 model.Config.EmbedDim, int64 horizon * perRow)
    do
        Guard.positive "horizon" horizon
        this.RegisterComponents()

    /// The head's parameters (what trains).
    member _.HeadParameters = head.parameters()

    /// Windows x [N, C, T] -> forecasts [N, C, H].
    override _.forward(x: Tensor) =
        let model = frozen.Model
        let z =
            use _ = torch.no_grad()
            let z = model.Encode x
            let extra = model.Encoder.Extra
            z.narrow(1L, extra, l).flatten(1L) // [rows, L*D]
        let out = head.forward z
        let n, c, h = x.shape.[0], int64 series.Channels, int64 horizon
        let forecast = if series.ChannelIndependent then out.reshape(n, c, h) else out.reshape(n, h, c).permute(0L, 2L, 1L)
        match (model.Adapter :?> SeriesAdapter).RevIN with
        | null -> forecast
        | revin ->
            let mean, stdev = revin.Statistics x
            revin.Denormalise(forecast, mean, stdev)

/// DLinear (Zeng et al. 2023), the linear baseline: the window split into a trend (moving average
/// of `kernel` steps, ends padded by repetition) and the rest, each mapped by one linear layer
/// T -> H shared by every channel, the two forecasts summed.
type DLinear(length: int, horizon: int, kernel: int) as this =
    inherit Module<Tensor, Tensor>("DLinear")
    let trend = Linear(int64 length, int64 horizon)
    let seasonal = Linear(int64 length, int64 horizon)
    let k = (let k0 = max 1 (min kernel length) in if k0 % 2 = 0 then k0 - 1 else k0) // odd, at most the window
    do this.RegisterComponents()

    /// x [N, C, T] -> (trend, remainder), each [N, C, T].
    member _.Decompose(x: Tensor) =
        let pad = int64 ((k - 1) / 2)
        let t = x.shape.[2]
        let padded =
            if pad = 0L then x
            else torch.cat([| x.narrow(2L, 0L, 1L).expand(-1L, -1L, pad); x; x.narrow(2L, t - 1L, 1L).expand(-1L, -1L, pad) |], 2L)
        let avg = padded.unfold(2L, int64 k, 1L).mean([| -1L |])
        avg, x - avg

    override this.forward(x: Tensor) =
        let tr, rest = this.Decompose x
        trend.forward tr + seasonal.forward rest

module Forecast =

    let private errors (pred: Tensor) (future: Tensor) =
        use d = pred - future
        { Mse = d.square().mean().item<float32>() |> float; Mae = d.abs().mean().item<float32>() |> float }

    let private check (inputs: Tensor) (future: Tensor) =
        Guard.rank "inputs" 3 "[W, C, T]" inputs
        Guard.rank "future" 3 "[W, C, H]" future
        if future.shape.[0] <> inputs.shape.[0] || future.shape.[1] <> inputs.shape.[1] then
            Guard.fail "future" (Guard.shapeOf future) (sprintf "[%d, %d, H] (one future per window)" inputs.shape.[0] inputs.shape.[1])
        if future.shape.[2] = 0L then Guard.fail "future" (Guard.shapeOf future) "a horizon of at least one step"

    /// The naive forecast: each channel's last value repeated over the horizon.
    let naive (inputs: Tensor) (future: Tensor) : ForecastErrors =
        check inputs future
        use _ = torch.NewDisposeScope()
        let last = inputs.narrow(2L, inputs.shape.[2] - 1L, 1L).expand_as(future)
        errors last future

    /// Trains `model`'s parameters `parameters` on (inputs, future) with AdamW and MSE, in
    /// seeded shuffled batches, one dispose scope per step.
    let private fit (model: Module<Tensor, Tensor>) (parameters: Parameter seq) (options: ForecastOptions) (inputs: Tensor) (future: Tensor) =
        Guard.positive "Epochs" options.Epochs
        Guard.positive "BatchSize" options.BatchSize
        let device = Runtime.deviceOf model
        use optimizer = torch.optim.AdamW(parameters, lr = options.Lr, weight_decay = options.WeightDecay)
        use g = new Generator(uint64 options.Seed, torch.CPU)
        let w = inputs.shape.[0]
        let batch = min (int64 options.BatchSize) w
        model.train ()
        for _ in 1 .. options.Epochs do
            use order = torch.randperm(w, generator = g)
            let mutable i = 0L
            while i + batch <= w do
                use _ = torch.NewDisposeScope()
                let idx = order.narrow(0L, i, batch)
                let x = inputs.index_select(0L, idx).``to``(device)
                let y = future.index_select(0L, idx).``to``(device)
                optimizer.zero_grad()
                let loss = functional.mse_loss(model.forward x, y)
                loss.backward()
                optimizer.step() |> ignore
                i <- i + batch
            Runtime.endOfStep ()
        model.eval ()

    let private evaluate (model: Module<Tensor, Tensor>) (inputs: Tensor) (future: Tensor) =
        use _ = torch.NewDisposeScope()
        use _ = torch.no_grad()
        let device = Runtime.deviceOf model
        let preds =
            [| let w = inputs.shape.[0]
               let mutable i = 0L
               while i < w do
                   let b = min 256L (w - i)
                   yield model.forward(inputs.narrow(0L, i, b).``to``(device)).cpu()
                   i <- i + b |]
        errors (torch.cat(preds, 0L)) future

    /// PatchTST's flatten head on `model`'s frozen encoder, trained on (trainInputs [W, C, T],
    /// trainFuture [W, C, H]) and scored on (testInputs, testFuture). ArgumentException for a model
    /// that is not a series model or windows of another shape.
    let withEncoder (model: MaskedAutoencoder) (options: ForecastOptions) (trainInputs: Tensor) (trainFuture: Tensor) (testInputs: Tensor) (testFuture: Tensor) =
        check trainInputs trainFuture
        check testInputs testFuture
        if trainFuture.shape.[2] <> int64 options.Horizon then
            Guard.fail "trainFuture" (Guard.shapeOf trainFuture) (sprintf "a horizon of Horizon = %d steps" options.Horizon)
        model.Adapter.Check("trainInputs", trainInputs)
        torch.manual_seed options.Seed |> ignore
        use head = new FlattenHead(model, options.Horizon)
        head.``to``(Runtime.deviceOf model) |> ignore
        let wasTraining = model.training
        model.eval ()
        fit head head.HeadParameters options trainInputs trainFuture
        let result = evaluate head testInputs testFuture
        if wasTraining then model.train ()
        result

    /// The DLinear baseline (moving average of 25 steps, or the window when shorter), trained and
    /// scored as `withEncoder`.
    let linear (options: ForecastOptions) (trainInputs: Tensor) (trainFuture: Tensor) (testInputs: Tensor) (testFuture: Tensor) =
        check trainInputs trainFuture
        check testInputs testFuture
        torch.manual_seed options.Seed |> ignore
        use model = new DLinear(int trainInputs.shape.[2], options.Horizon, 25)
        fit model (model.parameters()) options trainInputs trainFuture
        evaluate model testInputs testFuture
