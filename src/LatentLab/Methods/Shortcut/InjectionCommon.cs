using LatentLab.Tensors;
using LatentLab.Latents;
using LatentLab.Generation;
using LatentLab.Hooks;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>Problems with their teacher traces and the states read from them: Pre [N, D], Post [N, K, D].</summary>
public sealed record CapturedStates(IReadOnlyList<TraceSample> Samples, Tensor Pre, Tensor Post) : IDisposable
{
    public void Dispose() { Pre.Dispose(); Post.Dispose(); }
}

/// <summary>
/// Reads h_pre / h_post from the teacher's own greedy thinking traces, for problems the latent store does not hold
/// (counterfactual twins, longer problems). h_pre: the hook point at the last prompt token (&lt;think&gt;).
/// h_post: the K positions ending at the &lt;/think&gt; token (K = 1: the marker itself). A trace that never closes its
/// thinking (the teacher failed) has no marker; its post position is then the trace's last token and the sample is
/// marked unverified.
/// </summary>
public static class ShortcutCapture
{
    public static CapturedStates Capture(DecoderLM teacher, TraceFormat fmt, IReadOnlyList<TaskProblem> problems, string point,
        int k = 1, int batchSize = 128)
    {
        if (problems.Count == 0) throw new ArgumentException("no problems to capture");
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        var gen = new TextGenerator(teacher);
        int eos = fmt.Tokenizer.EosId ?? throw new InvalidOperationException("teacher tokenizer has no <eos>");
        var samples = new List<TraceSample>(problems.Count);
        var pres = new List<Tensor>();
        var posts = new List<Tensor>();
        using var _ = no_grad();
        for (int start = 0; start < problems.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var chunk = problems.Skip(start).Take(batchSize).ToList();
            var prompts = chunk.Select(p => fmt.PromptIds(p, true)).ToList();
            int maxNew = chunk.Max(p => { var (ids, pl) = fmt.Sequence(p, true); return ids.Length - pl; }) + 8;
            var outcome = gen.Generate(prompts, new GenerationConfig(MaxNewTokens: maxNew, StopTokens: new[] { eos }));
            var traces = new List<int[]>();
            var rows = new List<(int Pre, int Post)>();
            for (int i = 0; i < chunk.Count; i++)
            {
                var gen_ = outcome.Tokens[i];
                var trace = prompts[i].Concat(gen_).Concat(outcome.Finish[i] == FinishReason.Eos ? new[] { eos } : Array.Empty<int>()).ToArray();
                int pre = prompts[i].Length - 1;
                int post = fmt.Chat.FindThinkEnd(trace, fmt.Tokenizer, prompts[i].Length);
                bool closed = post >= 0;
                if (!closed) post = trace.Length - 1;
                var answer = fmt.ParseAnswer(gen_, true);
                bool ok = closed && answer is not null && fmt.Family.Verify(chunk[i], answer);
                samples.Add(new TraceSample(start + i, chunk[i], prompts[i], trace, pre, post, post + 1, answer, ok));
                traces.Add(trace);
                rows.Add((pre, post));
            }
            var (ids, mask) = TokenBatch.RightPad(traces, 0);
            var hooks = new HookSet(new[] { HookSpec.Capture(point, Positions.AllPositions, "f32") });
            using var output = teacher.Forward(ids.to(teacher.Device), attentionMask: mask.to(teacher.Device), hooks: hooks, logits: LogitsMode.None);
            var h = output.Capture(point).to(ScalarType.Float32).cpu(); // [B, T, D]
            var preIdx = tensor(rows.Select(r => (long)r.Pre).ToArray());
            pres.Add(h[arange(chunk.Count), preIdx].DetachFromDisposeScope());
            // K slots ending at the marker; a trace too short for K repeats its first thinking position.
            var postIdx = tensor(rows.SelectMany(r => Enumerable.Range(r.Post - k + 1, k).Select(p => (long)Math.Max(p, r.Pre + 1))).ToArray()).view(chunk.Count, k);
            posts.Add(h[arange(chunk.Count).unsqueeze(1), postIdx].DetachFromDisposeScope());
        }
        var preAll = cat(pres, 0);
        var postAll = cat(posts, 0);
        foreach (var x in pres.Concat(posts)) x.Dispose();
        return new CapturedStates(samples, preAll, postAll);
    }
}

/// <summary>
/// The oracle arm's predictor: returns the true h_post of whichever known problem has this h_pre (nearest
/// neighbour in the registered pairs; exact for a registered state). Injecting the truth bounds what any
/// predictor can reach through an injection: if the oracle fails, a learned predictor will too.
/// </summary>
public sealed class OraclePredictor : ILatentPredictor
{
    readonly List<(Tensor Pre, Tensor Post)> _pairs = new();

    public OraclePredictor(Tensor pre, Tensor post) => Register(pre, post);

    public int K { get; private set; }

    /// <summary>Adds (pre [N, D], post [N, K, D] or [N, D]) pairs; copies are kept.</summary>
    public void Register(Tensor pre, Tensor post)
    {
        var p = post.dim() == 2 ? post.unsqueeze(1) : post;
        if (pre.shape[0] != p.shape[0]) throw new ArgumentException($"oracle: {pre.shape[0]} pre states but {p.shape[0]} post states");
        if (K != 0 && p.shape[1] != K) throw new ArgumentException($"oracle: post has K={p.shape[1]}, earlier pairs K={K}");
        K = (int)p.shape[1];
        _pairs.Add((pre.detach().to(ScalarType.Float32).cpu().clone().DetachFromDisposeScope(), p.detach().to(ScalarType.Float32).cpu().clone().DetachFromDisposeScope()));
    }

    public Tensor Predict(Tensor pre)
    {
        using var scope = NewDisposeScope();
        var q = pre.to(ScalarType.Float32).cpu();
        var allPre = cat(_pairs.Select(p => p.Pre).ToList(), 0);
        var allPost = cat(_pairs.Select(p => p.Post).ToList(), 0);
        var nearest = cdist(q, allPre).argmin(1);
        return allPost.index_select(0, nearest).to(pre.device).MoveToOuterDisposeScope();
    }
}

/// <summary>A predictor that ignores its input and returns the mean training h_post: the arm that must fail.</summary>
public sealed class MeanPredictor : ILatentPredictor
{
    readonly Tensor _mean; // [K, D]

    public MeanPredictor(Tensor postTrain)
    {
        var p = postTrain.dim() == 2 ? postTrain.unsqueeze(1) : postTrain;
        K = (int)p.shape[1];
        using var scope = NewDisposeScope();
        _mean = p.to(ScalarType.Float32).mean(new long[] { 0 }).cpu().DetachFromDisposeScope();
    }

    public int K { get; }

    public Tensor Predict(Tensor pre) => _mean.unsqueeze(0).expand(pre.shape[0], -1, -1).to(pre.device).clone();
}

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
    public static int[] ShortcutPrompt(TraceFormat fmt, TaskProblem p) => fmt.PromptIds(p, true).Append(ThinkEndId(fmt)).ToArray();

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
