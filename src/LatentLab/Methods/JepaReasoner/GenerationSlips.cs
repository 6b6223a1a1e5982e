using LatentLab.Generation;
using LatentLab.Tasks;
using LatentLab.Text;
using static TorchSharp.torch;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>
/// Token slips during generation: the errors JEPA-Reasoner's decoupling contains by construction. While a row has not
/// closed its thinking, each trace token it emits is, with probability <see cref="Rate"/>, replaced by another token
/// of the trace alphabet (uniform over the others), and the slipped token is what the model reads next. The thinking
/// marker, the answer after it and &lt;eos&gt; are never slipped, so whatever the answer loses comes from slips that
/// travelled. Deterministic per (seed, problem, step), so two models that write the same trace slip at the same places.
/// </summary>
public sealed class GenerationSlips
{
    readonly int[] _alphabet;
    readonly HashSet<int> _inAlphabet;
    readonly long _seed;

    public GenerationSlips(double rate, IReadOnlyList<int> traceAlphabet, int thinkEnd, long seed)
    {
        if (!(rate >= 0 && rate <= 1)) throw new ArgumentOutOfRangeException(nameof(rate), rate, "slip rate must lie in [0, 1]");
        if (traceAlphabet.Count < 2) throw new ArgumentException("a slip needs a trace alphabet of at least two tokens");
        if (traceAlphabet.Contains(thinkEnd)) throw new ArgumentException("the thinking marker cannot be in the trace alphabet");
        Rate = rate;
        ThinkEnd = thinkEnd;
        _alphabet = traceAlphabet.Distinct().Order().ToArray();
        _inAlphabet = [.. _alphabet];
        _seed = seed;
    }

    public double Rate { get; }
    public int ThinkEnd { get; }
    public IReadOnlyList<int> Alphabet => _alphabet;

    /// <summary>The slips of a task data set: its trace alphabet is every token in the thinking part of 256 training continuations.</summary>
    public static GenerationSlips For(TaskReasonerData data, double rate, long seed)
    {
        int thinkEnd = data.Tokenizer.TokenToId(CharTokenizer.ThinkEnd) ?? throw new InvalidOperationException("the tokenizer has no thinking marker");
        var alphabet = data.Train(seed ^ 0x5A11L, 256).SelectMany(x => x.Continuation.TakeWhile(t => t != thinkEnd)).Distinct().ToList();
        return new GenerationSlips(rate, alphabet, thinkEnd, seed);
    }

    /// <summary>The same rate and alphabet with other random draws.</summary>
    public GenerationSlips WithSeed(long seed) => new(Rate, _alphabet, ThinkEnd, seed);

    /// <summary>The same alphabet and draws at another rate.</summary>
    public GenerationSlips WithRate(double rate) => new(rate, _alphabet, ThinkEnd, _seed);

    /// <summary>A training batch's continuations with their traces slipped, row i as problem i, with draws of their own (<paramref name="seed"/>).</summary>
    public IReadOnlyList<int[]> SlipTraces(IReadOnlyList<ReasonerExample> batch, long seed)
    {
        var slips = WithSeed(seed);
        return batch.Select((x, row) => slips.SlipTrace(row, x.Continuation)).ToList();
    }

    /// <summary>A copy of a continuation whose trace (everything before the first thinking marker) is slipped as problem <paramref name="problem"/> would be, step by step.</summary>
    public int[] SlipTrace(int problem, IReadOnlyList<int> continuation)
    {
        var copy = continuation.ToArray();
        for (int j = 0; j < copy.Length && copy[j] != ThinkEnd; j++) copy[j] = Apply(problem, j, copy[j]);
        return copy;
    }

    /// <summary>What problem <paramref name="problem"/> emits at <paramref name="step"/> when its model chose <paramref name="chosen"/> (still thinking).</summary>
    public int Apply(int problem, int step, int chosen)
    {
        if (Rate == 0 || !_inAlphabet.Contains(chosen)) return chosen;
        var rng = TaskRng.For(0x511B5UL, (ulong)_seed, (ulong)problem, (ulong)step);
        if (rng.NextDouble() >= Rate) return chosen;
        int k = rng.Next(_alphabet.Length - 1);
        int other = _alphabet[k];
        return other >= chosen ? _alphabet[k + 1] : other;   // uniform over the alphabet without the chosen token
    }

    /// <summary>
    /// A <see cref="Talker.Generate"/> chooser for problems <paramref name="offset"/> … offset + rows − 1: greedy, then
    /// slipped until the row has emitted the thinking marker.
    /// </summary>
    public Func<int, Tensor, Tensor> TalkerChooser(int offset, int rows)
    {
        var closed = new bool[rows];
        return (step, logits) =>
        {
            var chosen = logits.argmax(-1).cpu().data<long>().ToArray();
            for (int i = 0; i < rows; i++)
            {
                if (!closed[i]) chosen[i] = Apply(offset + i, step, (int)chosen[i]);
                if (chosen[i] == ThinkEnd) closed[i] = true;
            }
            return tensor(chosen, device: logits.device);
        };
    }

    /// <summary>
    /// The same slips for greedy <see cref="TextGenerator"/> decoding: the slipped token gets the only finite score.
    /// Greedy only: the slip is decided from the argmax, which a sampled step would not emit.
    /// </summary>
    public ILogitsProcessor Processor(int offset) => new SlipProcessor(this, offset);

    sealed class SlipProcessor(GenerationSlips slips, int offset) : ILogitsProcessor
    {
        public Tensor Process(Tensor inputIds, Tensor logits) => throw new NotSupportedException("slips need the generation step");

        public Tensor Process(GenerationStep step, Tensor logits)
        {
            var generated = step.InputIds.narrow(1, step.PromptLength, step.InputIds.shape[1] - step.PromptLength);
            var closed = generated.eq(slips.ThinkEnd).any(1).cpu().data<bool>().ToArray();
            var chosen = logits.argmax(-1).cpu().data<long>().ToArray();
            var output = logits.clone();
            for (int i = 0; i < chosen.Length; i++)
            {
                if (closed[i]) continue;
                int slipped = slips.Apply(offset + i, step.Index, (int)chosen[i]);
                if (slipped == chosen[i]) continue;
                output[i].fill_(float.NegativeInfinity);
                output[i][slipped].fill_(0);
            }
            return output;
        }
    }
}
