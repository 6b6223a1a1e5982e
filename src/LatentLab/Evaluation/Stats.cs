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
