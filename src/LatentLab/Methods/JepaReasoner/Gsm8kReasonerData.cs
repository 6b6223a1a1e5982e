using System.Text;
using LatentLab.Tasks;
using LatentLab.Text;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>
/// GSM8K-format examples as character-level Reasoner data: prompt <c>&lt;bos&gt;[shots]Question: q\nAnswer:</c>,
/// continuation <c> steps\n#### n&lt;eos&gt;</c> (calculator annotations stripped). A k-shot prompt prepends k solved
/// examples in the same format, separated by blank lines. Characters outside the training alphabet become '?'.
/// </summary>
public sealed class Gsm8kReasonerData : IReasonerData
{
    readonly IReadOnlyList<MathExample> _train;

    Gsm8kReasonerData(string name, IReadOnlyList<MathExample> train, CharTokenizer tok)
    {
        Name = name;
        _train = train;
        Tokenizer = tok;
        MaxContinuation = train.Max(e => Continuation(e).Length) + 8;
    }

    public string Name { get; }
    public CharTokenizer Tokenizer { get; }
    public int MaxContinuation { get; }
    public IReadOnlyList<MathExample> TrainExamples => _train;

    /// <summary>Loads a GSM8K jsonl file (malformed lines are errors naming the line) as training data.</summary>
    public static Gsm8kReasonerData FromFile(string path) => FromExamples(Path.GetFileName(path), Load(path));

    public static IReadOnlyList<MathExample> Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"GSM8K file not found: {path}", path);
        var r = Gsm8kLoader.Load(path, MalformedPolicy.Fail);
        if (r.Examples.Count == 0) throw new InvalidDataException($"{path}: no GSM8K examples");
        return r.Examples;
    }

    public static Gsm8kReasonerData FromExamples(string name, IReadOnlyList<MathExample> train)
    {
        var chars = new SortedSet<char>("Question: Answer:#\n?0123456789");
        foreach (var e in train) foreach (var c in Text(e)) chars.Add(c);
        return new Gsm8kReasonerData(name, train, CharTokenizer.Create(chars));
    }

    static string Steps(MathExample e) => Gsm8kLoader.StripCalculatorAnnotations(e.Steps ?? "").Trim();
    static string Text(MathExample e) => Question(e) + " " + Steps(e) + "\n#### " + e.Answer + "\n\n";
    static string Question(MathExample e) => "Question: " + e.Question.Trim() + "\nAnswer:";
    static string Solved(MathExample e) => Question(e) + " " + Steps(e) + "\n#### " + e.Answer;

    int[] Encode(string text) =>
        Tokenizer.Encode(new string(text.Select(c => Tokenizer.TokenToId(c.ToString()) is null ? '?' : c).ToArray()));

    int[] Continuation(MathExample e) => [.. Encode(" " + Steps(e) + "\n#### " + e.Answer), Tokenizer.EosId!.Value];

    /// <summary>The example with <paramref name="shots"/> solved examples in front of its question.</summary>
    public ReasonerExample Example(MathExample e, IReadOnlyList<MathExample> shots)
    {
        var prefix = new StringBuilder();
        foreach (var s in shots) prefix.Append(Solved(s)).Append("\n\n");
        return new ReasonerExample([Tokenizer.BosId!.Value, .. Encode(prefix + Question(e))], Continuation(e), e.Answer);
    }

    public IReadOnlyList<ReasonerExample> Train(long seed, int n)
    {
        var rng = new Random(unchecked((int)seed ^ (int)(seed >> 32)));
        return Enumerable.Range(0, n).Select(_ => Example(_train[rng.Next(_train.Count)], [])).ToList();
    }

    public bool IsCorrect(ReasonerExample example, IReadOnlyList<int> generated)
    {
        var text = Tokenizer.Decode(generated.Where(t => t != Tokenizer.EosId));
        // A babbled digit run ("1200000…") parses to ±∞, which the relative-tolerance comparison would accept for any
        // reference (|∞ − x| ≤ tol·∞); an infinite answer is never correct.
        if (AnswerNormalizer.ExtractFinalAnswer(text) is not { } answer) return false;
        if (AnswerNormalizer.Normalize(answer).Value is { } v && !double.IsFinite(v)) return false;
        return AnswerNormalizer.Equivalent(answer, example.Reference);
    }
}
