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

    public static int ThinkEndId(TraceFormat fmt) =>
        fmt.Tokenizer.TokenToId(fmt.Chat.ThinkEnd) is int id && fmt.Tokenizer.Encode(fmt.Chat.ThinkEnd) is [var only] && only == id
            ? id
            : throw new NotSupportedException($"the end-of-thinking marker '{fmt.Chat.ThinkEnd}' is not a single token of this tokenizer; the injection arms need one");

    /// <summary>Prompt (thinking mode, ending in the opening marker) followed by the closing marker: thinking skipped.</summary>
    /// <remarks>A bottleneck teacher gets its slot tokens before the marker: the states there are what the arms replace.</remarks>
    public static int[] ShortcutPrompt(TraceFormat fmt, TaskProblem p) =>
        fmt.Slots > 0 ? [.. fmt.PromptIds(p, true), .. fmt.SlotsAndEnd()] : fmt.PromptIds(p, true).Append(ThinkEndId(fmt)).ToArray();

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
