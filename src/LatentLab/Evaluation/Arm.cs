namespace LatentLab.Evaluation;

/// <summary>What an arm is for in a study: the table marks the ceiling and the floor, every method arm is read against them.</summary>
public enum ArmRole
{
    /// <summary>An arm under test.</summary>
    Method,
    /// <summary>The best the setting allows (the oracle, or the full explicit computation): the compute to beat.</summary>
    Ceiling,
    /// <summary>What you get for free (no thinking, no latent, no training): the result to beat.</summary>
    Floor,
    /// <summary>A baseline that is neither bound (a distilled student, a coupled model).</summary>
    Reference,
}

/// <summary>
/// One row of a study: a way of answering the study's problems, its verified accuracy, and what it spends.
/// <c>Flops</c> and <c>TokenSteps</c> are forward compute per answer (0 = not measured); <c>TrainFlops</c> is what
/// the arm spent on training beyond the shared model (0 = none). <c>Correct</c> holds the per-problem outcomes in
/// the study's problem order, so two arms can be compared pairwise. An arm that could not be run has no accuracy
/// and says why in <c>NotRunReason</c>.
/// </summary>
public sealed record Arm(string Name, string Description, ArmRole Role, Proportion? Accuracy, IReadOnlyList<bool>? Correct = null,
    double TokenSteps = 0, double Flops = 0, double TrainFlops = 0, double Seconds = 0, string Notes = "", string? NotRunReason = null)
{
    /// <summary>An arm from its per-problem outcomes (accuracy with the Wilson interval).</summary>
    public static Arm Graded(string name, string description, ArmRole role, IReadOnlyList<bool> correct,
        double tokenSteps = 0, double flops = 0, double trainFlops = 0, double seconds = 0, string notes = "") =>
        new(name, description, role, Proportion.Wilson(correct.Count(c => c), correct.Count), correct, tokenSteps, flops, trainFlops, seconds, notes);

    public static Arm NotRun(string name, string description, ArmRole role, string reason) =>
        new(name, description, role, null, NotRunReason: reason);

    public bool WasRun => NotRunReason is null && Accuracy is not null;
}
