using LatentLab.Generation;
using LatentLab.Hooks;
using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
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
