using System.Text;
using System.Text.RegularExpressions;

namespace LatentLab.Tasks;

/// <summary>
/// A chain of modular operations applied left to right, each result reduced mod a prime m. Prompt <c>m7:3+5*2-4=</c>;
/// steps <c>3+5=1</c>, <c>1*2=2</c>, <c>2-4=5</c>; answer <c>5</c>. Operands of + and - lie in 1..m-1 and of * in
/// 2..m-1, so with a prime modulus every operation is a bijection of Z_m: that is what guarantees a counterfactual
/// change to the start value (or to a +/- operand) reaches the answer.
/// </summary>
public sealed partial class ModChainFamily : TaskFamilyBase<ModChainFamily.Params>
{
    public sealed record Op(char Kind, int X);
    public sealed record Params(int M, int Start, IReadOnlyList<Op> Ops, bool Spaced);

    private static readonly int[] Moduli = [5, 7, 11, 13];

    protected override string BaseName => "modchain";

    public override string Description =>
        "Chain of modular operations, left to right, reduced mod a prime m in {5,7,11,13}. Prompt 'm7:3+5*2-4='. " +
        "One step per operation: 'acc op x=new'. Intermediates per step: modulus, acc_in, op (0 '+', 1 '-', 2 '*'), operand, acc. " +
        "Counterfactual: change the start value or one +/- operand. Nuisance: rewrite '+a' as '-(m-a)' (or '-a' as '+(m-a)'); " +
        "every accumulator stays the same. Paraphrase: spaced tokens 'm7: 3 + 5 * 2 - 4 ='. Rename: not supported.";

    public override DifficultyKnob Difficulty { get; } = new("ops", 4, 1, 40, "number of operations in the chain");

    public override IReadOnlySet<char> Alphabet { get; } = Chars("0123456789m:+-*= ;");

    protected override Params Sample(TaskRng rng, int n)
    {
        int m = rng.Pick(Moduli);
        var ops = new List<Op>(n);
        for (int i = 0; i < n; i++)
        {
            char k = "+-*"[rng.Next(3)];
            ops.Add(new Op(k, k == '*' ? rng.Next(2, m) : rng.Next(1, m)));
        }
        return new Params(m, rng.Next(m), ops, false);
    }

    [GeneratedRegex(@"^m([0-9]+):([0-9]+)((?:[-+*][0-9]+)+)=$")]
    private static partial Regex PromptRegex();

    [GeneratedRegex(@"([-+*])([0-9]+)")]
    private static partial Regex OpRegex();

    protected override Params Parse(TaskProblem problem)
    {
        var m = PromptRegex().Match(problem.Prompt.Replace(" ", ""));
        if (!m.Success) throw BadPrompt(problem.Prompt, "expected 'mM:x(op y)+=' with op in + - *");
        int mod = int.Parse(m.Groups[1].Value);
        int start = int.Parse(m.Groups[2].Value);
        if (mod < 2 || start >= mod) throw BadPrompt(problem.Prompt, "modulus below 2 or start value not reduced");
        var ops = OpRegex().Matches(m.Groups[3].Value).Select(x => new Op(x.Groups[1].Value[0], int.Parse(x.Groups[2].Value))).ToList();
        if (ops.Any(o => o.X >= mod)) throw BadPrompt(problem.Prompt, "operand not reduced mod m");
        return new Params(mod, start, ops, problem.Prompt.Contains(' '));
    }

    private static string Render(Params p, bool spaced)
    {
        var sb = new StringBuilder();
        sb.Append('m').Append(p.M).Append(':');
        if (spaced) sb.Append(' ');
        sb.Append(p.Start);
        foreach (var o in p.Ops)
        {
            if (spaced) sb.Append(' ').Append(o.Kind).Append(' ').Append(o.X);
            else sb.Append(o.Kind).Append(o.X);
        }
        sb.Append(spaced ? " =" : "=");
        return sb.ToString();
    }

    protected override string Canonical(Params p) => Render(p, false);

    protected override int DifficultyOf(Params p) => p.Ops.Count;

    private static int Apply(int m, int acc, Op o) => o.Kind switch
    {
        '+' => (acc + o.X) % m,
        '-' => ((acc - o.X) % m + m) % m,
        '*' => acc * o.X % m,
        _ => throw new InvalidOperationException($"unknown operation '{o.Kind}'"),
    };

    protected override Solution Solve(Params p, long seed)
    {
        var steps = new List<string>();
        var inter = new List<Dictionary<string, int>>();
        int acc = p.Start;
        foreach (var o in p.Ops)
        {
            int next = Apply(p.M, acc, o);
            steps.Add($"{acc}{o.Kind}{o.X}={next}");
            inter.Add(new() { ["modulus"] = p.M, ["acc_in"] = acc, ["op"] = "+-*".IndexOf(o.Kind), ["operand"] = o.X, ["acc"] = next });
            acc = next;
        }
        return new Solution(Render(p, p.Spaced), steps, acc.ToString(), inter);
    }

    protected override EditOutcome Counterfactual(Params p, TaskRng rng)
    {
        var additive = Enumerable.Range(0, p.Ops.Count).Where(i => p.Ops[i].Kind != '*').ToList();
        int choice = rng.Next(additive.Count + 1);
        if (choice == additive.Count)
        {
            int s = (p.Start + rng.Next(1, p.M)) % p.M;
            return new(p with { Start = s }, $"start value {p.Start} -> {s}");
        }
        int i = additive[choice];
        var o = p.Ops[i];
        int x = 1 + (o.X - 1 + rng.Next(1, p.M - 1)) % (p.M - 1);   // another value in 1..m-1
        var ops = p.Ops.ToList();
        ops[i] = o with { X = x };
        return new(p with { Ops = ops }, $"operation {i + 1}: {o.Kind}{o.X} -> {o.Kind}{x}");
    }

    protected override EditOutcome Nuisance(Params p, TaskRng rng)
    {
        var additive = Enumerable.Range(0, p.Ops.Count).Where(i => p.Ops[i].Kind != '*').ToList();
        var ops = p.Ops.ToList();
        if (additive.Count > 0)
        {
            int i = rng.Pick(additive);
            var o = ops[i];
            ops[i] = new Op(o.Kind == '+' ? '-' : '+', p.M - o.X);
            return new(p with { Ops = ops }, $"operation {i + 1}: {o.Kind}{o.X} -> {ops[i].Kind}{ops[i].X} (same residue)");
        }
        var swappable = Enumerable.Range(0, ops.Count - 1).Where(i => ops[i].X != ops[i + 1].X).ToList();
        if (swappable.Count == 0)
            return EditOutcome.Unsupported("only equal multiplications: no answer-preserving change");
        int j = rng.Pick(swappable);
        (ops[j], ops[j + 1]) = (ops[j + 1], ops[j]);
        return new(p with { Ops = ops }, $"multiplications {j + 1} and {j + 2} swapped (commutativity)");
    }

    protected override EditOutcome Paraphrase(Params p, TaskRng rng) =>
        new(p with { Spaced = !p.Spaced }, p.Spaced ? "tokens written without spaces" : "tokens separated by spaces");

    protected override EditOutcome Rename(Params p, TaskRng rng) =>
        EditOutcome.Unsupported("modchain has no variables to rename");
}
