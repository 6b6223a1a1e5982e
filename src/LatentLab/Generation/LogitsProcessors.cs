using static TorchSharp.torch;

namespace LatentLab.Generation;

/// <summary>Divides scores by T (T &lt; 1 sharpens, T &gt; 1 flattens).</summary>
public sealed class TemperatureProcessor : ILogitsProcessor
{
    public double Temperature { get; }

    public TemperatureProcessor(double temperature)
    {
        if (!(temperature > 0) || !double.IsFinite(temperature))
            throw new ArgumentException($"temperature must be a finite number > 0 (got {temperature}); use greedy decoding for 0");
        Temperature = temperature;
    }

    public Tensor Process(Tensor inputIds, Tensor logits) => logits / Temperature;
}

/// <summary>Keeps the k highest scores per row (ties with the k-th are kept, as in HF) and sets the rest to -inf.</summary>
public sealed class TopKProcessor : ILogitsProcessor
{
    public int K { get; }

    public TopKProcessor(int k)
    {
        if (k < 1) throw new ArgumentException($"top-k must be >= 1 (got {k})");
        K = k;
    }

    public Tensor Process(Tensor inputIds, Tensor logits)
    {
        long k = Math.Min(K, logits.shape[^1]);
        var kth = logits.topk((int)k, dim: -1).values.narrow(-1, k - 1, 1);
        return logits.masked_fill(logits < kth, float.NegativeInfinity);
    }
}

/// <summary>
/// Nucleus sampling: keeps, per row, the smallest set of most likely tokens whose probabilities sum to at least p
/// (the most likely token is always kept) and sets the rest to -inf. A token is dropped when the tokens ranked
/// above it already reach p, which is HF's rule (cumulative probability &lt;= 1 - p from the bottom) read from the top.
/// </summary>
public sealed class TopPProcessor : ILogitsProcessor
{
    public double P { get; }

    public TopPProcessor(double p)
    {
        if (!(p > 0 && p <= 1)) throw new ArgumentException($"top-p must be in (0, 1] (got {p})");
        P = p;
    }

    public Tensor Process(Tensor inputIds, Tensor logits)
    {
        using var scope = NewDisposeScope();
        var (sorted, order) = logits.softmax(-1).sort(-1, descending: true);
        // Mass strictly above each rank: an exclusive cumsum (shifting avoids the rounding of cumsum - p).
        var cum = sorted.cumsum(-1);
        var above = cat(new[] { zeros_like(cum.narrow(-1, 0, 1)), cum.narrow(-1, 0, cum.shape[^1] - 1) }, -1);
        var dropSorted = above >= P;
        var drop = zeros_like(dropSorted).scatter(-1, order, dropSorted);
        return logits.masked_fill(drop, float.NegativeInfinity).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// HF's repetition penalty (CTRL, Keskar et al. 2019): for every token already in the sequence (prompt included),
/// a positive score is divided by the penalty and a negative one multiplied by it, so penalty &gt; 1 always makes
/// the token less likely. Each token is penalised once however often it occurred. Through
/// <see cref="Process(GenerationStep, Tensor)"/> padding is ignored; the plain overload counts every id it is given.
/// </summary>
public sealed class RepetitionPenaltyProcessor : ILogitsProcessor
{
    public double Penalty { get; }

    public RepetitionPenaltyProcessor(double penalty)
    {
        if (!(penalty > 0) || !double.IsFinite(penalty)) throw new ArgumentException($"repetition penalty must be > 0 (got {penalty})");
        Penalty = penalty;
    }

    public Tensor Process(Tensor inputIds, Tensor logits)
    {
        using var scope = NewDisposeScope();
        return Apply(inputIds, ones_like(inputIds), logits).MoveToOuterDisposeScope();
    }

    public Tensor Process(GenerationStep step, Tensor logits)
    {
        using var scope = NewDisposeScope();
        return Apply(step.InputIds, step.AttentionMask, logits).MoveToOuterDisposeScope();
    }

    Tensor Apply(Tensor ids, Tensor mask, Tensor logits)
    {
        if (ids.shape[0] != logits.shape[0])
            throw new ArgumentException($"repetition penalty: ids have {ids.shape[0]} rows, logits {logits.shape[0]}");
        // scatter_add rather than scatter: a pad id may also occur as a real token, and duplicate writes race.
        var seen = zeros(logits.shape, dtype: ScalarType.Float32, device: logits.device)
            .scatter_add(1, ids, mask.to(ScalarType.Float32)) > 0;
        var penalised = where(logits < 0, logits * Penalty, logits / Penalty);
        return where(seen, penalised, logits);
    }
}
