using System.Text.RegularExpressions;

namespace LatentLab.Tasks;

/// <summary>
/// Sorting a short list of numbers 0..99 ascending by selection: each step takes the smallest remaining value (the
/// first occurrence on ties) and writes it with the values still left in their original order,
/// <c>[31,7,58,2]=</c> gives <c>2:31,7,58</c>, <c>7:31,58</c>, <c>31:58</c>, <c>58:-</c>; answer <c>2,7,31,58</c>.
/// </summary>
public sealed partial class SortFamily : TaskFamilyBase<SortFamily.Params>
{
    public sealed record Params(IReadOnlyList<int> Values, bool Spaced);

    protected override string BaseName => "sort";

    public override string Description =>
        "Sort ascending. Prompt '[v,v,...]=' with values 0..99. One step per value: 'min:remaining' (remaining in input order, '-' when empty). " +
        "Answer: comma-separated sorted list. Intermediates per step: min, index (its position in the input), " +
        "remaining (count left), remaining_mask (bit i = input position i still unsorted). " +
        "Counterfactual: change one value. Nuisance: swap two different values in the input. Paraphrase: ', ' separators. Rename: not supported.";

    public override DifficultyKnob Difficulty { get; } = new("length", 5, 2, 24, "number of values in the list");

    public override IReadOnlySet<char> Alphabet { get; } = Chars("0123456789[],:=- ;");

    protected override Params Sample(TaskRng rng, int n) =>
        new(Enumerable.Range(0, n).Select(_ => rng.Next(100)).ToList(), false);

    [GeneratedRegex(@"^\[([0-9]{1,2}(?:, ?[0-9]{1,2})*)\]=$")]
    private static partial Regex PromptRegex();

    protected override Params Parse(TaskProblem problem)
    {
        var m = PromptRegex().Match(problem.Prompt);
        if (!m.Success) throw BadPrompt(problem.Prompt, "expected '[v,v,...]=' with values 0..99");
        var values = m.Groups[1].Value.Split(',').Select(v => int.Parse(v.Trim())).ToList();
        if (values.Count > Difficulty.Max) throw BadPrompt(problem.Prompt, $"more than {Difficulty.Max} values");
        return new Params(values, problem.Prompt.Contains(' '));
    }

    private static string Render(Params p, bool spaced) => "[" + string.Join(spaced ? ", " : ",", p.Values) + "]=";

    protected override string Canonical(Params p) => Render(p, false);

    protected override int DifficultyOf(Params p) => p.Values.Count;

    protected override Solution Solve(Params p, long seed)
    {
        var steps = new List<string>();
        var inter = new List<Dictionary<string, int>>();
        var left = Enumerable.Range(0, p.Values.Count).ToList();
        int mask = (1 << p.Values.Count) - 1;
        var sorted = new List<int>();
        while (left.Count > 0)
        {
            int best = left.MinBy(i => p.Values[i]);   // MinBy keeps the first of equal keys
            left.Remove(best);
            mask &= ~(1 << best);
            sorted.Add(p.Values[best]);
            steps.Add($"{p.Values[best]}:{(left.Count == 0 ? "-" : string.Join(',', left.Select(i => p.Values[i])))}");
            inter.Add(new() { ["min"] = p.Values[best], ["index"] = best, ["remaining"] = left.Count, ["remaining_mask"] = mask });
        }
        return new Solution(Render(p, p.Spaced), steps, string.Join(',', sorted), inter);
    }

    protected override EditOutcome Counterfactual(Params p, TaskRng rng)
    {
        int i = rng.Next(p.Values.Count);
        int v = (p.Values[i] + rng.Next(1, 100)) % 100;
        var values = p.Values.ToList();
        values[i] = v;
        // The sorted list is the multiset of values, which now differs.
        return new(p with { Values = values }, $"value {i + 1}: {p.Values[i]} -> {v}");
    }

    protected override EditOutcome Nuisance(Params p, TaskRng rng)
    {
        var pairs = (from i in Enumerable.Range(0, p.Values.Count)
                     from j in Enumerable.Range(0, p.Values.Count)
                     where i < j && p.Values[i] != p.Values[j]
                     select (i, j)).ToList();
        if (pairs.Count == 0) return EditOutcome.Unsupported("all values are equal: no other order");
        var (a, b) = rng.Pick(pairs);
        var values = p.Values.ToList();
        (values[a], values[b]) = (values[b], values[a]);
        return new(p with { Values = values }, $"values {a + 1} and {b + 1} swapped");
    }

    protected override EditOutcome Paraphrase(Params p, TaskRng rng) =>
        new(p with { Spaced = !p.Spaced }, p.Spaced ? "',' separators" : "', ' separators");

    protected override EditOutcome Rename(Params p, TaskRng rng) =>
        EditOutcome.Unsupported("sort has no variables to rename");
}
