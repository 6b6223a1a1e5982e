using LatentLab.Tasks;

namespace LatentLab.Latents;

/// <summary>
/// One sampled trace of one problem, cut into reasoning steps: what a step store holds per row besides its latents
/// (row 0: the state at the last prompt token; row 1 + i: the mean state over step i's tokens).
/// <see cref="Draw"/> numbers the samples of a problem (the greedy trace is draw −1); <see cref="StepCorrect"/> is the task's
/// step check (<see cref="StepCheck"/>); <see cref="LogProb"/> is the model's log-probability of its whole continuation
/// (thinking, answer and stop token) at temperature 1.
/// </summary>
public sealed record StepSample(
    int Index,
    int ProblemIndex,
    int Draw,
    TaskProblem Problem,
    int[] PromptIds,
    int[] TraceIds,
    IReadOnlyList<StepSpan> Steps,
    IReadOnlyList<bool> StepCorrect,
    string? Answer,
    bool Verified,
    double LogProb,
    int GeneratedTokens)
{
    public bool Greedy => Draw < 0;

    /// <summary>Latent rows of this sample: the prompt state and one per step.</summary>
    public int Rows => Steps.Count + 1;

    /// <summary>The first step that differs from the task's own (null when every step is right and none is missing).</summary>
    public int? FirstWrongStep
    {
        get
        {
            for (int i = 0; i < StepCorrect.Count; i++) if (!StepCorrect[i]) return i;
            return Steps.Count < Problem.Steps.Count ? Steps.Count : null;
        }
    }
}

/// <summary>
/// The step checker every task family gets for free: the families' steps are deterministic functions of the problem,
/// so step i is right exactly when it equals the task's own step i (the addition family's <c>3+7+1=11</c>), and the
/// first step that differs is the first wrong one.
/// </summary>
public static class StepCheck
{
    public static bool Correct(TaskProblem problem, int index, string text) =>
        index >= 0 && index < problem.Steps.Count && string.Equals(problem.Steps[index].Trim(), text.Trim(), StringComparison.Ordinal);

    public static bool[] All(TaskProblem problem, IReadOnlyList<StepSpan> steps) =>
        steps.Select((s, i) => Correct(problem, i, s.Text)).ToArray();
}
