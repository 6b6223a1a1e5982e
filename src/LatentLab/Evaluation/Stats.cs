namespace LatentLab.Evaluation;

/// <summary>A proportion with its Wilson score interval (95% by default): honest even at 0% or 100%.</summary>
public readonly record struct Proportion(int Successes, int Trials, double Low, double High)
{
    public double Value => Trials == 0 ? double.NaN : (double)Successes / Trials;

    public static Proportion Wilson(int successes, int trials, double z = 1.959963984540054)
    {
        if (trials < 0 || successes < 0 || successes > trials)
            throw new ArgumentException($"invalid proportion {successes}/{trials}");
        if (trials == 0) return new(0, 0, 0, 1);
        double n = trials, p = successes / n, z2 = z * z;
        double centre = (p + z2 / (2 * n)) / (1 + z2 / n);
        double half = z / (1 + z2 / n) * Math.Sqrt(p * (1 - p) / n + z2 / (4 * n * n));
        // At 0 or n successes the bound is exactly 0 or 1; rounding must not exclude the estimate itself.
        return new(successes, trials, successes == 0 ? 0 : Math.Max(0, centre - half), successes == trials ? 1 : Math.Min(1, centre + half));
    }

    public override string ToString() =>
        Trials == 0 ? "n/a (0 trials)" : $"{Value:P1} [{Low:P1}, {High:P1}] ({Successes}/{Trials})";
}

/// <summary>
/// A difference of two proportions (a − b) with Newcombe's hybrid-score 95% interval built from the two Wilson
/// intervals (Newcombe 1998, method 10; method 10 of the paired paper when the outcomes are paired).
/// </summary>
public sealed record Difference(double Value, double Low, double High)
{
    /// <summary>Two independent samples.</summary>
    public static Difference Of(Proportion a, Proportion b) => Combine(a, b, 0);

    /// <summary>
    /// The same problems answered by two arms: outcomes that agree carry no information about the difference, so
    /// the interval narrows by the correlation φ of the two outcome vectors (Newcombe 1998, Stat Med 17:2635, method 10).
    /// </summary>
    public static Difference Paired(IReadOnlyList<bool> a, IReadOnlyList<bool> b)
    {
        if (a.Count != b.Count) throw new ArgumentException($"paired difference: {a.Count} outcomes against {b.Count}; the arms must answer the same problems");
        int both = 0, onlyA = 0, onlyB = 0, neither = 0;
        for (int i = 0; i < a.Count; i++)
            _ = (a[i], b[i]) switch { (true, true) => both++, (true, false) => onlyA++, (false, true) => onlyB++, _ => neither++ };
        double den = Math.Sqrt((double)(both + onlyA) * (onlyB + neither) * (both + onlyB) * (onlyA + neither));
        double phi = den == 0 ? 0 : ((double)both * neither - (double)onlyA * onlyB) / den;
        return Combine(Proportion.Wilson(both + onlyA, a.Count), Proportion.Wilson(both + onlyB, b.Count), phi);
    }

    static Difference Combine(Proportion a, Proportion b, double phi)
    {
        double p1 = a.Value, p2 = b.Value, d = p1 - p2;
        double dl = p1 - a.Low, du = a.High - p1, el = p2 - b.Low, eu = b.High - p2;
        double low = Math.Sqrt(Math.Max(0, dl * dl - 2 * phi * dl * eu + eu * eu));
        double high = Math.Sqrt(Math.Max(0, du * du - 2 * phi * du * el + el * el));
        return new(d, d - low, d + high);
    }

    public override string ToString() => string.Create(System.Globalization.CultureInfo.InvariantCulture,
        $"{Value * 100:+0.0;-0.0;0.0} pp [{Low * 100:+0.0;-0.0;0.0}, {High * 100:+0.0;-0.0;0.0}]");
}

/// <summary>
/// Area under the ROC curve of a score that should be higher for positives: P(score of a positive &gt; score of a
/// negative), ties counting half (the Mann–Whitney statistic), with the Hanley–McNeil (1982) 95% interval, clipped to [0, 1].
/// 0.5 is chance; NaN when either group is empty.
/// </summary>
public sealed record Auroc(double Value, double Low, double High, int Positives, int Negatives)
{
    public static Auroc Of(IReadOnlyList<double> positives, IReadOnlyList<double> negatives)
    {
        int np = positives.Count, nn = negatives.Count;
        if (np == 0 || nn == 0) return new(double.NaN, double.NaN, double.NaN, np, nn);
        var neg = negatives.OrderBy(x => x).ToArray();
        double wins = 0;
        foreach (var p in positives)
        {
            int below = LowerBound(neg, p), notAbove = UpperBound(neg, p);
            wins += below + 0.5 * (notAbove - below);
        }
        double a = wins / ((double)np * nn);
        double q1 = a / (2 - a), q2 = 2 * a * a / (1 + a);
        double se = Math.Sqrt(Math.Max(0, (a * (1 - a) + (np - 1) * (q1 - a * a) + (nn - 1) * (q2 - a * a)) / ((double)np * nn)));
        return new(a, Math.Max(0, a - 1.96 * se), Math.Min(1, a + 1.96 * se), np, nn);
    }

    static int LowerBound(double[] s, double v)
    {
        int lo = 0, hi = s.Length;
        while (lo < hi) { int m = (lo + hi) / 2; if (s[m] < v) lo = m + 1; else hi = m; }
        return lo;
    }

    static int UpperBound(double[] s, double v)
    {
        int lo = 0, hi = s.Length;
        while (lo < hi) { int m = (lo + hi) / 2; if (s[m] <= v) lo = m + 1; else hi = m; }
        return lo;
    }

    public override string ToString() => double.IsNaN(Value) ? $"n/a ({Positives} vs {Negatives})"
        : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{Value:F3} [{Low:F3}, {High:F3}] ({Positives} vs {Negatives})");
}
