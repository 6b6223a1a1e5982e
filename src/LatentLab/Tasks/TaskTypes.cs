namespace LatentLab.Tasks;

/// <summary>
/// One generated problem. <paramref name="Intermediates"/> holds one dictionary per step (same order as
/// <paramref name="Steps"/>) with the named values that step computes; a set is stored as a bitmask
/// (each family documents its bit layout in <see cref="ITaskFamily.Description"/>).
/// <paramref name="Seed"/> and <paramref name="Difficulty"/> are those of the generated problem; an edited twin keeps
/// its original's seed and difficulty (it cannot be regenerated from them).
/// </summary>
public sealed record TaskProblem(string Family, long Seed, int Difficulty, string Prompt, IReadOnlyList<string> Steps, string Answer,
    IReadOnlyList<IReadOnlyDictionary<string, int>> Intermediates);

public enum EditKind { Counterfactual, Nuisance, Paraphrase, Rename }

/// <summary>
/// A problem and its edited twin. <see cref="AnswerMustChange"/> is true only for counterfactual edits (the edited answer
/// differs from the original). Nuisance and paraphrase edits keep the answer string identical. A rename maps the answer
/// through the same renaming (identical where the answer names no renamed symbol). An edit the family cannot make is
/// returned with <see cref="Supported"/> = false, <see cref="Edited"/> = <see cref="Original"/> and the reason in
/// <see cref="Description"/>: never a faked edit.
/// </summary>
public sealed record TaskEdit(EditKind Kind, TaskProblem Original, TaskProblem Edited, bool AnswerMustChange, bool Supported, string Description);

public sealed record DifficultyKnob(string Name, int Default, int Min, int Max, string Meaning);

public interface ITaskFamily
{
    string Name { get; }
    string Description { get; }
    DifficultyKnob Difficulty { get; }

    /// <summary>Every character any prompt, step or answer of this family (edits included) can contain.
    /// No step or answer contains ';' or a newline, so a trace template may join steps with either.</summary>
    IReadOnlySet<char> Alphabet { get; }

    TaskProblem Generate(long seed, int difficulty);

    /// <summary>Solves a prompt written by hand (or read back from a file) in this family's format; its seed is 0 and its
    /// difficulty the one the prompt has. Throws <see cref="FormatException"/> naming the prompt if it is not one.</summary>
    TaskProblem FromPrompt(string prompt);

    /// <summary>Exact comparison with the problem's answer after trimming white space.</summary>
    bool Verify(TaskProblem problem, string answer);

    TaskEdit Edit(TaskProblem problem, EditKind kind, long seed);

    /// <summary>A key that is equal for two problems exactly when they are the same underlying problem (independent of
    /// surface form such as spacing, list order or input noise); used to keep splits disjoint.</summary>
    string CanonicalKey(TaskProblem problem) => problem.Family + "\n" + problem.Prompt;
}

public enum Split { Train, Validation, Test }
