/// Parts and the models assembled from them. A masked autoencoder is a choice of parts (input
/// adapter, encoder, decoder); each part is a module of its own, but its tensors are registered at
/// the top of the model under the part's own names, as the reference checkpoints have them
/// (`cls_token`, `patch_embed.proj.weight`, `decoder_pred.bias`, not `encoder.cls_token`), so
/// weights map to and from PyTorch by name without a converter per model.
namespace Mae

open System
open TorchSharp
open TorchSharp.Modules

open type TorchSharp.torch.nn

/// One part of a model. Its constructor registers its own fields (RegisterComponents); the
/// assembly that adopts it initialises it with `Initialize` after the shared weight init.
[<AbstractClass>]
type Part(name: string) =
    inherit Module(name)

    /// Initialisation beyond the shared rule of `Init.weights` (e.g. tokens drawn from N(0, 0.02)).
    abstract Initialize: unit -> unit
    default _.Initialize() = ()

/// Weight initialisation shared by every part (MAE's `_init_weights`).
module Init =
    /// MAE's rule: xavier-uniform linear weights, zero biases, unit layer norms.
    let weights (m: Module) =
        use _ = torch.no_grad()
        for struct (_, child) in m.named_modules() do
            match child with
            | :? Linear as l ->
                init.xavier_uniform_(l.weight) |> ignore
                if not (isNull l.bias) then init.zeros_(l.bias) |> ignore
            | :? LayerNorm as n ->
                init.ones_(n.weight) |> ignore
                init.zeros_(n.bias) |> ignore
            | _ -> ()

    /// A token parameter [1, 1, D] drawn from N(0, 0.02) (cls and mask tokens; MAE's init).
    let token (t: Tensor) =
        use _ = torch.no_grad()
        if not (isNull t) then init.normal_(t, 0.0, 0.02) |> ignore

    /// A positional table [1, (1)+L, D] from `table` [(1)+L, D]: fixed (no gradient), or learned
    /// and drawn from N(0, 0.02) when `learned`.
    let positions (learned: bool) (table: Tensor) =
        let table = table.unsqueeze(0L)
        if learned then
            use _ = torch.no_grad()
            Parameter(table.normal_(0.0, 0.02), requires_grad = true)
        else Parameter(table, requires_grad = false)

    /// [L, D] -> [1+L, D] with a zero row in front for the cls token (MAE's layout), or unchanged.
    let withClsRow (cls: bool) (table: Tensor) =
        if cls then torch.cat([| torch.zeros(1L, table.shape.[1]); table |], 0L) else table

/// A model made of parts. `Adopt` registers a part's parameters, buffers and submodules under
/// the part's own names; moving or converting the model moves the parts and re-registers what
/// moved (TorchSharp replaces a parameter object when it moves it).
type PartsModule(name: string) =
    inherit Module(name)
    let parts = Collections.Generic.List<Part>()

    /// Registers every tensor and submodule of `part` at the top of this model, in the part's
    /// registration order. A name taken by an earlier part is an error naming both.
    member this.Adopt(part: Part) =
        for struct (n, p) in part.named_parameters(false) do
            if this.has_parameter n then
                raise (InvalidOperationException(sprintf "%s: parameter %s of %s is already registered by another part." name n (part.GetName())))
            this.register_parameter(n, p)
        for struct (n, b) in part.named_buffers(false) do
            this.register_buffer(n, b)
        for struct (n, m) in part.named_children() do
            this.register_module(n, m)
        parts.Add part

    /// The parts in adoption order.
    member _.Parts = parts.ToArray()

    member private this.Rebind() =
        for part in parts do
            for struct (n, p) in part.named_parameters(false) do
                this.ConditionallyRegisterParameter(n, p)
            for struct (n, b) in part.named_buffers(false) do
                this.ConditionallyRegisterBuffer(n, b, true)

    override this._to(deviceType: DeviceType, deviceIndex: int, nonBlocking: bool) =
        for part in parts do
            part.``to``(deviceType, deviceIndex) |> ignore
        let moved = base._to(deviceType, deviceIndex, nonBlocking)
        this.Rebind()
        moved

    override this._to(device: Device, dtype: ScalarType, nonBlocking: bool) =
        for part in parts do
            part.``to``(device).``to``(dtype) |> ignore
        let moved = base._to(device, dtype, nonBlocking)
        this.Rebind()
        moved

    override this._to(dtype: ScalarType, nonBlocking: bool) =
        for part in parts do
            part.``to``(dtype) |> ignore
        let moved = base._to(dtype, nonBlocking)
        this.Rebind()
        moved

    override _.Dispose(disposing: bool) =
        if disposing then
            for part in parts do
                part.Dispose()
        base.Dispose(disposing)
