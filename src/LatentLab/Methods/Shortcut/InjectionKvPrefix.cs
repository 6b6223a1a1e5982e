using LatentLab.Generation;
using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>
/// The KV-prefix arm (the seed's sixth target) on a bottleneck teacher: the prompt's own cache, then the k slots' keys
/// and values at every layer put straight into the cache, then the end marker and greedy decoding. Thought tokens
/// are never run. Its oracle is the teacher's own cache at the slots (read from the verified trace with the
/// bottleneck layout): exact by construction, since the marker and the answer see only the prompt and the slots.
/// Its floor puts the mean training slot cache there, whatever the problem.
/// </summary>
public static class KvPrefixInjection
{
    /// <summary>Per-layer slot keys (after RoPE, at the slots' positions) and values, [N, kv_heads, k, head_dim] each, of samples' traces.</summary>
    public static IReadOnlyList<(Tensor Keys, Tensor Values)> SlotCache(DecoderLM teacher, TraceFormat fmt, IReadOnlyList<TraceSample> samples, int batchSize = 128)
    {
        if (fmt.Slots == 0) throw new NotSupportedException($"{fmt}: the KV-prefix arm needs a teacher trained on bottleneck traces (teacher train --bottleneck k)");
        int k = fmt.Slots, layers = teacher.Config.NumLayers;
        var cuts = samples.Select(s => s.TraceIds[..(s.PostPosition + 1)]).ToList();
        return Gather(cuts.Count, ArmsCommon.LengthBatches(cuts, batchSize), idx =>
        {
            int t = cuts[idx[0]].Length;
            var layouts = idx.Select(i => fmt.Layout(cuts[i], samples[i].PromptIds.Length)).ToList();
            if (layouts.Any(l => l is null)) throw new InvalidDataException("a sample's trace has no bottleneck slots");
            var (positions, expiry) = SequenceLayout.Batch(layouts, idx.Select(_ => t).ToList(), t);
            var ids = tensor(idx.SelectMany(i => cuts[i].Select(x => (long)x)).ToArray()).view(idx.Length, t).to(teacher.Device);
            var cache = new KvCache(layers);
            teacher.Forward(ids, cache: cache, logits: LogitsMode.None, positions: positions.to(teacher.Device), keyExpiry: expiry.to(teacher.Device)).Dispose();
            return (cache, t - k, k);
        });
    }

    /// <summary>
    /// Runs <paramref name="run"/> on each batch of row indices (it fills a cache and says where the slots start and how
    /// many there are) and gathers every layer's slot keys and values into [n, kv_heads, k, head_dim] CPU tensors (in
    /// <paramref name="dtype"/>, or the cache's own), rows in the original order, without gradient.
    /// </summary>
    public static IReadOnlyList<(Tensor Keys, Tensor Values)> Gather(int n, IEnumerable<int[]> batches, Func<int[], (KvCache Cache, int Start, int Count)> run,
        ScalarType? dtype = null)
    {
        var result = new List<(Tensor Keys, Tensor Values)>();
        using var _ = no_grad();
        foreach (var idx in batches)
        {
            using var scope = NewDisposeScope();
            var (cache, start, count) = run(idx);
            using (cache)
            {
                var rows = tensor(idx.Select(i => (long)i).ToArray());
                for (int l = 0; l < cache.NumLayers; l++)
                {
                    var key = cache.Keys(l)!.narrow(2, start, count).cpu();
                    var value = cache.Values(l)!.narrow(2, start, count).cpu();
                    if (dtype is { } dt) (key, value) = (key.to(dt), value.to(dt));
                    if (result.Count == l)
                        result.Add((zeros(new[] { (long)n }.Concat(key.shape.Skip(1)).ToArray(), dtype: key.dtype).DetachFromDisposeScope(),
                                    zeros(new[] { (long)n }.Concat(value.shape.Skip(1)).ToArray(), dtype: value.dtype).DetachFromDisposeScope()));
                    result[l].Keys.index_copy_(0, rows, key);
                    result[l].Values.index_copy_(0, rows, value);
                }
            }
        }
        return result;
    }

    /// <summary>The mean slot cache of training samples, broadcast to <paramref name="n"/> problems.</summary>
    public static IReadOnlyList<(Tensor Keys, Tensor Values)> Mean(IReadOnlyList<(Tensor Keys, Tensor Values)> train, int n) =>
        train.Select(kv => (kv.Keys.mean(new long[] { 0 }, keepdim: true).expand(n, -1, -1, -1).contiguous(),
            kv.Values.mean(new long[] { 0 }, keepdim: true).expand(n, -1, -1, -1).contiguous())).ToList();

    /// <summary>mean + s·(prediction − mean), per layer: a scale sweep between the floor (s = 0) and the prediction (s = 1).</summary>
    public static IReadOnlyList<(Tensor Keys, Tensor Values)> Blend(IReadOnlyList<(Tensor Keys, Tensor Values)> mean,
        IReadOnlyList<(Tensor Keys, Tensor Values)> predicted, double s) =>
        mean.Zip(predicted, (m, p) => (m.Keys + s * (p.Keys - m.Keys), m.Values + s * (p.Values - m.Values))).ToList();

    /// <summary>Greedy answers from prompt ++ slot cache ++ end marker; token-steps = prompt + k + 1 + sampled.</summary>
    public static ArmAnswers Answer(DecoderLM teacher, TraceFormat fmt, IReadOnlyList<TaskProblem> problems,
        IReadOnlyList<(Tensor Keys, Tensor Values)> slots, int batchSize = 128)
    {
        int k = fmt.Slots, thinkEnd = fmt.SlotsAndEnd()[^1];
        var gen = new TextGenerator(teacher);
        var prompts = problems.Select(p => fmt.PromptIds(p, true)).ToList();
        var generated = new int[problems.Count][];
        var steps = new double[problems.Count];
        int maxNew = ArmsCommon.MaxAnswerTokens(fmt, problems);
        using var _ = no_grad();
        foreach (var idx in ArmsCommon.LengthBatches(prompts, batchSize))
        {
            using var scope = NewDisposeScope();
            var dev = teacher.Device;
            int p = prompts[idx[0]].Length;
            var ids = tensor(idx.SelectMany(i => prompts[i].Select(x => (long)x)).ToArray()).view(idx.Length, p).to(dev);
            using var promptCache = new KvCache(teacher.Config.NumLayers);
            teacher.Forward(ids, cache: promptCache, logits: LogitsMode.None).Dispose();
            var rows = tensor(idx.Select(i => (long)i).ToArray());
            var kv = Enumerable.Range(0, teacher.Config.NumLayers).Select(l =>
                (cat(new[] { promptCache.Keys(l)!, slots[l].Keys.index_select(0, rows).to(dev).to(promptCache.Keys(l)!.dtype) }, 2),
                 cat(new[] { promptCache.Values(l)!, slots[l].Values.index_select(0, rows).to(dev).to(promptCache.Values(l)!.dtype) }, 2))).ToList();
            using var prefix = KvCache.FromPrefix(kv, idx.Length);
            using var r = gen.Generate(Enumerable.Repeat(new[] { thinkEnd }, idx.Length).ToList(),
                new GenerationConfig(MaxNewTokens: maxNew, StopTokens: fmt.StopTokens.ToArray()), prefix: prefix);
            for (int j = 0; j < idx.Length; j++)
            {
                generated[idx[j]] = r.Tokens[j];
                steps[idx[j]] = p + k + 1 + r.Sampled[j];
            }
        }
        return ArmsCommon.Grade(fmt, problems, generated, steps);
    }
}
