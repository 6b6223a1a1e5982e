using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>Helpers the arms share: batching by prompt length, answers, grading, teacher copies and freezing.</summary>
public static class ArmsCommon
{
    /// <summary>Indices grouped by prompt length, each group cut into batches: one hook position serves a whole batch.</summary>
    public static IEnumerable<int[]> LengthBatches(IReadOnlyList<int[]> prompts, int batchSize) =>
        Enumerable.Range(0, prompts.Count).GroupBy(i => prompts[i].Length).OrderBy(g => g.Key)
            .SelectMany(g => g.Chunk(batchSize));

    /// <summary>Room for the longest reference answer plus slack (a rambling model is cut, not waited on).</summary>
    public static int MaxAnswerTokens(TraceFormat fmt, IEnumerable<TaskProblem> problems) =>
        problems.Max(p => fmt.Tokenizer.Encode(p.Answer).Length) + 4;

    /// <summary>
    /// The end-of-thinking marker's token ids as <paramref name="p"/>'s reference trace encodes them: in context, since
    /// a BPE tokenizer may cut the marker text differently inside a trace than alone (Gemma's "&lt;/think&gt;" is three
    /// tokens); one id where the marker is a single token. The last id is the token where the trace's h_post is read
    /// (<see cref="TraceFormat.Locate"/>), so an arm that puts these ids after the prompt acts where the states were
    /// read. A marker token may carry template whitespace but no thought or answer text.
    /// </summary>
    public static int[] ThinkEndIds(TraceFormat fmt, TaskProblem p)
    {
        var (ids, promptLength) = fmt.Sequence(p, thinking: true);
        var (start, end) = fmt.ThinkEndSpan(ids, promptLength)
            ?? throw new InvalidOperationException($"{fmt}: the reference trace of '{p.Prompt}' never closes its thinking block");
        var marker = ids[start..(end + 1)];
        var text = fmt.Tokenizer.Decode(marker);
        if (text.Trim() != fmt.Chat.ThinkEnd)
            throw new NotSupportedException($"{fmt}: in the reference trace of '{p.Prompt}' the tokens of the end-of-thinking marker "
                + $"'{fmt.Chat.ThinkEnd}' also hold other text ('{text}'); the injection arms need tokens that hold the marker alone");
        return marker;
    }

    /// <summary>The marker ids every problem's reference trace shares (an arm that splices a batch needs one marker);
    /// an error when two problems' traces tokenise it differently.</summary>
    public static int[] ThinkEndIds(TraceFormat fmt, IEnumerable<TaskProblem> problems)
    {
        int[]? marker = null;
        TaskProblem? first = null;
        foreach (var p in problems)
        {
            var m = ThinkEndIds(fmt, p);
            if (marker is null) (marker, first) = (m, p);
            else if (!m.SequenceEqual(marker))
                throw new NotSupportedException($"{fmt}: the reference traces of '{first!.Prompt}' and '{p.Prompt}' tokenise the end-of-thinking marker "
                    + $"differently ([{string.Join(", ", marker)}] vs [{string.Join(", ", m)}]); the soft-token arm needs one marker");
        }
        return marker ?? throw new ArgumentException("no problems to read the end-of-thinking marker from", nameof(problems));
    }

    /// <summary>Prompt (thinking mode) followed by the closing marker's tokens: thinking skipped. The last token is the
    /// marker's last, where h_post is read.</summary>
    /// <remarks>A bottleneck teacher gets its slot tokens before the marker: the states there are what the arms replace.</remarks>
    public static int[] ShortcutPrompt(TraceFormat fmt, TaskProblem p) =>
        fmt.Slots > 0 ? [.. fmt.PromptIds(p, true), .. fmt.SlotsAndEnd()] : [.. fmt.PromptIds(p, true), .. ThinkEndIds(fmt, p)];

    /// <summary>Teacher-forced answer tokens (answer text + end of turn) after a shortcut prompt.</summary>
    public static int[] AnswerIds(TraceFormat fmt, string answer) =>
        fmt.Tokenizer.Encode(answer).Append(fmt.Tokenizer.EosId ?? throw new InvalidOperationException("tokenizer has no <eos>")).ToArray();

    public static ArmAnswers Grade(TraceFormat fmt, IReadOnlyList<TaskProblem> problems, IReadOnlyList<int[]> generated, IReadOnlyList<double> tokenSteps)
    {
        var answers = new string?[problems.Count];
        var correct = new bool[problems.Count];
        for (int i = 0; i < problems.Count; i++)
        {
            answers[i] = fmt.ParseAnswer(generated[i], false);
            correct[i] = answers[i] is { } a && fmt.Family.Verify(problems[i], a);
        }
        return new ArmAnswers(answers, correct, tokenSteps.ToArray());
    }

    /// <summary>A trainable copy of the teacher (same weights, same compute dtype).</summary>
    public static DecoderLM CopyOf(DecoderLM teacher)
    {
        var student = new DecoderLM(teacher.Config);
        student.to(teacher.DType).to(teacher.Device);
        var src = teacher.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (no_grad())
            foreach (var (name, p) in student.named_parameters()) p.copy_(src[name]);
        student.ComputeDType = teacher.ComputeDType;
        return student;
    }

    /// <summary>Turns gradients off for every parameter; returns a restore action.</summary>
    public static Action Freeze(nn.Module m)
    {
        var saved = m.parameters().Select(p => (p, p.requires_grad)).ToList();
        foreach (var (p, _) in saved) p.requires_grad = false;
        return () => { foreach (var (p, r) in saved) p.requires_grad = r; };
    }

    /// <summary>Predictions ĥ [N, K, D] (float32) in batches, without gradients.</summary>
    public static Tensor PredictAll(ILatentPredictor predictor, Tensor pre, int batchSize = 512)
    {
        using var _ = no_grad();
        var parts = new List<Tensor>();
        for (long s = 0; s < pre.shape[0]; s += batchSize)
        {
            using var scope = NewDisposeScope();
            var y = predictor.Predict(pre.narrow(0, s, Math.Min(batchSize, pre.shape[0] - s)));
            if (y.dim() != 3 || y.shape[1] != predictor.K || y.shape[2] != pre.shape[1])
                throw new InvalidOperationException($"predictor returned [{string.Join(", ", y.shape)}], expected [B, {predictor.K}, {pre.shape[1]}]");
            parts.Add(y.to(ScalarType.Float32).cpu().DetachFromDisposeScope());
        }
        var all = cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return all;
    }

    /// <summary>Rows of a [N, ...] tensor picked by index.</summary>
    public static Tensor Rows(Tensor t, IReadOnlyList<int> idx) => t.index_select(0, tensor(idx.Select(i => (long)i).ToArray()).to(t.device));

    /// <summary>Forward FLOPs of one answer that runs <paramref name="tokens"/> positions through the model (KV-cached).</summary>
    public static double AnswerFlops(TransformerConfig c, double tokens) => Tensors.Throughput.DecoderForwardFlops(c, 1, (long)Math.Round(tokens));

    /// <summary>Forward FLOPs of a module whose cost is its matmuls: 2 per parameter per row.</summary>
    public static double ModuleFlops(object m) => m is nn.Module mod ? 2.0 * mod.parameters().Sum(p => p.numel()) : 0;
}

/// <summary>One arm's outputs on a problem list: parsed answer, verified or not, forward token-steps spent.</summary>
public sealed record ArmAnswers(IReadOnlyList<string?> Answers, IReadOnlyList<bool> Correct, IReadOnlyList<double> TokenSteps)
{
    public Evaluation.Proportion Accuracy => Evaluation.Proportion.Wilson(Correct.Count(c => c), Correct.Count);
    public double MeanTokenSteps => TokenSteps.Count == 0 ? 0 : TokenSteps.Average();
}
