using LatentLab.Hooks;
using LatentLab.Tensors;

namespace LatentLab.Latents;

/// <summary>Which trace the targets are read from.</summary>
public enum TraceMode
{
    /// <summary>The teacher's own greedy trace from the prompt: the states it actually reaches.</summary>
    Own,
    /// <summary>The task's reference steps, teacher-forced up to the end of thinking; the answer after the marker is
    /// the teacher's own greedy continuation, so "verified" still means the model answered correctly from that state.
    /// Works on any model (a random one never closes its think block by itself).</summary>
    Reference,
}

/// <summary>Which of N equal contiguous slices of the problem list one job extracts (`--shard i/N`).</summary>
public sealed record ShardSpec(int Index, int Count)
{
    public static readonly ShardSpec Whole = new(0, 1);

    public (int Start, int End) Range(int problems) =>
        ((int)((long)problems * Index / Count), (int)((long)problems * (Index + 1) / Count));

    /// <summary>Parses "i/N" (0 ≤ i &lt; N).</summary>
    public static ShardSpec Parse(string text)
    {
        var parts = text.Split('/');
        if (parts.Length == 2 && int.TryParse(parts[0], out int i) && int.TryParse(parts[1], out int n) && n >= 1 && i >= 0 && i < n)
            return new ShardSpec(i, n);
        throw new ArgumentException($"cannot read shard '{text}': use i/N with 0 <= i < N, e.g. 0/4");
    }

    public override string ToString() => $"{Index}/{Count}";
}

/// <summary>The task set a store was made from, logged in its manifest (null fields: problems given in-process).</summary>
public sealed record TaskSource(string Task, int Difficulty, string Split, long Seed, int Count);

/// <summary>
/// What to extract. <see cref="Point"/> is a hook point (`blocks.-2.resid_post`); <see cref="K"/> post states end at
/// the boundary (positions Post-K+1 … Post); <see cref="DType"/> is the stored dtype; <see cref="Compute"/> the
/// activation dtype of the forward passes (null: the model's own; auto: the library's measured choice, see ComputePolicy). <see cref="RowsPerFile"/> is the size of the
/// store's safetensors files, the unit of resuming.
/// </summary>
public sealed record ExtractionOptions
{
    public string Point { get; init; } = "blocks.-2.resid_post";
    public int K { get; init; } = 1;
    public string DType { get; init; } = "f32";
    public string? Compute { get; init; }
    public int BatchSize { get; init; } = 64;
    public TraceMode Trace { get; init; } = TraceMode.Own;
    /// <summary>Generation budget per trace; null: the reference continuation's length plus 16.</summary>
    public int? MaxNewTokens { get; init; }
    public int RowsPerFile { get; init; } = 256;
    public ShardSpec Shard { get; init; } = ShardSpec.Whole;
    /// <summary>Provenance written to the manifest (the CLI fills it; in-process callers may leave it null).</summary>
    public TaskSource? Source { get; init; }

    public void Validate()
    {
        HookPoint.Parse(Point);
        TorchRuntime.ParseDType(DType);
        if (Compute is not null) ComputePolicy.Validate(Compute);
        if (K < 1) throw new ArgumentException($"K must be >= 1 (got {K})");
        if (BatchSize < 1) throw new ArgumentException($"batch size must be >= 1 (got {BatchSize})");
        if (RowsPerFile < 1) throw new ArgumentException($"rows per file must be >= 1 (got {RowsPerFile})");
        if (MaxNewTokens is < 1) throw new ArgumentException($"max new tokens must be >= 1 (got {MaxNewTokens})");
        if (Shard.Count < 1 || Shard.Index < 0 || Shard.Index >= Shard.Count) throw new ArgumentException($"invalid shard {Shard}");
    }
}

/// <summary>A problem that yielded no sample, and why (kept in the manifest so counts add up).</summary>
public sealed record SkippedProblem(int Index, string Reason);

/// <summary>Progress of an extraction: problems done of the total this job owns.</summary>
public sealed record ExtractionProgress(int Done, int Total, int Verified, int Skipped, string Stage, string? Note = null);
