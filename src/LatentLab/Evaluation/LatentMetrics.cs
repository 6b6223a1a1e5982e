using static TorchSharp.torch;

namespace LatentLab.Evaluation;

/// <summary>
/// Similarity, retrieval and collapse measures over sets of latent vectors, shared by every method: a predictor's
/// outputs against the true post-states (shortcut), a reasoner's latent chains (JEPA-Reasoner, collapse watch).
/// </summary>
public static class LatentMetrics
{
    /// <summary>Mean over problems and slots of cos(pred, truth); both [N, K, D] (or [N, D]).</summary>
    public static double MeanCosine(Tensor pred, Tensor truth)
    {
        using var scope = NewDisposeScope();
        return nn.functional.cosine_similarity(pred.to(ScalarType.Float64), truth.to(ScalarType.Float64), -1, 1e-12).mean().item<double>();
    }

    /// <summary>
    /// For each prediction i, the rank of its own true post-state among all N true post-states by cosine of the
    /// flattened [K·D] vectors (0 = nearest). Ties count half, so identical scores land at chance rather than at the top.
    /// </summary>
    public static double[] RetrievalRanks(Tensor pred, Tensor truth)
    {
        if (pred.shape[0] != truth.shape[0]) throw new ArgumentException($"retrieval: {pred.shape[0]} predictions but {truth.shape[0]} true states");
        using var scope = NewDisposeScope();
        long n = pred.shape[0];
        var p = nn.functional.normalize(pred.reshape(n, -1).to(ScalarType.Float64), dim: 1);
        var t = nn.functional.normalize(truth.reshape(n, -1).to(ScalarType.Float64), dim: 1);
        var sim = p.matmul(t.t());
        var own = sim.diagonal().unsqueeze(1);
        var self = eye(n, dtype: ScalarType.Bool).logical_not();
        var greater = sim.gt(own).logical_and(self).sum(1).to(ScalarType.Float64);
        var ties = sim.eq(own).logical_and(self).sum(1).to(ScalarType.Float64);
        return (greater + 0.5 * ties).data<double>().ToArray();
    }

    /// <summary>Share of problems whose true post-state is among the k nearest.</summary>
    public static double TopK(double[] ranks, int k) => ranks.Length == 0 ? double.NaN : ranks.Count(r => r < k) / (double)ranks.Length;

    /// <summary>Per-dimension std over all problems and slots of x [N, K, D] or [N, D] (D entries).</summary>
    public static double[] PerDimensionStd(Tensor x)
    {
        using var scope = NewDisposeScope();
        var flat = x.reshape(-1, x.shape[^1]).to(ScalarType.Float64);
        return flat.std(0).data<double>().ToArray();
    }

    /// <summary>Mean over dimensions of the std across vectors of x [..., D]: near 0 means collapse (VICReg's variance term watches the same).</summary>
    public static double MeanDimensionStd(Tensor x)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        return x.reshape(-1, x.shape[^1]).to(ScalarType.Float64).std(0).mean().item<double>();
    }

    /// <summary>
    /// exp(entropy of σ / Σσ) over the singular values of x [N, F] (Roy &amp; Vetterli 2007): F equal directions give F,
    /// one direction gives 1, vectors that are all the same give 0. Centred by default, so a shared offset does not
    /// count as a direction.
    /// </summary>
    public static double EffectiveRank(Tensor x, bool center = true)
    {
        if (x.dim() != 2) throw new ArgumentException($"effective rank needs [N, F], got [{string.Join(",", x.shape)}]");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var m = x.to(ScalarType.Float64);
        if (center) m = m - m.mean([0], keepdim: true);
        var s = linalg.svdvals(m);
        double total = s.sum().item<double>();
        // Rounding noise of a collapsed set is not a spectrum.
        if (total <= 1e-12) return 0;
        var p = s / total;
        var nz = p.masked_select(p.gt(0));
        return Math.Exp(-(nz * nz.log()).sum().item<double>());
    }
}
