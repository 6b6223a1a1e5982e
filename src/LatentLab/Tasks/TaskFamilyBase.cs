namespace LatentLab.Tasks;

/// <summary>
/// Shared plumbing for families that parse a problem back into parameters (<typeparamref name="TParams"/>) and solve
/// them: the prompt is the single source of truth, so an edit works on any problem, also one read back from a file.
/// Edits are checked here against the family's promise (a counterfactual must change the answer, a nuisance edit or
/// paraphrase must not), so a broken edit fails loudly instead of producing a mislabelled twin.
/// </summary>
public abstract class TaskFamilyBase<TParams> : ITaskFamily where TParams : class
{
    /// <summary>The family's name without options (e.g. "cfg" for "cfg:noise=0.1"); seeds generation, so a noisy
    /// variant generates the same clean problem as the plain family for the same seed.</summary>
    protected abstract string BaseName { get; }

    public virtual string Name => BaseName;
    public abstract string Description { get; }
    public abstract DifficultyKnob Difficulty { get; }
    public abstract IReadOnlySet<char> Alphabet { get; }

    protected abstract TParams Sample(TaskRng rng, int difficulty);

    /// <summary>The prompt, steps, answer and intermediates of a parameter set.</summary>
    protected abstract Solution Solve(TParams p, long seed);

    /// <summary>Recovers parameters from a problem; throws <see cref="FormatException"/> naming the prompt if it does
    /// not belong to this family.</summary>
    protected abstract TParams Parse(TaskProblem problem);

    /// <summary>Surface-independent rendering of the parameters (see <see cref="ITaskFamily.CanonicalKey"/>).</summary>
    protected abstract string Canonical(TParams p);

    /// <summary>The difficulty knob's value that a parameter set has (used for prompts not generated here).</summary>
    protected abstract int DifficultyOf(TParams p);

    protected abstract EditOutcome Counterfactual(TParams p, TaskRng rng);
    protected abstract EditOutcome Nuisance(TParams p, TaskRng rng);
    protected abstract EditOutcome Paraphrase(TParams p, TaskRng rng);
    protected abstract EditOutcome Rename(TParams p, TaskRng rng);

    protected sealed record Solution(string Prompt, List<string> Steps, string Answer, List<Dictionary<string, int>> Intermediates);

    /// <summary>Edited parameters and what was changed; <c>Params == null</c> means the edit is not supported, with
    /// the reason as description.</summary>
    protected sealed record EditOutcome(TParams? Params, string Description)
    {
        public static EditOutcome Unsupported(string reason) => new(null, reason);
    }

    public TaskProblem Generate(long seed, int difficulty)
    {
        CheckDifficulty(difficulty);
        var rng = TaskRng.For(TaskRng.Hash(BaseName), (ulong)seed, (ulong)difficulty);
        return Build(Sample(rng, difficulty), seed, difficulty);
    }

    public TaskProblem FromPrompt(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var p = Parse(new TaskProblem(Name, 0, 0, prompt, [], "", []));
        return Build(p, 0, DifficultyOf(p));
    }

    public bool Verify(TaskProblem problem, string answer)
    {
        ArgumentNullException.ThrowIfNull(problem);
        return answer is not null && string.Equals(answer.Trim(), problem.Answer, StringComparison.Ordinal);
    }

    public string CanonicalKey(TaskProblem problem)
    {
        CheckFamily(problem);
        return BaseName + "\n" + Canonical(Parse(problem));
    }

    public TaskEdit Edit(TaskProblem problem, EditKind kind, long seed)
    {
        CheckFamily(problem);
        var p = Parse(problem);
        // Seeded by the canonical problem, not its surface: a noisy prompt and its clean twin get the same edit.
        var rng = TaskRng.For(TaskRng.Hash(BaseName), TaskRng.Hash(Canonical(p)), (ulong)seed, (ulong)kind + 1);
        var outcome = kind switch
        {
            EditKind.Counterfactual => Counterfactual(p, rng),
            EditKind.Nuisance => Nuisance(p, rng),
            EditKind.Paraphrase => Paraphrase(p, rng),
            EditKind.Rename => Rename(p, rng),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown edit kind"),
        };
        bool mustChange = kind == EditKind.Counterfactual;
        if (outcome.Params is null)
            return new TaskEdit(kind, problem, problem, mustChange, false, outcome.Description);

        var edited = Build(outcome.Params, problem.Seed, problem.Difficulty);
        if (edited.Prompt == problem.Prompt)
            throw new InvalidOperationException($"{Name}: {kind} edit left the prompt unchanged ({problem.Prompt})");
        bool changed = edited.Answer != problem.Answer;
        if (mustChange && !changed)
            throw new InvalidOperationException($"{Name}: counterfactual edit kept the answer: {problem.Prompt} -> {edited.Prompt}");
        if (kind is EditKind.Nuisance or EditKind.Paraphrase && changed)
            throw new InvalidOperationException($"{Name}: {kind} edit changed the answer: {problem.Prompt} -> {edited.Prompt}");
        return new TaskEdit(kind, problem, edited, mustChange, true, outcome.Description);
    }

    protected TaskProblem Build(TParams p, long seed, int difficulty)
    {
        var s = Solve(p, seed);
        var inter = s.Intermediates.Select(d => (IReadOnlyDictionary<string, int>)d).ToList();
        return new TaskProblem(Name, seed, difficulty, s.Prompt, s.Steps, s.Answer, inter);
    }

    private void CheckDifficulty(int difficulty)
    {
        var k = Difficulty;
        if (difficulty < k.Min || difficulty > k.Max)
            throw new ArgumentOutOfRangeException(nameof(difficulty), difficulty,
                $"{Name}: difficulty ({k.Name}) must lie in [{k.Min}, {k.Max}]");
    }

    private void CheckFamily(TaskProblem problem)
    {
        ArgumentNullException.ThrowIfNull(problem);
        if (problem.Family != Name)
            throw new ArgumentException($"problem of family '{problem.Family}' given to family '{Name}'", nameof(problem));
    }

    protected FormatException BadPrompt(string prompt, string why) => new($"{Name}: cannot read prompt '{prompt}': {why}");

    protected static IReadOnlySet<char> Chars(string s) => new HashSet<char>(s);

    /// <summary>"ab c" -> "a b c": the spacing paraphrase shared by several families.</summary>
    protected static string Spaced(string s) => string.Join(' ', s.ToCharArray());
}
