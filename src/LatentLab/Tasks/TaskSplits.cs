namespace LatentLab.Tasks;

/// <summary>
/// Train / validation / test sets that never share a problem. A problem's split is a function of its canonical content
/// alone (<see cref="ITaskFamily.CanonicalKey"/>, hashed): 80% of all possible problems belong to train, 10% to
/// validation, 10% to test, whatever seed or size is asked for. Generation draws candidate seeds and keeps those whose
/// problem hashes into the requested split, skipping repeats, so a split also holds no duplicate.
/// </summary>
public static class TaskSplits
{
    public const int TrainPermille = 800, ValidationPermille = 100;

    public static Split SplitOf(ITaskFamily family, TaskProblem problem)
    {
        ulong h = TaskRng.Mix(TaskRng.Hash(family.CanonicalKey(problem)));
        int bucket = (int)(h % 1000);
        return bucket < TrainPermille ? Split.Train
            : bucket < TrainPermille + ValidationPermille ? Split.Validation
            : Split.Test;
    }

    public static IReadOnlyList<TaskProblem> Generate(ITaskFamily family, Split split, int n, int difficulty, long seed)
    {
        ArgumentNullException.ThrowIfNull(family);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        var result = new List<TaskProblem>(n);
        var keys = new HashSet<string>(StringComparer.Ordinal);
        // Splits of ~10% need ~10 draws per kept problem; far beyond that the problem space is too small.
        long maxDraws = 100L * n + 10_000;
        for (long i = 0; result.Count < n; i++)
        {
            if (i >= maxDraws)
                throw new InvalidOperationException(
                    $"{family.Name}: found only {result.Count} distinct {split} problems of difficulty {difficulty} in {maxDraws} draws " +
                    $"(asked for {n}); the problem space is too small, lower n or raise the difficulty");
            long s = (long)TaskRng.Mix((ulong)seed, (ulong)i, 0x7A5C5EEDUL);
            var p = family.Generate(s, difficulty);
            if (SplitOf(family, p) != split) continue;
            if (keys.Add(family.CanonicalKey(p))) result.Add(p);
        }
        return result;
    }
}
