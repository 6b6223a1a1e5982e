namespace LatentLab.Training;

/// <summary>
/// Linear warm-up then cosine decay to a floor, as nanoGPT and most LM recipes use. The rate is a pure
/// function of the step, so "scheduler position" on resume is just the step number.
/// </summary>
public static class LrSchedule
{
    /// <summary>
    /// Learning rate for the optimiser update with 0-based index <paramref name="step"/>: rises linearly
    /// to the peak over the first WarmupSteps updates (the first update already gets peak/WarmupSteps, never 0),
    /// then follows half a cosine from the peak down to peak · MinLrRatio at the last update.
    /// </summary>
    public static double At(long step, TrainerConfig c) =>
        At(step, c.Steps, c.LearningRate, c.WarmupSteps, c.MinLrRatio);

    public static double At(long step, long totalSteps, double peak, long warmupSteps, double minLrRatio)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        if (step < warmupSteps) return peak * (step + 1) / warmupSteps;
        double min = peak * minLrRatio;
        long decaySteps = totalSteps - warmupSteps - 1;
        if (decaySteps <= 0) return peak;
        double progress = Math.Min(1.0, (double)(step - warmupSteps) / decaySteps);
        return min + 0.5 * (1 + Math.Cos(Math.PI * progress)) * (peak - min);
    }
}
