using System.Globalization;
using System.Text;
using LatentLab.Latents;
using LatentLab.Evaluation;
using LatentLab.Tasks;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>Pre-states of problems and of their edited twins (row i of one is the twin of row i of the other).</summary>
public sealed record TwinSet(EditKind Kind, Tensor PreOriginal, Tensor PreEdited);

/// <summary>
/// Prediction distance between each problem and its twin, relative to the distance between random pairs of problems
/// (Euclidean, standardised space). A ratio near 0 = the edit barely moves the prediction; near 1 = as if a different problem.
/// <see cref="InputRatio"/> is the same ratio for h_pre itself, to tell a stable predictor from a stable input.
/// </summary>
public sealed record StabilityScore(EditKind Kind, int Pairs, double TwinDistance, double RandomDistance, double Ratio, double InputRatio);

/// <summary>Collapse monitor: per-dimension spread of predictions against the true post-states, and effective ranks.</summary>
public sealed record CollapseStats(double[] PredStd, double[] TrueStd, double PredEffectiveRank, double TrueEffectiveRank, double DeadFraction)
{
    public double PredStdMean => PredStd.Average();
    public double TrueStdMean => TrueStd.Average();
}

public sealed record DiagnosticsOptions
{
    public ProbeOptions Probe { get; init; } = new();
    public int ProbeMaxClasses { get; init; } = 32;
    public int MaxProbeTargets { get; init; } = 48;
    /// <summary>Standardised per-dimension std below this counts the dimension as dead.</summary>
    public double DeadStd { get; init; } = 0.01;
    public PromotionGate Gate { get; init; } = new();
    public long Seed { get; init; }
}

/// <summary>Every Phase 1 number for one predictor on one test set.</summary>
public sealed record ShortcutDiagnosticsResult(
    int TestCount, int D, int K,
    double MeanCosine, double MeanCosineRaw, double MeanPostCosineRaw, double CopyCosineRaw,
    Proportion Top1, Proportion Top5, double ChanceTop1, double ChanceTop5,
    IReadOnlyList<ProbeScore> Probes, IReadOnlyList<StabilityScore> Stability, CollapseStats Collapse, GateResult Gate)
{
    public StabilityScore? StabilityOf(EditKind kind) => Stability.FirstOrDefault(s => s.Kind == kind);

    public string ToMarkdown()
    {
        static string F(double x, string f = "F3") => double.IsNaN(x) ? "n/a" : x.ToString(f, CultureInfo.InvariantCulture);
        var sb = new StringBuilder();
        sb.AppendLine($"## Phase 1 predictor diagnostics ({TestCount} test problems, D = {D}, K = {K})");
        sb.AppendLine();
        sb.AppendLine($"**Promotion gate: {(Gate.Pass ? "PASS" : "FAIL")}** — {Gate.Reason}");
        sb.AppendLine();
        sb.AppendLine("| criterion | value | threshold | status |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var c in Gate.Criteria) sb.AppendLine($"| {c.Name} | {F(c.Value)} | {c.Comparison} {F(c.Threshold)} | {c.Status.ToString().ToUpperInvariant()} |");
        sb.AppendLine();
        sb.AppendLine("### Similarity and retrieval");
        sb.AppendLine();
        sb.AppendLine("| measure | value |");
        sb.AppendLine("|---|---|");
        sb.AppendLine($"| mean cosine to true h_post (standardised) | {F(MeanCosine)} |");
        sb.AppendLine($"| mean cosine to true h_post (model space) | {F(MeanCosineRaw)} |");
        sb.AppendLine($"| baseline: mean train h_post (model space) | {F(MeanPostCosineRaw)} |");
        sb.AppendLine($"| baseline: copy h_pre (model space) | {F(CopyCosineRaw)} |");
        sb.AppendLine($"| top-1 retrieval [Wilson 95%] | {Top1} (chance {ChanceTop1:P2}) |");
        sb.AppendLine($"| top-5 retrieval [Wilson 95%] | {Top5} (chance {ChanceTop5:P2}) |");
        sb.AppendLine();
        sb.AppendLine("### Stability under edits (prediction distance to twin / to a random problem)");
        sb.AppendLine();
        if (Stability.Count == 0) sb.AppendLine("Not measured (no twins supplied).");
        else
        {
            sb.AppendLine("| edit | pairs | twin distance | random distance | ratio | h_pre ratio |");
            sb.AppendLine("|---|---|---|---|---|---|");
            foreach (var s in Stability)
                sb.AppendLine($"| {s.Kind} | {s.Pairs} | {F(s.TwinDistance)} | {F(s.RandomDistance)} | {F(s.Ratio)} | {F(s.InputRatio)} |");
        }
        sb.AppendLine();
        sb.AppendLine("### Collapse monitor (standardised space)");
        sb.AppendLine();
        sb.AppendLine($"Mean per-dimension std: predicted {F(Collapse.PredStdMean)}, true {F(Collapse.TrueStdMean)}; " +
            $"dead dimensions {Collapse.DeadFraction:P1}; effective rank: predicted {F(Collapse.PredEffectiveRank, "F1")}, true {F(Collapse.TrueEffectiveRank, "F1")}.");
        sb.AppendLine();
        sb.AppendLine("### Linear probes (test accuracy; majority-class baseline in brackets)");
        sb.AppendLine();
        if (Probes.Count == 0) sb.AppendLine("No probe targets (no intermediates with 2 or more classes).");
        else
        {
            var sources = Probes.Select(p => p.Source).Distinct().ToList();
            sb.AppendLine("| target | classes | " + string.Join(" | ", sources) + " |");
            sb.AppendLine("|---|---|" + string.Concat(sources.Select(_ => "---|")));
            foreach (var g in Probes.GroupBy(p => p.Target))
            {
                var cells = sources.Select(s => g.FirstOrDefault(p => p.Source == s) is { } p ? $"{F(p.Accuracy)} ({F(p.Majority)})" : "");
                sb.AppendLine($"| {g.Key} | {g.First().Classes} | {string.Join(" | ", cells)} |");
            }
            foreach (var s in sources)
            {
                var ps = Probes.Where(p => p.Source == s).ToList();
                sb.AppendLine();
                sb.Append(CultureInfo.InvariantCulture, $"- {s}: mean accuracy {F(ps.Average(p => p.Accuracy))}, mean lift over majority {F(ps.Average(p => p.Lift))}");
            }
            sb.AppendLine();
        }
        return sb.ToString();
    }
}

/// <summary>Phase 1's measurements: similarity, retrieval, probes, stability under edits, collapse, and the promotion gate.</summary>
public static class ShortcutDiagnostics
{
    public const string PredSource = "pred_post", PreSource = "h_pre", PostSource = "h_post";

    /// <summary>
    /// Measures <paramref name="predictor"/> on the test set. Probes are fit on the train set (the samples supply the
    /// intermediate values; pass null to skip probes). Twins (h_pre of problems and of their edited versions) give
    /// the stability numbers.
    /// </summary>
    public static ShortcutDiagnosticsResult Compute(LatentPredictor predictor,
        Tensor preTrain, Tensor postTrain, IReadOnlyList<TraceSample>? trainSamples,
        Tensor preTest, Tensor postTest, IReadOnlyList<TraceSample>? testSamples,
        IReadOnlyList<TwinSet>? twins = null, DiagnosticsOptions? options = null)
    {
        var o = options ?? new DiagnosticsOptions();
        predictor.CheckShapes(preTrain, postTrain, "diagnostics train set");
        predictor.CheckShapes(preTest, postTest, "diagnostics test set");
        if (preTest.shape[0] < 2) throw new ArgumentException("diagnostics: need at least 2 test problems");
        if (trainSamples is not null && trainSamples.Count != preTrain.shape[0])
            throw new ArgumentException($"diagnostics: {trainSamples.Count} train samples for {preTrain.shape[0]} train states");
        if (testSamples is not null && testSamples.Count != preTest.shape[0])
            throw new ArgumentException($"diagnostics: {testSamples.Count} test samples for {preTest.shape[0]} test states");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        int n = (int)preTest.shape[0], k = predictor.K, d = predictor.D;

        var zPredTest = predictor.PredictStandardized(preTest);
        var zPostTest = predictor.StandardizePost(postTest);
        var rawPred = predictor.DestandardizePost(zPredTest);
        var rawPost = postTest.to(ScalarType.Float32);
        double cos = LatentMetrics.MeanCosine(zPredTest, zPostTest);
        double cosRaw = LatentMetrics.MeanCosine(rawPred, rawPost);
        var meanPost = postTrain.to(ScalarType.Float32).mean([0], keepdim: true).expand(n, -1, -1);
        double meanCos = LatentMetrics.MeanCosine(meanPost, rawPost);
        double copyCos = LatentMetrics.MeanCosine(preTest.to(ScalarType.Float32).unsqueeze(1).expand(-1, k, -1), rawPost);

        var ranks = LatentMetrics.RetrievalRanks(zPredTest, zPostTest);
        var top1 = Proportion.Wilson(ranks.Count(r => r < 1), n);
        var top5 = Proportion.Wilson(ranks.Count(r => r < 5), n);
        double chance1 = 1.0 / n, chance5 = Math.Min(1.0, 5.0 / n);

        var probes = new List<ProbeScore>();
        if (trainSamples is not null && testSamples is not null)
        {
            var targets = Shortcut.Probes.FromIntermediates(trainSamples, testSamples, o.ProbeMaxClasses, o.MaxProbeTargets);
            if (targets.Count > 0)
            {
                var zPredTrain = predictor.PredictStandardized(preTrain);
                var sources = new (string Name, Tensor Train, Tensor Test)[]
                {
                    (PreSource, predictor.StandardizePre(preTrain), predictor.StandardizePre(preTest)),
                    (PredSource, zPredTrain, zPredTest),
                    (PostSource, predictor.StandardizePost(postTrain), zPostTest),
                };
                foreach (var t in targets)
                    foreach (var s in sources)
                        probes.Add(Shortcut.Probes.Fit(t.Name, s.Name, s.Train, t.Train, s.Test, t.Test, o.Probe));
            }
        }

        var stability = (twins ?? []).Select(t => Stability(predictor, t, o.Seed)).ToList();

        var predStd = LatentMetrics.PerDimensionStd(zPredTest);
        var trueStd = LatentMetrics.PerDimensionStd(zPostTest);
        var collapse = new CollapseStats(predStd, trueStd,
            LatentMetrics.EffectiveRank(zPredTest.reshape(n, -1)), LatentMetrics.EffectiveRank(zPostTest.reshape(n, -1)),
            predStd.Count(s => s < o.DeadStd) / (double)predStd.Length);

        var partial = new ShortcutDiagnosticsResult(n, d, k, cos, cosRaw, meanCos, copyCos, top1, top5, chance1, chance5,
            probes, stability, collapse, new GateResult(false, [], "not evaluated"));
        return partial with { Gate = o.Gate.Evaluate(partial) };
    }

    /// <summary>Twin distance over random-pair distance for one kind of edit, in standardised space.</summary>
    public static StabilityScore Stability(LatentPredictor predictor, TwinSet twins, long seed = 0)
    {
        if (twins.PreOriginal.dim() != 2 || !twins.PreOriginal.shape.SequenceEqual(twins.PreEdited.shape) || twins.PreOriginal.shape[1] != predictor.D)
            throw new ArgumentException($"stability ({twins.Kind}): original and edited pre-states must both be [M, {predictor.D}], got " +
                $"[{string.Join(",", twins.PreOriginal.shape)}] and [{string.Join(",", twins.PreEdited.shape)}]");
        int m = (int)twins.PreOriginal.shape[0];
        if (m < 2) throw new ArgumentException($"stability ({twins.Kind}): need at least 2 twin pairs");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var a = predictor.PredictStandardized(twins.PreOriginal).reshape(m, -1);
        var b = predictor.PredictStandardized(twins.PreEdited).reshape(m, -1);
        var ia = predictor.StandardizePre(twins.PreOriginal);
        var ib = predictor.StandardizePre(twins.PreEdited);
        // A random derangement: pairs each problem with a different one, reproducibly.
        var rng = new Random((int)(seed & 0x7fffffff) ^ 0x5eed);
        var shift = rng.Next(1, m);
        var other = tensor(Enumerable.Range(0, m).Select(i => (long)((i + shift) % m)).ToArray());
        double Dist(Tensor x, Tensor y) => (x - y).to(ScalarType.Float64).square().sum(1).sqrt().mean().item<double>();
        double twin = Dist(a, b), random = Dist(a, a.index_select(0, other));
        double inTwin = Dist(ia, ib), inRandom = Dist(ia, ia.index_select(0, other));
        return new StabilityScore(twins.Kind, m, twin, random, twin / Math.Max(random, 1e-12), inTwin / Math.Max(inRandom, 1e-12));
    }
}
