using System.Globalization;
using System.Text;

namespace LatentLab.Tasks;

/// <summary>
/// Context-free completion in the two-bracket Dyck language (S -> e | S S | ( S ) | [ S ]): the prompt is a prefix of a
/// word, the answer is its unique shortest completion (the closers of the unmatched openers, innermost first).
/// Prompt <c>([()[=</c>; steps <c>token>stack</c> (<c>(>(</c>, <c>[>([</c>, <c>(>([(</c>, <c>)>([</c>, <c>[>([[</c>); answer <c>]])</c>.
/// <para>Noise: with rate r > 0 each prompt token is replaced, independently with probability r, by one of the three
/// other bracket tokens (chosen by hashing the seed and the position, so a problem is still a function of its seed).
/// Under noise the answer, the steps and the intermediates are those of the clean prefix: the model has to see through
/// the corruption, as in JEPA-Reasoner's CFG robustness experiment. The clean prefix is readable from the steps (each
/// step starts with the clean token); intermediates record which positions were corrupted.</para>
/// </summary>
public sealed class CfgFamily : TaskFamilyBase<CfgFamily.Params>
{
    public sealed record Params(string Clean, bool Spaced);

    private const string Tokens = "()[]";
    private const int MaxDepth = 24;
    /// <summary>The sampler closes the innermost opener with this probability wherever closing and opening are both allowed.</summary>
    private const double CloseProbability = 0.45;

    // Never close the last opener at the last position, so the completion is never empty.
    private static bool CanClose(int pos, int n, int depth) => depth > 0 && !(pos == n - 1 && depth == 1);
    private static bool CanOpen(int depth) => depth < MaxDepth;

    public CfgFamily() : this(0) { }

    public CfgFamily(double noiseRate)
    {
        if (!(noiseRate >= 0 && noiseRate <= 1))
            throw new ArgumentOutOfRangeException(nameof(noiseRate), noiseRate, "cfg noise rate must lie in [0, 1]");
        NoiseRate = noiseRate;
    }

    public double NoiseRate { get; }

    protected override string BaseName => "cfg";

    public override string Name => NoiseRate == 0 ? "cfg" : "cfg:noise=" + NoiseRate.ToString("0.###", CultureInfo.InvariantCulture);

    public override string Description =>
        "Dyck-2 completion: prompt is a prefix over ( ) [ ] ending in '=', the answer its shortest completion. " +
        "One step per token: 'token>stack' ('-' for an empty stack). " +
        "Intermediates per step: pos, token and observed (0 '(', 1 ')', 2 '[', 3 ']'; observed is the possibly noisy prompt token), " +
        "noised (0/1), depth, stack (bit i = 1 when the i-th open bracket from the bottom is '['). " +
        $"Noise rate {NoiseRate.ToString(CultureInfo.InvariantCulture)}: corrupted prompt tokens; answer, steps and intermediates stay those of the clean prefix. " +
        "Counterfactual: flip the type of an unmatched opener. Nuisance: flip the type of a matched pair. " +
        "Paraphrase: spaced tokens. Rename: swap the bracket types everywhere (the answer is swapped too).";

    public override DifficultyKnob Difficulty { get; } = new("length", 12, 2, 48, "number of tokens in the prefix");

    public override IReadOnlySet<char> Alphabet { get; } = Chars("()[]>-= ;");

    protected override Params Sample(TaskRng rng, int n)
    {
        var sb = new StringBuilder(n);
        var stack = new Stack<char>();
        for (int i = 0; i < n; i++)
        {
            bool canClose = CanClose(i, n, stack.Count), canOpen = CanOpen(stack.Count);
            if (canClose && (!canOpen || rng.NextDouble() < CloseProbability))
                sb.Append(stack.Pop() == '(' ? ')' : ']');
            else
            {
                char o = rng.Next(2) == 0 ? '(' : '[';
                stack.Push(o);
                sb.Append(o);
            }
        }
        return new Params(sb.ToString(), false);
    }

    protected override Params Parse(TaskProblem problem)
    {
        string observed = Observed(problem.Prompt);
        // Under noise the prompt is not the problem: the clean prefix is the first character of each step.
        string clean = problem.Steps.Count > 0 ? string.Concat(problem.Steps.Select(s => s.Length > 0 ? s[0] : '?')) : observed;
        if (clean.Length != observed.Length || clean.Any(c => !Tokens.Contains(c)))
            throw BadPrompt(problem.Prompt, "steps do not give one clean token per prompt token");
        if (NoiseRate == 0 && clean != observed)
            throw BadPrompt(problem.Prompt, "steps disagree with a noise-free prompt");
        Stack(clean, problem.Prompt);
        return new Params(clean, problem.Prompt.Contains(' '));
    }

    /// <summary>The bracket tokens of a prompt (spaces and the closing '=' dropped), or a clear refusal.</summary>
    private string Observed(string prompt)
    {
        string observed = prompt.Replace(" ", "");
        if (!observed.EndsWith('=') || observed.Length < 2 || observed[..^1].Any(c => !Tokens.Contains(c)))
            throw BadPrompt(prompt, "expected bracket tokens ( ) [ ] followed by '='");
        return observed[..^1];
    }

    /// <summary>The shortest completion of a prefix whose unmatched openers are <paramref name="stack"/> (bottom first): their closers, innermost first.</summary>
    private static string Completion(IEnumerable<char> stack) => new(stack.Reverse().Select(c => c == '(' ? ')' : ']').ToArray());

    private List<char> Stack(string clean, string prompt)
    {
        var stack = new List<char>();
        foreach (char c in clean)
        {
            if (c is '(' or '[') stack.Add(c);
            else if (stack.Count == 0 || stack[^1] != (c == ')' ? '(' : '['))
                throw BadPrompt(prompt, $"'{clean}' is not a prefix of a Dyck word");
            else stack.RemoveAt(stack.Count - 1);
            if (stack.Count > MaxDepth) throw BadPrompt(prompt, $"nesting deeper than {MaxDepth}");
        }
        if (stack.Count == 0) throw BadPrompt(prompt, "the prefix is already complete");
        return stack;
    }

    // Deterministic per (seed, position, clean token) so edits keep the corruption pattern of their original.
    private char Observe(long seed, int pos, char clean)
    {
        if (NoiseRate == 0) return clean;
        var rng = TaskRng.For(0xC0FFEEUL, (ulong)seed, (ulong)pos);
        if (rng.NextDouble() >= NoiseRate) return clean;
        return Tokens[(Tokens.IndexOf(clean) + rng.Next(1, 4)) % 4];
    }

    protected override string Canonical(Params p) => p.Clean + "=";

    protected override int DifficultyOf(Params p) => p.Clean.Length;

    protected override Solution Solve(Params p, long seed)
    {
        var steps = new List<string>();
        var inter = new List<Dictionary<string, int>>();
        var observed = new StringBuilder();
        var stack = new List<char>();
        for (int i = 0; i < p.Clean.Length; i++)
        {
            char c = p.Clean[i];
            if (c is '(' or '[') stack.Add(c);
            else stack.RemoveAt(stack.Count - 1);
            char o = Observe(seed, i, c);
            observed.Append(o);
            int mask = 0;
            for (int k = 0; k < stack.Count; k++) if (stack[k] == '[') mask |= 1 << k;
            steps.Add($"{c}>{(stack.Count == 0 ? "-" : new string(stack.ToArray()))}");
            inter.Add(new()
            {
                ["pos"] = i, ["token"] = Tokens.IndexOf(c), ["observed"] = Tokens.IndexOf(o), ["noised"] = o != c ? 1 : 0,
                ["depth"] = stack.Count, ["stack"] = mask,
            });
        }
        string answer = Completion(stack);
        string prompt = p.Spaced ? Spaced(observed.ToString()) + " =" : observed + "=";
        return new Solution(prompt, steps, answer, inter);
    }

    /// <summary>
    /// The exact posterior over completions given a (possibly noisy) prompt: the sampler's prior over clean prefixes of
    /// the prompt's length times this family's noise model (each token kept with probability 1 − r, else replaced by one
    /// of the other three), summed over the prefixes that share a completion. A forward pass over the stacks reachable
    /// at each position, so it is exact, not sampled. This is what a reader that knew both the grammar's sampler and the
    /// noise could at best infer; its most likely completion (<see cref="MostLikelyCompletion"/>) is the Bayes-optimal
    /// answer, the ceiling of any model that sees only the noisy prompt (exactly so for problems drawn from the sampler;
    /// a test split, a hash-chosen and deduplicated subset of it, differs from that prior only slightly).
    /// </summary>
    public IReadOnlyDictionary<string, double> CompletionPosterior(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        string observed = Observed(prompt);
        int n = observed.Length;
        if (n > MaxPosteriorLength)
            throw new ArgumentException($"{Name}: the exact posterior keeps every reachable stack (about 2^(n−1)); prefixes longer than {MaxPosteriorLength} tokens (got {n}) are out of its reach");
        double Likelihood(char clean, char seen) => clean == seen ? 1 - NoiseRate : NoiseRate / 3;
        // Stacks as strings of openers, bottom first; the probability of each stack jointly with the tokens seen so far.
        var forward = new Dictionary<string, double>(StringComparer.Ordinal) { [""] = 1 };
        for (int i = 0; i < n; i++)
        {
            var next = new Dictionary<string, double>(StringComparer.Ordinal);
            void Add(string stack, double p) { if (p > 0) next[stack] = next.GetValueOrDefault(stack) + p; }
            foreach (var (stack, p) in forward)
            {
                bool canClose = CanClose(i, n, stack.Length), canOpen = CanOpen(stack.Length);
                double close = canClose ? (canOpen ? CloseProbability : 1) : 0, open = canOpen ? (1 - close) / 2 : 0;
                if (close > 0) Add(stack[..^1], p * close * Likelihood(stack[^1] == '(' ? ')' : ']', observed[i]));
                if (open > 0)
                {
                    Add(stack + "(", p * open * Likelihood('(', observed[i]));
                    Add(stack + "[", p * open * Likelihood('[', observed[i]));
                }
            }
            forward = next;
        }
        double total = forward.Values.Sum();
        if (!(total > 0)) throw BadPrompt(prompt, $"no clean prefix of length {n} can give this prompt at noise rate {NoiseRate}");
        // The completion closes the final stack innermost first.
        return forward.ToDictionary(kv => Completion(kv.Key), kv => kv.Value / total, StringComparer.Ordinal);
    }

    /// <summary>The longest prefix whose exact posterior <see cref="CompletionPosterior"/> computes (about 2^19 stacks at most).</summary>
    public const int MaxPosteriorLength = 20;

    /// <summary>The Bayes-optimal answer to a (possibly noisy) prompt: the completion with the largest posterior (ties: ordinal order).</summary>
    public string MostLikelyCompletion(string prompt) =>
        CompletionPosterior(prompt).OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).First().Key;

    /// <summary>Index in the prefix of each opener's partner closer (-1 while unmatched).</summary>
    private static int[] Partners(string clean)
    {
        var partner = Enumerable.Repeat(-1, clean.Length).ToArray();
        var open = new Stack<int>();
        for (int i = 0; i < clean.Length; i++)
        {
            if (clean[i] is '(' or '[') open.Push(i);
            else
            {
                int j = open.Pop();
                partner[j] = i;
                partner[i] = j;
            }
        }
        return partner;
    }

    private static char Flip(char c) => c switch { '(' => '[', '[' => '(', ')' => ']', ']' => ')', _ => c };

    protected override EditOutcome Counterfactual(Params p, TaskRng rng)
    {
        var partner = Partners(p.Clean);
        var unmatched = Enumerable.Range(0, p.Clean.Length).Where(i => partner[i] < 0).ToList();
        int k = rng.Pick(unmatched);
        var c = p.Clean.ToCharArray();
        c[k] = Flip(c[k]);
        return new(p with { Clean = new string(c) }, $"unmatched opener {k + 1}: {p.Clean[k]} -> {c[k]}");
    }

    protected override EditOutcome Nuisance(Params p, TaskRng rng)
    {
        var partner = Partners(p.Clean);
        var openers = Enumerable.Range(0, p.Clean.Length).Where(i => partner[i] > i).ToList();
        if (openers.Count == 0) return EditOutcome.Unsupported("no matched pair to flip");
        int k = rng.Pick(openers);
        var c = p.Clean.ToCharArray();
        c[k] = Flip(c[k]);
        c[partner[k]] = Flip(c[partner[k]]);
        return new(p with { Clean = new string(c) }, $"matched pair at {k + 1}-{partner[k] + 1} flipped to {c[k]}{c[partner[k]]}");
    }

    protected override EditOutcome Paraphrase(Params p, TaskRng rng) =>
        new(p with { Spaced = !p.Spaced }, p.Spaced ? "tokens written without spaces" : "tokens separated by spaces");

    protected override EditOutcome Rename(Params p, TaskRng rng) =>
        new(p with { Clean = new string(p.Clean.Select(Flip).ToArray()) }, "bracket types swapped: ( <-> [ (the answer is swapped too)");
}
