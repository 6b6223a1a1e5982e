using LatentLab.Tasks;
using LatentLab.Text;
using static TorchSharp.torch;

namespace LatentLab.Teacher;

/// <summary>
/// How a task problem becomes a character-level training sequence for the teacher:
/// `&lt;bos&gt;{prompt}&lt;think&gt;{step;step;…}&lt;/think&gt;{answer}&lt;eos&gt;` with thinking, or
/// `&lt;bos&gt;{prompt}&lt;direct&gt;{answer}&lt;eos&gt;` without. The mode marker is part of the prompt, so one model
/// learns both behaviours and either can be asked for at test time.
/// </summary>
public sealed class TeacherFormat
{
    public ITaskFamily Family { get; }
    public ITokenizer Tokenizer { get; }
    public ChatFormat Chat { get; } = ChatFormat.For(ChatFamily.Plain);
    public const string StepSeparator = ";";

    public TeacherFormat(ITaskFamily family, ITokenizer tokenizer, int slots = 0)
    {
        Family = family;
        Tokenizer = tokenizer;
        var missing = family.Alphabet.Where(c => tokenizer.TokenToId(c.ToString()) is null).ToList();
        if (missing.Count > 0)
            throw new ArgumentException($"tokenizer lacks characters of task '{family.Name}': {string.Join("", missing)}");
        Trace = new TraceFormat(family, tokenizer, Chat, slots);
    }

    /// <summary>A tokenizer whose alphabet is the family's (sorted, so the same family always gets the same ids).</summary>
    public static TeacherFormat Create(ITaskFamily family, int slots = 0) =>
        new(family, CharTokenizer.Create(family.Alphabet.Concat(StepSeparator).OrderBy(c => c), slots > 0 ? [TraceFormat.SlotToken] : null), slots);

    /// <summary>The format of a teacher's model folder (its tokenizer and bottleneck slots).</summary>
    public static TeacherFormat ForModel(string modelDir, ITaskFamily family) =>
        new(family, TokenizerLoader.TryLoadFromDirectory(modelDir) ?? throw new FileNotFoundException($"{modelDir} has no tokenizer.json"),
            TraceFormat.BottleneckSlots(modelDir));

    public int Slots => Trace.Slots;

    /// <summary>The same layout as a general <see cref="TraceFormat"/> (Plain chat family), for code that also runs on chat models.</summary>
    public TraceFormat Trace { get; }

    public static implicit operator TraceFormat(TeacherFormat f) => f.Trace;

    public string Thinking(TaskProblem p) => Trace.Thinking(p);

    /// <summary>Prompt ids (with &lt;bos&gt; and the mode marker): what the model is given at test time.</summary>
    public int[] PromptIds(TaskProblem p, bool thinking) => Trace.PromptIds(p, thinking);

    /// <summary>The whole training sequence and where its prompt ends (loss is taken after it).</summary>
    public (int[] Ids, int PromptLength) Sequence(TaskProblem p, bool thinking) => Trace.Sequence(p, thinking);

    /// <summary>The answer in a generated continuation (prompt excluded), or null when the model never closed its thinking.</summary>
    public string? ParseAnswer(IReadOnlyList<int> generated, bool thinking) => Trace.ParseAnswer(generated, thinking);

    /// <summary>Right-padded training batch; see <see cref="TraceFormat.Batch"/>.</summary>
    public (Tensor Ids, Tensor Targets, Tensor Mask, long LossTokens) Batch(IReadOnlyList<(int[] Ids, int PromptLength)> seqs) => Trace.Batch(seqs);
}
