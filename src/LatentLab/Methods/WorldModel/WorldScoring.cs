using LatentLab.Evaluation;
using LatentLab.Latents;
using static TorchSharp.torch;

namespace LatentLab.Methods.WorldModel;

/// <summary>
/// A trace's coherence under the world model: for each step t, the error of predicting it from the prompt and steps
/// before t (next-step masking), in the target encoder's space (<see cref="StepErrors"/>) and as a hidden state through
/// the latent head (<see cref="LatentErrors"/>). <see cref="Mean"/> and <see cref="Max"/> summarise the first.
/// </summary>
public sealed record TraceScore(double[] StepErrors, double[] LatentErrors)
{
    public double Mean => StepErrors.Length == 0 ? 0 : StepErrors.Average();
    public double Max => StepErrors.Length == 0 ? 0 : StepErrors.Max();
}

public static class WorldScoring
{
    /// <summary>Scores every sample of <paramref name="set"/> (batched: one masked sequence per (trace, step)).</summary>
    public static IReadOnlyList<TraceScore> Score(WorldModel wm, StepLatents set, int batch = 512)
    {
        var scores = new TraceScore[set.Samples.Count];
        if (set.Samples.Count == 0) return scores;
        using var _ = no_grad();
        using var data = StepBatch.Of(set, wm.Config.MaxSteps);
        long l = data.X.shape[1];
        var jobs = new List<(int Row, int T)>();
        for (int i = 0; i < set.Samples.Count; i++)
            for (int t = 1; t <= data.Steps[i]; t++) jobs.Add((i, t));
        var step = set.Samples.Select(s => new double[s.Steps.Count]).ToArray();
        var lat = set.Samples.Select(s => new double[s.Steps.Count]).ToArray();
        for (int at = 0; at < jobs.Count; at += batch)
        {
            using var scope = NewDisposeScope();
            var chunk = jobs.Skip(at).Take(batch).ToList();
            var rows = tensor(chunk.Select(j => (long)j.Row).ToArray());
            var x = data.X.index_select(0, rows);
            var valid = data.Valid.index_select(0, rows);
            var masked = tensor(chunk.SelectMany(j => StepMasks.NextStep(data.Steps[j.Row], j.T, l)).ToArray()).view(chunk.Count, l);
            using var pass = wm.Forward(x, masked, valid);
            var where = tensor(chunk.Select(j => (long)j.T).ToArray()).view(-1, 1, 1);
            Tensor At(Tensor t) => t.gather(1, where.expand(-1, 1, t.shape[2]).to(t.device)).squeeze(1);
            var e = wm.Distance(At(pass.Predicted), At(pass.Target)).cpu().to(ScalarType.Float64).data<double>().ToArray();
            var le = wm.Distance(At(pass.PredictedLatent), At(pass.Latent)).cpu().to(ScalarType.Float64).data<double>().ToArray();
            for (int k = 0; k < chunk.Count; k++)
            {
                step[chunk[k].Row][chunk[k].T - 1] = e[k];
                lat[chunk[k].Row][chunk[k].T - 1] = le[k];
            }
        }
        for (int i = 0; i < scores.Length; i++) scores[i] = new TraceScore(step[i], lat[i]);
        return scores;
    }

    /// <summary>Collapse monitors of the next-step predictions over a set: mean per-dimension std and effective rank.</summary>
    public static (double Std, double Rank) Collapse(WorldModel wm, StepLatents set, int maxTraces = 256)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var sub = set.Where(s => s.Index < maxTraces);
        if (sub.Samples.Count < 2) return (double.NaN, double.NaN);
        using var data = StepBatch.Of(sub, wm.Config.MaxSteps);
        var masked = tensor(data.Steps.SelectMany(n => StepMasks.NextStep(n, Math.Max(1, n), data.X.shape[1])).ToArray()).view(data.Count, -1);
        using var pass = wm.Forward(data.X, masked, data.Valid);
        var pred = pass.Predicted.view(-1, pass.Predicted.shape[^1])[masked.view(-1)];
        return (LatentMetrics.MeanDimensionStd(pred), LatentMetrics.EffectiveRank(pred));
    }

    /// <summary>
    /// AUROC of the score for telling wrong traces (positives: a wrong step or an unverified answer) from right ones, and
    /// per-step AUROC for locating the first wrong step: over wrong traces, the error at their first wrong step against
    /// the errors at the right steps before it.
    /// </summary>
    public static (Auroc Trace, Auroc TraceMax, Auroc FirstWrongStep) Aurocs(IReadOnlyList<StepSample> samples, IReadOnlyList<TraceScore> scores)
    {
        var wrong = new List<int>();
        var right = new List<int>();
        for (int i = 0; i < samples.Count; i++) (WorldModelTraining.IsGood(samples[i]) ? right : wrong).Add(i);
        var trace = Auroc.Of(wrong.Select(i => scores[i].Mean).ToList(), right.Select(i => scores[i].Mean).ToList());
        var traceMax = Auroc.Of(wrong.Select(i => scores[i].Max).ToList(), right.Select(i => scores[i].Max).ToList());
        var at = new List<double>();
        var before = new List<double>();
        foreach (int i in wrong)
            if (samples[i].FirstWrongStep is int f && f < scores[i].StepErrors.Length)
            {
                at.Add(scores[i].StepErrors[f]);
                before.AddRange(scores[i].StepErrors.Take(f));
            }
        return (trace, traceMax, Auroc.Of(at, before));
    }
}
