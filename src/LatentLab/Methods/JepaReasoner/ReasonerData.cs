using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Text;
using static TorchSharp.torch;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>
/// One training or test item: the prompt (what the Reasoner is given, from &lt;bos&gt; to the mode marker) and the
/// continuation the Reasoner reasons over and the Talker must say (thinking, answer, &lt;eos&gt;). <see cref="Reference"/>
/// is the answer a verifier checks; <see cref="Problem"/> is set for synthetic tasks.
/// </summary>
public sealed record ReasonerExample(int[] Prompt, int[] Continuation, string Reference, TaskProblem? Problem = null);

/// <summary>A padded batch: prompts left-padded (so every prompt ends at the same column), continuations right-padded.</summary>
public sealed record ReasonerBatch(Tensor PromptIds, Tensor PromptMask, Tensor Continuation, Tensor ContinuationMask, long Tokens) : IDisposable
{
    public void Dispose()
    {
        PromptIds.Dispose(); PromptMask.Dispose(); Continuation.Dispose(); ContinuationMask.Dispose();
    }

    public static ReasonerBatch Of(IReadOnlyList<ReasonerExample> xs, int pad)
    {
        int b = xs.Count, p = xs.Max(x => x.Prompt.Length), c = xs.Max(x => x.Continuation.Length);
        var pid = new long[b * p]; var pm = new long[b * p]; var cid = new long[b * c]; var cm = new long[b * c];
        long tokens = 0;
        for (int i = 0; i < b; i++)
        {
            var x = xs[i];
            int off = p - x.Prompt.Length;
            for (int j = 0; j < p; j++)
            {
                bool real = j >= off;
                pid[i * p + j] = real ? x.Prompt[j - off] : pad;
                pm[i * p + j] = real ? 1 : 0;
            }
            for (int j = 0; j < c; j++)
            {
                bool real = j < x.Continuation.Length;
                cid[i * c + j] = real ? x.Continuation[j] : pad;
                cm[i * c + j] = real ? 1 : 0;
            }
            tokens += x.Prompt.Length + x.Continuation.Length;
        }
        return new ReasonerBatch(tensor(pid).view(b, p), tensor(pm).view(b, p), tensor(cid).view(b, c), tensor(cm).view(b, c), tokens);
    }
}

/// <summary>Where a Reasoner run gets its examples: a pure function of a seed, so a resumed run sees the same batches.</summary>
public interface IReasonerData
{
    string Name { get; }
    CharTokenizer Tokenizer { get; }
    /// <summary><paramref name="n"/> training examples drawn from <paramref name="seed"/>.</summary>
    IReadOnlyList<ReasonerExample> Train(long seed, int n);
    /// <summary>True when <paramref name="generated"/> (the continuation tokens, &lt;eos&gt; included or not) carries the right answer.</summary>
    bool IsCorrect(ReasonerExample example, IReadOnlyList<int> generated);
    /// <summary>The longest continuation the Reasoner should produce latents for (the Talker stops on &lt;eos&gt;).</summary>
    int MaxContinuation { get; }
}

/// <summary>A synthetic task family in the teacher's trace format, always in thinking mode (the chain is the trace).</summary>
public sealed class TaskReasonerData : IReasonerData
{
    readonly TeacherFormat _fmt;

    /// <summary>Tests at <paramref name="difficulty"/>; training draws evenly from <paramref name="trainMinDifficulty"/> up to it (default: it alone).</summary>
    public TaskReasonerData(ITaskFamily family, int difficulty, int? trainMinDifficulty = null)
    {
        Family = family;
        Difficulty = difficulty;
        TrainMinDifficulty = trainMinDifficulty ?? difficulty;
        if (TrainMinDifficulty > difficulty || TrainMinDifficulty < family.Difficulty.Min)
            throw new ArgumentException($"{family.Name}: the training difficulties must lie in [{family.Difficulty.Min}, {difficulty}] (got from {TrainMinDifficulty})");
        _fmt = TeacherFormat.Create(family);
        // The longest continuation over a fixed sample, plus a margin for the rare longer one.
        MaxContinuation = TaskSplits.Generate(family, Split.Train, 256, difficulty, 12345).Max(p => Example(p).Continuation.Length) + 4;
    }

    public ITaskFamily Family { get; }
    public int Difficulty { get; }
    public int TrainMinDifficulty { get; }
    public TeacherFormat Format => _fmt;
    public string Name => TrainMinDifficulty == Difficulty ? $"{Family.Name} (difficulty {Difficulty})"
        : $"{Family.Name} (difficulty {Difficulty}, trained on {TrainMinDifficulty}–{Difficulty})";
    public CharTokenizer Tokenizer => (CharTokenizer)_fmt.Tokenizer;
    public int MaxContinuation { get; }

    public ReasonerExample Example(TaskProblem p)
    {
        var (ids, promptLen) = _fmt.Sequence(p, thinking: true);
        return new ReasonerExample(ids[..promptLen], ids[promptLen..], p.Answer, p);
    }

    /// <summary>Training examples; with a curriculum, problem i is of difficulty TrainMinDifficulty + i mod (the number of difficulties).</summary>
    public IReadOnlyList<ReasonerExample> Train(long seed, int n)
    {
        int k = Difficulty - TrainMinDifficulty + 1;
        if (k == 1) return TaskSplits.Generate(Family, Split.Train, n, Difficulty, seed).Select(Example).ToList();
        var byLevel = Enumerable.Range(0, k)
            .Select(j => TaskSplits.Generate(Family, Split.Train, (n - j + k - 1) / k, TrainMinDifficulty + j, seed)).ToList();
        return Enumerable.Range(0, n).Select(i => Example(byLevel[i % k][i / k])).ToList();
    }

    /// <summary>Held-out problems (test split); a noisy family variant (cfg:noise=r) gives noisy prompts with clean answers.</summary>
    public IReadOnlyList<ReasonerExample> Test(int n, long seed, ITaskFamily? variant = null) =>
        TaskSplits.Generate(variant ?? Family, Split.Test, n, Difficulty, seed).Select(Example).ToList();

    public bool IsCorrect(ReasonerExample example, IReadOnlyList<int> generated)
    {
        var answer = _fmt.ParseAnswer(generated, thinking: true);
        return answer is not null && example.Problem is { } p && Family.Verify(p, answer);
    }
}
