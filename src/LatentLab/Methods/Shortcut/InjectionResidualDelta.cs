using LatentLab.Generation;
using LatentLab.Hooks;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>
/// Arm 5: predicted residual delta. Input = prompt ++ &lt;/think&gt; (thinking skipped); at the hook point, at the
/// marker's position (its last token where the marker is several, where h_post is read), h ← h + α·(ĥ − h) during
/// the prefill, then greedy decoding by the unchanged teacher. Token-steps = the whole shortcut prompt + sampled.
/// α = 1 replaces the state by the prediction; the sweep over α shows whether a result needs a fragile scale.
/// With K &gt; 1 predicted slots the last one (the marker's own state) is used.
/// </summary>
public static class ResidualDeltaInjection
{
    /// <summary>One answer list per α. The marker's unmodified state is read once per batch and shared by every α.</summary>
    public static IReadOnlyList<ArmAnswers> Answer(DecoderLM teacher, TraceFormat fmt, string point, IReadOnlyList<TaskProblem> problems,
        Tensor hat, IReadOnlyList<double> alphas, int batchSize = 128)
    {
        var gen = new TextGenerator(teacher);
        int eos = fmt.Tokenizer.EosId ?? throw new InvalidOperationException("tokenizer has no <eos>");
        var prompts = problems.Select(p => ArmsCommon.ShortcutPrompt(fmt, p)).ToList();
        var generated = alphas.Select(_ => new int[problems.Count][]).ToArray();
        var steps = alphas.Select(_ => new double[problems.Count]).ToArray();
        int maxNew = ArmsCommon.MaxAnswerTokens(fmt, problems);
        using var _ = no_grad();
        foreach (var idx in ArmsCommon.LengthBatches(prompts, batchSize))
        {
            using var scope = NewDisposeScope();
            var dev = teacher.Device;
            // The marker's (last) token, or on a bottleneck teacher its k slots (all of them replaced).
            int len = prompts[idx[0]].Length, pos = len - 1, k = fmt.Slots > 0 ? fmt.Slots : 1;
            if (fmt.Slots > 0) pos = len - 1 - k;
            var span = fmt.Slots > 0 ? Positions.Span(pos, pos + k) : Positions.At(pos);
            var batchPrompts = idx.Select(i => prompts[i]).ToList();
            var ids = tensor(batchPrompts.SelectMany(x => x.Select(v => (long)v)).ToArray()).view(idx.Length, len).to(dev);
            // The state the hook will see is the same with or without the hook (it acts there), so one capture pass
            // gives h. In deployment the hook computes the interpolation itself; the accounting counts one prefill.
            using var probe = teacher.Forward(ids, hooks: new HookSet(new[] { HookSpec.Capture(point, span) }), logits: LogitsMode.None);
            var h = probe.Capture(point).to(ScalarType.Float32);
            var target = ArmsCommon.Rows(hat, idx).narrow(1, hat.shape[1] - k, k).to(dev);
            if (fmt.Slots == 0) { h = h.squeeze(1); target = target.squeeze(1); }
            var delta = target - h;
            for (int a = 0; a < alphas.Count; a++)
            {
                var hooks = new HookSet(new[] { HookSpec.Add(point, delta, span, alphas[a]) });
                using var r = gen.Generate(batchPrompts, new GenerationConfig(MaxNewTokens: maxNew, StopTokens: new[] { eos }),
                    hooks: hooks, hookPhases: HookPhases.Prefill);
                for (int j = 0; j < idx.Length; j++)
                {
                    generated[a][idx[j]] = r.Tokens[j];
                    steps[a][idx[j]] = len + r.Sampled[j];
                }
            }
        }
        return alphas.Select((_, a) => ArmsCommon.Grade(fmt, problems, generated[a], steps[a])).ToList();
    }
}
