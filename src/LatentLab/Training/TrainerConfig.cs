namespace LatentLab.Training;

/// <summary>Adam's two decay rates (first and second moment).</summary>
public sealed record AdamBetas(double Beta1 = 0.9, double Beta2 = 0.95);

/// <summary>
/// Everything the training loop needs to know; the model's and the data's settings live with the caller,
/// who passes them as a JSON object so the run folder's config.json holds the whole resolved run.
/// Step counts are optimiser updates (one update = <see cref="AccumulationSteps"/> micro-batches).
/// </summary>
public sealed record TrainerConfig
{
    public long Steps { get; init; } = 1000;
    public double LearningRate { get; init; } = 3e-4;
    /// <summary>The cosine decays to LearningRate · MinLrRatio at the last step.</summary>
    public double MinLrRatio { get; init; } = 0.1;
    public long WarmupSteps { get; init; } = 100;
    /// <summary>Decoupled weight decay, applied only to matrices (dim ≥ 2), as nanoGPT does: norms and biases are not decayed.</summary>
    public double WeightDecay { get; init; } = 0.1;
    public AdamBetas Betas { get; init; } = new();
    public double Eps { get; init; } = 1e-8;
    /// <summary>Global gradient-norm limit; 0 turns clipping off (the norm is still logged).</summary>
    public double ClipNorm { get; init; } = 1.0;
    public int AccumulationSteps { get; init; } = 1;
    /// <summary>0 turns periodic evaluation off (the evaluation callback still runs once at the end).</summary>
    public long EvalEvery { get; init; }
    public long LogEvery { get; init; } = 10;
    /// <summary>0 turns checkpoints off (so a killed run starts over).</summary>
    public long CheckpointEvery { get; init; }
    /// <summary>How many of the newest checkpoints to keep.</summary>
    public int KeepCheckpoints { get; init; } = 3;
    public long Seed { get; init; }
    public string OutDir { get; init; } = "runs/train";
    /// <summary>
    /// Live progress: false prints a line every LogEvery steps; otherwise a log that implements <see cref="IProgressLog"/>
    /// shows a bar when it can (the command line does on a terminal outside CI) and any other log gets the lines.
    /// </summary>
    public bool? ProgressBar { get; init; }

    /// <summary>Throws a clear error for settings the loop cannot run with.</summary>
    public void Validate()
    {
        static void Check(bool ok, string message)
        {
            if (!ok) throw new ArgumentException($"trainer config: {message}");
        }
        Check(Steps > 0, $"Steps must be positive (got {Steps})");
        Check(LearningRate > 0 && double.IsFinite(LearningRate), $"LearningRate must be positive (got {LearningRate})");
        Check(MinLrRatio is >= 0 and <= 1, $"MinLrRatio must be in [0, 1] (got {MinLrRatio})");
        Check(WarmupSteps >= 0, $"WarmupSteps must be ≥ 0 (got {WarmupSteps})");
        Check(WeightDecay >= 0, $"WeightDecay must be ≥ 0 (got {WeightDecay})");
        Check(Betas is not null && Betas.Beta1 is >= 0 and < 1 && Betas.Beta2 is >= 0 and < 1, $"Betas must be in [0, 1) (got {Betas})");
        Check(Eps > 0, $"Eps must be positive (got {Eps})");
        Check(ClipNorm >= 0, $"ClipNorm must be ≥ 0 (got {ClipNorm})");
        Check(AccumulationSteps >= 1, $"AccumulationSteps must be ≥ 1 (got {AccumulationSteps})");
        Check(EvalEvery >= 0, $"EvalEvery must be ≥ 0 (got {EvalEvery})");
        Check(LogEvery >= 1, $"LogEvery must be ≥ 1 (got {LogEvery})");
        Check(CheckpointEvery >= 0, $"CheckpointEvery must be ≥ 0 (got {CheckpointEvery})");
        Check(KeepCheckpoints >= 1, $"KeepCheckpoints must be ≥ 1 (got {KeepCheckpoints})");
        Check(!string.IsNullOrWhiteSpace(OutDir), "OutDir must be set");
    }
}
