/// Moving weights between models by name, all or nothing: every tensor is mapped, or each
/// missing, extra and differently shaped one is named; and finding tensors that went non-finite.
module Mae.Weights

open System
open TorchSharp

/// How a set of source tensors fails to match a target's (empty arrays when it matches).
type Mismatch =
    { /// Names the target has and the source lacks.
      Missing: string[]
      /// Names the source has and the target lacks.
      Extra: string[]
      /// (name, source shape, target shape) where both have the name.
      Shapes: (string * string * string)[] }

    member m.IsEmpty = m.Missing.Length = 0 && m.Extra.Length = 0 && m.Shapes.Length = 0

    /// One line per problem, e.g. "blocks.2.attn.qkv.weight: missing in the source".
    override m.ToString() =
        [ for n in m.Missing -> sprintf "%s: missing in the source" n
          for n in m.Extra -> sprintf "%s: not in the target" n
          for n, s, t in m.Shapes -> sprintf "%s: shape %s in the source, %s in the target" n s t ]
        |> String.concat "; "

/// Compares `source` with `target` by name and shape; `resizable` names tensors whose shape may
/// differ because the caller resizes them (e.g. a positional table for another grid).
let compare (source: (string * Tensor) seq) (target: (string * Tensor) seq) (resizable: string -> bool) : Mismatch =
    let s, t = dict source, dict target
    { Missing = [| for KeyValue (n, _) in t do if not (s.ContainsKey n) then yield n |]
      Extra = [| for KeyValue (n, _) in s do if not (t.ContainsKey n) then yield n |]
      Shapes =
        [| for KeyValue (n, tt) in t do
               match s.TryGetValue n with
               | true, st when st.shape <> tt.shape && not (resizable n) -> yield n, Guard.shapeOf st, Guard.shapeOf tt
               | _ -> () |] }

/// Copies every source tensor into the same-named target tensor, without gradients; `convert`
/// may reshape a tensor (name, source, target) first. Raises `fail (mismatch text)` and copies
/// nothing unless every name and shape matches.
let copy (source: (string * Tensor) seq) (target: (string * Tensor) seq) (resizable: string -> bool)
         (convert: string -> Tensor -> Tensor -> Tensor) (fail: string -> exn) =
    let source, target = Array.ofSeq source, Array.ofSeq target
    let m = compare source target resizable
    if not m.IsEmpty then raise (fail (m.ToString()))
    let s = dict source
    use _ = torch.no_grad()
    for n, t in target do
        t.copy_(convert n s.[n] t) |> ignore

/// The named parameters of a module as (name, tensor) pairs.
let named (m: torch.nn.Module) = [| for struct (n, p) in m.named_parameters() -> n, (p :> Tensor) |]

/// Whether every tensor (null ones skipped) is finite: one reduction per tensor, one sync.
let allFinite (tensors: Tensor seq) : bool =
    use _ = torch.no_grad()
    use _ = torch.NewDisposeScope()
    let checks = [| for t in tensors do if not (isNull t) then yield t.isfinite().all() |]
    checks.Length = 0 || torch.stack(checks).all().item<bool>()

/// The names of the tensors holding a NaN or an infinity.
let nonFinite (tensors: (string * Tensor) seq) : string[] =
    use _ = torch.no_grad()
    [| for n, t in tensors do
           if not (isNull t) && not (t.isfinite().all().item<bool>()) then yield n |]
