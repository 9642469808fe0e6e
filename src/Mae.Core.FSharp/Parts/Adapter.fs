/// The input adapter: the part that turns a batch of one modality into tokens, says what each
/// token should reconstruct, and gives the positional table of its token grid.
namespace Mae

/// batch -> tokens `[N, L, D]`, target `[N, L, P]`, positions `[L, D]`, token grid.
/// The embedding is per token (a linear map of each token's raw piece), so the model can draw the
/// mask on the raw pieces and embed only the visible ones (MAE embeds all, then drops 75%: the
/// result is the same at a quarter of the cost).
[<AbstractClass>]
type InputAdapter(name: string) =
    inherit Part(name)

    /// The token grid, slowest axis first (image: [| rows; columns |]); L is its product. Structured
    /// masking strategies and pictures read it.
    abstract Grid: int[]

    /// Raises ArgumentException naming `argument` when `batch` is not a batch this adapter reads
    /// (rank, channels, sizes, N >= 1).
    abstract Check: argument: string * batch: Tensor -> unit

    /// batch -> `[N, L, Pin]`: each token's raw piece, in the layout `Embed` takes.
    abstract Pieces: batch: Tensor -> Tensor

    /// Pieces `[N, L', Pin]` (any subset of the tokens) -> embeddings `[N, L', D]`, no positions.
    abstract Embed: pieces: Tensor -> Tensor

    /// batch -> the reconstruction target `[N, L, P]`, before any normalisation of the objective.
    abstract Target: batch: Tensor -> Tensor

    /// P, the width of a token's target.
    abstract TargetWidth: int

    /// Targets or predictions `[N, L, P]` -> the batch layout (for pictures).
    abstract Reassemble: tokens: Tensor -> Tensor

    /// The fixed positional table `[L, dim]` of the token grid (no cls row).
    abstract Positions: dim: int -> Tensor

    /// Rows of tokens per sample (default 1). A channel-independent adapter (PatchTST) cuts each
    /// of a sample's C channels into its own token sequence: `Pieces` and `Target` then give
    /// [N*C, L, P], the masks are [N*C, L], and one sample's features are its rows' side by side.
    abstract RowsPerSample: int
    default _.RowsPerSample = 1

    /// L, the tokens per sample.
    member a.NumTokens = Array.fold (*) 1 a.Grid
