using LatentLab.Latents;

namespace LatentLab.Methods.WorldModel;

/// <summary>
/// How a reranker weighs a sample: utility = α·logprob − β·error, error the trace's mean or max next-step error.
/// α = <see cref="LogProbWeight"/> / σ(logprob) and β = <see cref="ErrorWeight"/> / σ(error) over the validation samples, so the weights are unitless.
/// </summary>
public sealed record RerankWeights(double LogProbWeight, double ErrorWeight, bool UseMax, double LogProbScale, double ErrorScale)
{
    public double Alpha => LogProbWeight / LogProbScale;
    public double Beta => ErrorWeight / ErrorScale;

    public double Utility(StepSample s, TraceScore score) => Alpha * s.LogProb - Beta * (UseMax ? score.Max : score.Mean);

    public override string ToString() => string.Create(System.Globalization.CultureInfo.InvariantCulture,
        $"α = {Alpha:G3} (weight {LogProbWeight:G3}), β = {Beta:G3} (weight {ErrorWeight:G3}) on the {(UseMax ? "max" : "mean")} step error");
}

/// <summary>Best-of-N selection over the sampled traces of each problem.</summary>
public static class Rerank
{
    /// <summary>The candidate with the highest utility (the first on ties); −1 when there is none.</summary>
    public static int Pick(IReadOnlyList<int> candidates, Func<int, double> utility)
    {
        int best = -1;
        double top = double.NegativeInfinity;
        foreach (var c in candidates)
        {
            double u = utility(c);
            if (best < 0 || u > top) (best, top) = (c, u);
        }
        return best;
    }

    /// <summary>Sample indices of each problem's sampled (non-greedy) traces, for problems 0 … <paramref name="problems"/>−1 (empty where none).</summary>
    public static List<int>[] Groups(IReadOnlyList<StepSample> samples, int problems, int firstProblem = 0)
    {
        var g = Enumerable.Range(0, problems).Select(_ => new List<int>()).ToArray();
        for (int i = 0; i < samples.Count; i++)
        {
            int p = samples[i].ProblemIndex - firstProblem;
            if (!samples[i].Greedy && p >= 0 && p < problems) g[p].Add(i);
        }
        return g;
    }

    /// <summary>Per problem: did the pick verify (false when the problem has no sample).</summary>
    public static bool[] Grade(IReadOnlyList<StepSample> samples, List<int>[] groups, Func<int, double> utility) =>
        groups.Select(g => Pick(g, utility) is int i && i >= 0 && samples[i].Verified).ToArray();

    /// <summary>Majority vote over the answers of each problem's samples (ties to the answer seen first).</summary>
    public static bool[] Majority(IReadOnlyList<StepSample> samples, List<int>[] groups) =>
        groups.Select(g =>
        {
            var votes = g.Where(i => samples[i].Answer is not null).GroupBy(i => samples[i].Answer!).OrderByDescending(v => v.Count()).ThenBy(v => v.Min()).FirstOrDefault();
            return votes is not null && samples[votes.First()].Verified;
        }).ToArray();

    /// <summary>
    /// The weights that maximise verified accuracy on a validation split, from a grid over the error's weight (0 = logprob
    /// only) with and without the logprob, on the mean or the max step error; ties go to the smaller error weight.
    /// </summary>
    public static RerankWeights Fit(IReadOnlyList<StepSample> samples, IReadOnlyList<TraceScore> scores, List<int>[] groups, bool withLogProb)
    {
        static double Std(IEnumerable<double> xs)
        {
            var a = xs.ToArray();
            if (a.Length < 2) return 1;
            double m = a.Average(), v = a.Sum(x => (x - m) * (x - m)) / (a.Length - 1);
            return v > 1e-12 ? Math.Sqrt(v) : 1;
        }
        var used = groups.SelectMany(g => g).ToList();
        double lpScale = Std(used.Select(i => samples[i].LogProb));
        RerankWeights? best = null;
        int bestCorrect = -1;
        foreach (bool useMax in new[] { false, true })
        {
            double errScale = Std(used.Select(i => useMax ? scores[i].Max : scores[i].Mean));
            var grid = withLogProb ? new[] { 0.0, 0.25, 0.5, 1, 2, 4, 8 } : new[] { 1.0 };
            foreach (var w in grid)
            {
                var cand = new RerankWeights(withLogProb ? 1 : 0, w, useMax, lpScale, errScale);
                int correct = Grade(samples, groups, i => cand.Utility(samples[i], scores[i])).Count(c => c);
                if (correct > bestCorrect) (best, bestCorrect) = (cand, correct);
            }
        }
        return best!;
    }
}
