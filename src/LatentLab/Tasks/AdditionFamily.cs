using System.Numerics;
using System.Text;
using System.Text.RegularExpressions;

namespace LatentLab.Tasks;

/// <summary>
/// Multi-digit addition with a digit-by-digit carry trace. Prompt <c>1234+5678=</c>; steps from the least significant
/// digit, <c>a+b+carry_in=ss</c> with the column sum always written with two digits (<c>4+8+0=12;3+7+1=11;2+6+1=09;1+5+0=06</c>),
/// so the sum's second digit is the answer digit and its first digit is the next carry: each step needs only the prompt
/// and the previous step. Answer <c>6912</c>.
/// </summary>
public sealed partial class AdditionFamily : TaskFamilyBase<AdditionFamily.Params>
{
    /// <summary>Operands as decimal digit strings (no leading zeros, except "0").</summary>
    public sealed record Params(string A, string B);

    protected override string BaseName => "addition";

    public override string Description =>
        "Multi-digit addition. Prompt 'A+B=' with two operands of exactly `digits` digits (leading digit non-zero when digits > 1). " +
        "One step per column from the least significant: 'a+b+c=ss' (column sum as two digits). " +
        "Intermediates per step: pos (0 = units), a, b, carry_in, sum, digit (= sum % 10), carry (= sum / 10). " +
        "Counterfactual: change one digit of one operand. Nuisance: move x from one operand's digit to the other's in the same column " +
        "(column sums unchanged), or else A+t, B-t. Paraphrase: swap the operands (B+A=). Rename: not supported (no variables).";

    public override DifficultyKnob Difficulty { get; } = new("digits", 4, 1, 40, "number of digits of each operand");

    public override IReadOnlySet<char> Alphabet { get; } = Chars("0123456789+=;");

    protected override Params Sample(TaskRng rng, int digits) => new(RandomNumber(rng, digits), RandomNumber(rng, digits));

    private static string RandomNumber(TaskRng rng, int digits)
    {
        var sb = new StringBuilder(digits);
        sb.Append((char)('0' + (digits == 1 ? rng.Next(10) : rng.Next(1, 10))));
        for (int i = 1; i < digits; i++) sb.Append((char)('0' + rng.Next(10)));
        return sb.ToString();
    }

    protected override Params Parse(TaskProblem problem)
    {
        var m = PromptRegex().Match(problem.Prompt);
        if (!m.Success) throw BadPrompt(problem.Prompt, "expected 'A+B=' with decimal operands");
        return new Params(m.Groups[1].Value, m.Groups[2].Value);
    }

    [GeneratedRegex(@"^(0|[1-9][0-9]*)\+(0|[1-9][0-9]*)=$")]
    private static partial Regex PromptRegex();

    // Paraphrase-invariant: A+B and B+A are one problem for split purposes.
    protected override string Canonical(Params p) =>
        string.CompareOrdinal(p.A, p.B) <= 0 ? $"{p.A}+{p.B}=" : $"{p.B}+{p.A}=";

    protected override int DifficultyOf(Params p) => Math.Max(p.A.Length, p.B.Length);

    protected override Solution Solve(Params p, long seed)
    {
        int n = Math.Max(p.A.Length, p.B.Length);
        var steps = new List<string>(n);
        var inter = new List<Dictionary<string, int>>(n);
        var digits = new StringBuilder();
        int carry = 0;
        for (int k = 0; k < n; k++)
        {
            int a = DigitFromRight(p.A, k), b = DigitFromRight(p.B, k);
            int sum = a + b + carry;
            steps.Add($"{a}+{b}+{carry}={sum:00}");
            inter.Add(new() { ["pos"] = k, ["a"] = a, ["b"] = b, ["carry_in"] = carry, ["sum"] = sum, ["digit"] = sum % 10, ["carry"] = sum / 10 });
            digits.Insert(0, (char)('0' + sum % 10));
            carry = sum / 10;
        }
        if (carry > 0) digits.Insert(0, '1');
        string answer = digits.ToString().TrimStart('0');
        return new Solution($"{p.A}+{p.B}=", steps, answer.Length == 0 ? "0" : answer, inter);
    }

    private static int DigitFromRight(string s, int k) => k < s.Length ? s[s.Length - 1 - k] - '0' : 0;

    // A leading digit must stay non-zero so the operand keeps its length (and its difficulty).
    private static int MinDigit(string s, int k) => k == s.Length - 1 && s.Length > 1 ? 1 : 0;

    private static string SetDigitFromRight(string s, int k, int d)
    {
        var c = s.ToCharArray();
        c[s.Length - 1 - k] = (char)('0' + d);
        return new string(c);
    }

    protected override EditOutcome Counterfactual(Params p, TaskRng rng)
    {
        bool first = rng.Next(2) == 0;
        string s = first ? p.A : p.B;
        int k = rng.Next(s.Length);
        int old = DigitFromRight(s, k);
        var choices = Enumerable.Range(MinDigit(s, k), 10 - MinDigit(s, k)).Where(d => d != old).ToList();
        int nd = rng.Pick(choices);
        string e = SetDigitFromRight(s, k, nd);
        // Changing one digit changes the operand, hence the sum, by (nd - old) * 10^k != 0.
        return new(first ? p with { A = e } : p with { B = e },
            $"{(first ? "first" : "second")} operand digit at 10^{k}: {old} -> {nd}");
    }

    protected override EditOutcome Nuisance(Params p, TaskRng rng)
    {
        var options = new List<(int K, int X)>();
        for (int k = 0; k < Math.Min(p.A.Length, p.B.Length); k++)
        {
            int a = DigitFromRight(p.A, k), b = DigitFromRight(p.B, k);
            for (int x = -9; x <= 9; x++)
                if (x != 0 && a + x >= MinDigit(p.A, k) && a + x <= 9 && b - x >= MinDigit(p.B, k) && b - x <= 9)
                    options.Add((k, x));
        }
        if (options.Count > 0)
        {
            var (k, x) = rng.Pick(options);
            int a = DigitFromRight(p.A, k), b = DigitFromRight(p.B, k);
            return new(new Params(SetDigitFromRight(p.A, k, a + x), SetDigitFromRight(p.B, k, b - x)),
                $"column 10^{k}: {a}+{b} -> {a + x}+{b - x} (same column sum)");
        }
        // Every column is at an extreme (e.g. 1999+1999): shift t between the whole operands, keeping their lengths.
        var A = BigInteger.Parse(p.A);
        var B = BigInteger.Parse(p.B);
        var lo = p.A.Length == 1 ? BigInteger.Zero : BigInteger.Pow(10, p.A.Length - 1);
        var hi = BigInteger.Pow(10, p.A.Length) - 1;
        var loB = p.B.Length == 1 ? BigInteger.Zero : BigInteger.Pow(10, p.B.Length - 1);
        var hiB = BigInteger.Pow(10, p.B.Length) - 1;
        var tMin = BigInteger.Max(lo - A, B - hiB);
        var tMax = BigInteger.Min(hi - A, B - loB);
        var ts = new List<BigInteger>();
        for (var t = tMin; t <= tMax && ts.Count < 64; t++) if (!t.IsZero) ts.Add(t);
        if (ts.Count == 0)
            return EditOutcome.Unsupported($"no other pair of {p.A.Length}- and {p.B.Length}-digit operands has the sum of {p.A}+{p.B}");
        var tt = rng.Pick(ts);
        return new(new Params((A + tt).ToString(), (B - tt).ToString()), $"first operand +{tt}, second operand -{tt}");
    }

    protected override EditOutcome Paraphrase(Params p, TaskRng rng) =>
        p.A == p.B
            ? EditOutcome.Unsupported("operands are equal, so swapping them is the identity")
            : new(new Params(p.B, p.A), "operands swapped (commutativity)");

    protected override EditOutcome Rename(Params p, TaskRng rng) =>
        EditOutcome.Unsupported("addition has no variables to rename");
}
