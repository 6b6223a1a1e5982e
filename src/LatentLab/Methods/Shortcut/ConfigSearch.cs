using System.Globalization;
using System.Text;
using LatentLab.Evaluation;
using LatentLab.Hooks;
using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Teacher;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>What the study's configuration search tries: hook points × predictor kinds × K, each trained briefly.</summary>
public sealed record ConfigSearchOptions
{
    /// <summary>Off: the study uses its Point, K and predictor kind as given.</summary>
    public bool Enabled { get; init; } = true;
    /// <summary>Hook points to try (relative indices allowed); points the model does not have are skipped.</summary>
    public string[] Points { get; init; } = ["blocks.-1.resid_post", "blocks.-2.resid_post", "blocks.-3.resid_post"];
    public PredictorKind[] Kinds { get; init; } = [PredictorKind.Mlp, PredictorKind.Transformer];
    /// <summary>K values to try (null: the study's K). A bottleneck teacher's K is its slot count, whatever this says.</summary>
    public int[]? Ks { get; init; }
    /// <summary>Training steps of each candidate predictor (the chosen one is then trained with the study's full budget).</summary>
    public long Steps { get; init; } = 100;
    /// <summary>Share of the training problems held out to select on (the test set is never looked at).</summary>
    public double ValidationFraction { get; init; } = 0.2;
}

public sealed record SearchCandidate(string Point, PredictorKind Kind, int K)
{
    public override string ToString() => $"{Point}, {Kind.ToString().ToLowerInvariant()}, K = {K}";
}

/// <summary>One candidate's validation numbers: the promotion gate's retrieval metric (top-5), top-1 and the standardised cosine.</summary>
public sealed record SearchRow(SearchCandidate Candidate, double Cosine, double Top1, double Top5, double ChanceTop5, int Validation, double Seconds);

public sealed record ConfigSearchResult(SearchCandidate Chosen, IReadOnlyList<SearchRow> Rows, long Steps)
{
    public string ToMarkdown()
    {
        static string P(double x) => (x * 100).ToString("0.0", CultureInfo.InvariantCulture) + "%";
        var sb = new StringBuilder();
        sb.AppendLine("## Configuration search (validation split of the training problems)");
        sb.AppendLine();
        sb.AppendLine($"Each candidate predictor trained {Steps} steps on the training problems minus a held-out {Rows[0].Validation}, " +
                      "and was scored there by the promotion gate's metric (top-5 retrieval of the true h_post among the held-out ones; ties by cosine). " +
                      $"The test problems were not used. Chosen: **{Chosen}**.");
        sb.AppendLine();
        sb.AppendLine("| hook point | predictor | K | cosine (standardised) | top-1 | top-5 (chance) | seconds | |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var r in Rows)
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.Candidate.Point} | {r.Candidate.Kind.ToString().ToLowerInvariant()} | {r.Candidate.K} | {r.Cosine:F3} | {P(r.Top1)} | {P(r.Top5)} ({P(r.ChanceTop5)}) | {r.Seconds:F0} | {(r.Candidate == Chosen ? "chosen" : "")} |");
        sb.AppendLine();
        return sb.ToString();
    }
}

/// <summary>
/// The study's own configuration search: for every hook point × K, the states of the training traces are read through
/// the latent store's one path (<see cref="LatentExtraction.States"/>, the same rule as Phase 0), a predictor of each
/// kind is trained briefly on part of them and scored on the rest; the best by the gate's metric is chosen.
/// </summary>
public static class ConfigSearch
{
    public static ConfigSearchResult Run(DecoderLM teacher, TraceFormat fmt, IReadOnlyList<TraceSample> train, int k,
        PredictorConfig predictor, ConfigSearchOptions o, string outDir, int batchSize = 128, TextWriter? log = null)
    {
        if (o.ValidationFraction is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(o), o.ValidationFraction, "the validation fraction must be in (0, 1)");
        if (o.Steps < 1) throw new ArgumentOutOfRangeException(nameof(o), o.Steps, "search steps must be ≥ 1");
        if (o.Kinds.Length == 0) throw new ArgumentException("configuration search: no predictor kinds to try");
        int layers = teacher.Config.NumLayers;
        // Points the model has, one name per distinct point (blocks.-1 and blocks.3 of a 4-layer model are one).
        var points = o.Points.Select(p => (Name: p, At: Resolve(p, layers))).Where(x => x.At is not null)
            .DistinctBy(x => x.At).Select(x => x.Name).ToList();
        if (points.Count == 0)
            throw new ArgumentException($"configuration search: none of the hook points {string.Join(", ", o.Points)} exists in a {layers}-layer model");
        var ks = fmt.Slots > 0 ? [fmt.Slots] : (o.Ks ?? [k]).Distinct().ToArray();
        int n = train.Count, nVal = Math.Max(2, (int)Math.Round(n * o.ValidationFraction));
        if (n - nVal < 2) throw new ArgumentException($"configuration search: {n} training problems are too few to hold out {nVal}");
        if (Directory.Exists(outDir)) Directory.Delete(outDir, true); // candidates are cheap: always trained afresh

        var rows = new List<SearchRow>();
        foreach (var point in points)
            foreach (var kk in ks)
            {
                var (pre, post) = LatentExtraction.States(teacher, train, point, kk, ScalarType.Float32, batchSize, fmt);
                using (pre)
                using (post)
                using (var preFit = pre.narrow(0, 0, n - nVal))
                using (var postFit = post.narrow(0, 0, n - nVal))
                using (var preVal = pre.narrow(0, n - nVal, nVal))
                using (var postVal = post.narrow(0, n - nVal, nVal))
                    foreach (var kind in o.Kinds)
                    {
                        var sw = System.Diagnostics.Stopwatch.StartNew();
                        var candidate = new SearchCandidate(point, kind, kk);
                        var cfg = predictor with { Kind = kind, K = kk, Steps = o.Steps, EvalEvery = 0, CheckpointEvery = 0 };
                        var run = PredictorTraining.Train(preFit, postFit, preVal, postVal, cfg,
                            Path.Combine(outDir, $"{point}-k{kk}-{kind}".ToLowerInvariant()), TextWriter.Null);
                        using var model = run.Predictor;
                        using var scope = NewDisposeScope();
                        var z = model.PredictStandardized(preVal);
                        var truth = model.StandardizePost(postVal);
                        var ranks = LatentMetrics.RetrievalRanks(z, truth);
                        var row = new SearchRow(candidate, LatentMetrics.MeanCosine(z, truth), LatentMetrics.TopK(ranks, 1), LatentMetrics.TopK(ranks, 5),
                            Math.Min(1.0, 5.0 / nVal), nVal, sw.Elapsed.TotalSeconds);
                        rows.Add(row);
                        log?.WriteLine($"[shortcut search] {candidate}: cosine {row.Cosine:F3}, top-5 {row.Top5:P1} ({row.Seconds:F0} s)");
                    }
            }
        var best = rows.OrderByDescending(r => r.Top5).ThenByDescending(r => r.Cosine).First();
        return new ConfigSearchResult(best.Candidate, rows, o.Steps);
    }

    /// <summary>The point with its layer counted from the front; null when a model of <paramref name="layers"/> layers has no such point.</summary>
    static HookPoint? Resolve(string point, int layers)
    {
        var p = HookPoint.Parse(point);
        try { return p.Resolve(layers); }
        catch (ArgumentException) { return null; }
    }
}
