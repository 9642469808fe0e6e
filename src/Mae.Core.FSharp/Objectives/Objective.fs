/// The objective: the reconstruction loss on hidden tokens plus any number of weighted extra
/// terms (a contrastive or clustering term is one more term, not a change to the model).
namespace Mae

open TorchSharp

/// What an objective term sees of one forward pass.
type ObjectiveInput =
    { /// The batch as given to the model.
      Batch: Tensor
      /// `[N, L, P]` the adapter's raw target (before norm-pix or any other normalisation).
      Target: Tensor
      /// `[N, L, P]` the decoder's predictions.
      Pred: Tensor
      /// `[N, L]` 1 = hidden, 0 = visible.
      Mask: Tensor
      /// The encoder's output, `[N, (1)+K, D]` (see EncoderOutput).
      Latent: Tensor }

/// An extra term: `Weight * Compute input` is added to the loss.
type ObjectiveTerm =
    { Name: string
      Weight: float
      Compute: ObjectiveInput -> Tensor }

/// Reconstruction on hidden tokens plus weighted extra terms.
type Objective =
    { /// pred [N, L, P], raw target [N, L, P], mask [N, L] -> scalar, on hidden tokens only.
      Reconstruction: Losses.ReconstructionLoss
      Extra: ObjectiveTerm list }

module Objective =

    /// MAE's objective: masked MSE, on per-token normalised targets when `normPix`
    /// (models_mae.py forward_loss; eps 1e-6 inside the square root).
    let mse (normPix: bool) =
        { Reconstruction = (if normPix then Losses.withNormPix Losses.normPixEps Losses.maskedMse else Losses.maskedMse)
          Extra = [] }

    /// The objective with one more weighted term.
    let withTerm (name: string) (weight: float) (compute: ObjectiveInput -> Tensor) (o: Objective) =
        Guard.notNull "name" name
        if System.Double.IsNaN weight || System.Double.IsInfinity weight then Guard.fail "weight" weight "a finite number"
        { o with Extra = o.Extra @ [ { Name = name; Weight = weight; Compute = compute } ] }

    /// The scalar loss: reconstruction plus each term times its weight.
    let loss (o: Objective) (input: ObjectiveInput) : Tensor =
        let recon = o.Reconstruction input.Pred input.Target input.Mask
        o.Extra |> List.fold (fun (acc: Tensor) t -> acc + t.Weight * t.Compute input) recon
