using System.Text.RegularExpressions;

namespace LatentLab.Tasks;

/// <summary>
/// State tracking with a three-state automaton: a ball under one of three cups (0, 1, 2); each symbol swaps two cups
/// (a: 0-1, b: 1-2, c: 0-2). Prompt <c>1:abca=</c> (start cup, then the swaps); steps <c>a:1>0</c> (symbol, state before,
/// state after); answer: the final cup. The swaps form a Latin square (from any state the three symbols lead to three
/// different states) and each is a permutation, so changing one symbol always changes the final state; the group they
/// generate (S3) is not commutative, so order matters.
/// </summary>
public sealed partial class DfaFamily : TaskFamilyBase<DfaFamily.Params>
{
    public sealed record Params(int Start, string Symbols, bool Spaced);

    protected override string BaseName => "dfa";

    public override string Description =>
        "Cups automaton: states 0,1,2; symbols a (swap 0-1), b (swap 1-2), c (swap 0-2). Prompt 'S:symbols=' with S the start state. " +
        "One step per symbol: 'x:s>t'. Intermediates per step: pos, symbol (0 a, 1 b, 2 c), state_in, state. " +
        "Counterfactual: change one symbol or the start state. Nuisance: replace two adjacent symbols by another pair with the same " +
        "effect from the state they start in. Paraphrase: spaced symbols '1: a b c ='. Rename: relabel the cups by a permutation " +
        "(start, symbols and answer are mapped).";

    public override DifficultyKnob Difficulty { get; } = new("length", 8, 2, 64, "number of symbols");

    public override IReadOnlySet<char> Alphabet { get; } = Chars("012abc:>= ;");

    internal static int Step(int s, char x) => x switch
    {
        'a' => s switch { 0 => 1, 1 => 0, _ => s },
        'b' => s switch { 1 => 2, 2 => 1, _ => s },
        'c' => s switch { 0 => 2, 2 => 0, _ => s },
        _ => throw new ArgumentOutOfRangeException(nameof(x), x, "dfa symbol must be a, b or c"),
    };

    protected override Params Sample(TaskRng rng, int n)
    {
        var sym = new char[n];
        for (int i = 0; i < n; i++) sym[i] = "abc"[rng.Next(3)];
        return new Params(rng.Next(3), new string(sym), false);
    }

    [GeneratedRegex(@"^([012]):([abc]+)=$")]
    private static partial Regex PromptRegex();

    protected override Params Parse(TaskProblem problem)
    {
        var m = PromptRegex().Match(problem.Prompt.Replace(" ", ""));
        if (!m.Success) throw BadPrompt(problem.Prompt, "expected 'S:symbols=' with S in 0..2 and symbols in a..c");
        return new Params(m.Groups[1].Value[0] - '0', m.Groups[2].Value, problem.Prompt.Contains(' '));
    }

    private static string Render(Params p, bool spaced) =>
        spaced ? $"{p.Start}: {Spaced(p.Symbols)} =" : $"{p.Start}:{p.Symbols}=";

    protected override string Canonical(Params p) => Render(p, false);

    protected override int DifficultyOf(Params p) => p.Symbols.Length;

    protected override Solution Solve(Params p, long seed)
    {
        var steps = new List<string>();
        var inter = new List<Dictionary<string, int>>();
        int s = p.Start;
        for (int i = 0; i < p.Symbols.Length; i++)
        {
            char x = p.Symbols[i];
            int t = Step(s, x);
            steps.Add($"{x}:{s}>{t}");
            inter.Add(new() { ["pos"] = i, ["symbol"] = x - 'a', ["state_in"] = s, ["state"] = t });
            s = t;
        }
        return new Solution(Render(p, p.Spaced), steps, s.ToString(), inter);
    }

    protected override EditOutcome Counterfactual(Params p, TaskRng rng)
    {
        int i = rng.Next(p.Symbols.Length + 1);
        if (i == p.Symbols.Length)
        {
            int s = (p.Start + rng.Next(1, 3)) % 3;
            return new(p with { Start = s }, $"start state {p.Start} -> {s}");
        }
        char old = p.Symbols[i];
        char nw = (char)('a' + (old - 'a' + rng.Next(1, 3)) % 3);
        var sym = p.Symbols.ToCharArray();
        sym[i] = nw;
        return new(p with { Symbols = new string(sym) }, $"symbol {i + 1}: {old} -> {nw}");
    }

    protected override EditOutcome Nuisance(Params p, TaskRng rng)
    {
        int i = rng.Next(p.Symbols.Length - 1);
        int s = p.Start;
        for (int k = 0; k < i; k++) s = Step(s, p.Symbols[k]);
        char x = p.Symbols[i], y = p.Symbols[i + 1];
        int target = Step(Step(s, x), y);
        var pairs = new List<(char, char)>();
        foreach (char x2 in "abc")
            foreach (char y2 in "abc")
                if ((x2, y2) != (x, y) && Step(Step(s, x2), y2) == target) pairs.Add((x2, y2));
        var (nx, ny) = rng.Pick(pairs);   // the Latin square leaves exactly two other pairs
        var sym = p.Symbols.ToCharArray();
        sym[i] = nx;
        sym[i + 1] = ny;
        return new(p with { Symbols = new string(sym) }, $"symbols {i + 1}-{i + 2}: {x}{y} -> {nx}{ny} (same state {target} from {s})");
    }

    protected override EditOutcome Paraphrase(Params p, TaskRng rng) =>
        new(p with { Spaced = !p.Spaced }, p.Spaced ? "symbols written without spaces" : "symbols separated by spaces");

    protected override EditOutcome Rename(Params p, TaskRng rng)
    {
        var perms = new List<int[]> { new[] { 0, 2, 1 }, new[] { 1, 0, 2 }, new[] { 1, 2, 0 }, new[] { 2, 0, 1 }, new[] { 2, 1, 0 } };
        rng.Shuffle(perms);
        foreach (var pi in perms)
        {
            var sym = new string(p.Symbols.Select(x => { var (u, v) = SwapOf(x); return SwapSymbol(pi[u], pi[v]); }).ToArray());
            // A relabelling can fix the whole prompt (e.g. start 0, only b's, swapping cups 1 and 2): try another.
            if (pi[p.Start] != p.Start || sym != p.Symbols)
                return new(p with { Start = pi[p.Start], Symbols = sym },
                    $"cups relabelled 0->{pi[0]}, 1->{pi[1]}, 2->{pi[2]} (the answer is relabelled too)");
        }
        return EditOutcome.Unsupported("every relabelling of the cups leaves this prompt unchanged");
    }

    private static (int, int) SwapOf(char x) => x switch { 'a' => (0, 1), 'b' => (1, 2), _ => (0, 2) };

    private static char SwapSymbol(int u, int v) => (Math.Min(u, v), Math.Max(u, v)) switch
    {
        (0, 1) => 'a',
        (1, 2) => 'b',
        _ => 'c',
    };
}
