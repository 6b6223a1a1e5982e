using LatentLab.Generation;
using LatentLab.Hooks;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Latents;

/// <summary>
/// How step traces are drawn and read. <see cref="Samples"/> traces per problem at <see cref="Temperature"/> (plus the
/// greedy one when <see cref="Greedy"/>), so a store holds good and bad reasoning; <see cref="Point"/> is the hook
/// point whose states are averaged over each step (layer −2 by default, the public R-JEPA's choice).
/// <see cref="TraceMode.Reference"/> reads the task's own trace instead (one per problem; for models that cannot
/// close a think block yet). <see cref="RowsPerFile"/> counts problems per store file, the unit of resuming.
/// </summary>
public sealed record StepOptions
{
    public string Point { get; init; } = "blocks.-2.resid_post";
    public int Samples { get; init; } = 8;
    public double Temperature { get; init; } = 1.0;
    public int TopK { get; init; }
    public bool Greedy { get; init; } = true;
    public long Seed { get; init; }
    public TraceMode Trace { get; init; } = TraceMode.Own;
    /// <summary>null: the format's own rule (<see cref="StepRule.For"/>).</summary>
    public string? StepRule { get; init; }
    public int? MaxNewTokens { get; init; }
    public int BatchSize { get; init; } = 64;
    public int RowsPerFile { get; init; } = 64;
    public string DType { get; init; } = "f32";
    public TaskSource? Source { get; init; }

    public void Validate()
    {
        HookPoint.Parse(Point);
        TorchRuntime.ParseDType(DType);
        Latents.StepRule.Parse(StepRule);
        if (Samples < 0 || (Samples == 0 && !Greedy)) throw new ArgumentException($"step traces: samples must be >= 0, and > 0 without the greedy trace (got {Samples})");
        if (!(Temperature > 0) || !double.IsFinite(Temperature)) throw new ArgumentException($"step traces: temperature must be > 0 (got {Temperature})");
        if (TopK < 0) throw new ArgumentException($"step traces: top-k must be >= 0 (got {TopK})");
        if (BatchSize < 1) throw new ArgumentException($"step traces: batch size must be >= 1 (got {BatchSize})");
        if (RowsPerFile < 1) throw new ArgumentException($"step traces: problems per file must be >= 1 (got {RowsPerFile})");
        if (MaxNewTokens is < 1) throw new ArgumentException($"step traces: max new tokens must be >= 1 (got {MaxNewTokens})");
    }
}

/// <summary>
/// Step traces in memory: the samples and their latents, rows <c>Offsets[i] … Offsets[i+1]−1</c> of <see cref="Latents"/>
/// [rows, D] belonging to <c>Samples[i]</c> (the prompt state, then one mean per step). Dispose to free the tensor.
/// </summary>
public sealed class StepLatents : IDisposable
{
    public StepLatents(IReadOnlyList<StepSample> samples, Tensor latents)
    {
        Samples = samples;
        Latents = latents;
        var off = new long[samples.Count + 1];
        for (int i = 0; i < samples.Count; i++) off[i + 1] = off[i] + samples[i].Rows;
        if (latents.shape[0] != off[^1])
            throw new InvalidDataException($"step latents: {latents.shape[0]} rows for samples that need {off[^1]}");
        Offsets = off;
    }

    public IReadOnlyList<StepSample> Samples { get; }
    public Tensor Latents { get; }
    public long[] Offsets { get; }
    public int HiddenSize => (int)Latents.shape[1];

    /// <summary>Sample i's rows [1 + steps, D] (a view).</summary>
    public Tensor Of(int i) => Latents.narrow(0, Offsets[i], Offsets[i + 1] - Offsets[i]);

    /// <summary>The samples picked by <paramref name="keep"/>, with copies of their rows.</summary>
    public StepLatents Where(Func<StepSample, bool> keep)
    {
        var idx = Samples.Select((s, i) => (s, i)).Where(p => keep(p.s)).Select(p => p.i).ToList();
        if (idx.Count == 0) return new StepLatents([], zeros(0, HiddenSize, dtype: Latents.dtype));
        using var scope = NewDisposeScope();
        var rows = cat(idx.Select(Of).ToList(), 0).contiguous().MoveToOuterDisposeScope();
        return new StepLatents(idx.Select(i => Samples[i]).ToList(), rows);
    }

    public static StepLatents Concat(IReadOnlyList<StepLatents> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("no step latents to join");
        using var scope = NewDisposeScope();
        var rows = cat(parts.Select(p => p.Latents).ToList(), 0).contiguous().MoveToOuterDisposeScope();
        return new StepLatents(parts.SelectMany(p => p.Samples).ToList(), rows);
    }

    public void Dispose() => Latents.Dispose();
}

/// <summary>
/// The data of a world model of reasoning steps: sample traces from the model, cut each into steps
/// (<see cref="StepSegmenter"/>), check every step and the final answer with the task, and read one latent per step
/// (the mean of the hook point's states over the step's tokens) plus the state at the last prompt token, from one
/// teacher-forced forward pass per trace that also gives the trace's log-probability.
/// </summary>
public static class StepExtraction
{
    /// <summary>Traces and latents for <paramref name="problems"/>; <paramref name="firstIndex"/> numbers problems[0] in the caller's list.</summary>
    public static StepLatents Run(DecoderLM model, TraceFormat fmt, IReadOnlyList<TaskProblem> problems, StepOptions o,
        int firstIndex = 0, Action<int, int>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(fmt);
        o.Validate();
        if (fmt.Tokenizer.VocabSize > model.Config.VocabSize)
            throw new ArgumentException($"the tokenizer has {fmt.Tokenizer.VocabSize} ids but the model's vocabulary is {model.Config.VocabSize}");
        HookPoint.Parse(o.Point).Resolve(model.Config.NumLayers);
        var traces = Traces(model, fmt, problems, o, firstIndex, progress);
        return Read(model, fmt, traces, o);
    }

    /// <summary>A drawn trace before its latents are read.</summary>
    public sealed record Drawn(int ProblemIndex, int Draw, TaskProblem Problem, int[] PromptIds, int[] TraceIds, int Generated);

    /// <summary>The greedy trace and <see cref="StepOptions.Samples"/> sampled ones per problem (or the task's own trace).</summary>
    public static IReadOnlyList<Drawn> Traces(DecoderLM model, TraceFormat fmt, IReadOnlyList<TaskProblem> problems, StepOptions o,
        int firstIndex = 0, Action<int, int>? progress = null)
    {
        var drawn = new List<Drawn>();
        if (o.Trace == TraceMode.Reference)
        {
            for (int i = 0; i < problems.Count; i++)
            {
                var (ids, promptLength) = fmt.Sequence(problems[i], thinking: true);
                drawn.Add(new Drawn(firstIndex + i, -1, problems[i], ids[..promptLength], ids, ids.Length - promptLength));
            }
            return drawn;
        }
        var gen = new TextGenerator(model);
        var jobs = new List<(int Problem, int Draw)>();
        for (int i = 0; i < problems.Count; i++)
        {
            if (o.Greedy) jobs.Add((i, -1));
            for (int d = 0; d < o.Samples; d++) jobs.Add((i, d));
        }
        using var _ = no_grad();
        foreach (bool greedy in new[] { true, false })
        {
            var mine = jobs.Where(j => (j.Draw < 0) == greedy).ToList();
            for (int at = 0; at < mine.Count; at += o.BatchSize)
            {
                var chunk = mine.Skip(at).Take(o.BatchSize).ToList();
                var prompts = chunk.Select(j => fmt.PromptIds(problems[j.Problem], thinking: true)).ToList();
                int maxNew = o.MaxNewTokens ?? chunk.Max(j => fmt.MaxNewTokens(problems[j.Problem]));
                // One seed per batch of the job list: the same options draw the same traces.
                var cfg = new GenerationConfig(MaxNewTokens: maxNew, Temperature: greedy ? 0 : o.Temperature, TopK: greedy ? 0 : o.TopK,
                    StopTokens: fmt.StopTokens, Seed: greedy ? null : Training.Seeds.For(o.Seed, firstIndex, at));
                using var outcome = gen.Generate(prompts, cfg);
                for (int i = 0; i < chunk.Count; i++)
                {
                    int[] trace = [.. prompts[i], .. outcome.Tokens[i], .. outcome.MatchedStopToken[i] is int stop ? new[] { stop } : []];
                    drawn.Add(new Drawn(firstIndex + chunk[i].Problem, chunk[i].Draw, problems[chunk[i].Problem], prompts[i], trace, outcome.Sampled[i]));
                }
                progress?.Invoke(drawn.Count, jobs.Count);
            }
        }
        return drawn.OrderBy(d => d.ProblemIndex).ThenBy(d => d.Draw).ToList();
    }

    /// <summary>
    /// Segments, checks and reads the latents of drawn traces. Traces whose thinking never closes or has no step are
    /// dropped (they carry no step to model; their problem's other draws stay).
    /// </summary>
    public static StepLatents Read(DecoderLM model, TraceFormat fmt, IReadOnlyList<Drawn> traces, StepOptions o)
    {
        var rule = StepRule.Parse(o.StepRule) ?? StepRule.For(fmt);
        var kept = new List<(Drawn D, IReadOnlyList<StepSpan> Steps, string? Answer, bool Ok)>();
        foreach (var d in traces)
        {
            var steps = StepSegmenter.Segment(fmt, d.TraceIds, d.PromptIds.Length, rule);
            if (steps is null || steps.Count == 0) continue;
            var answer = fmt.ParseAnswer(d.TraceIds[d.PromptIds.Length..], thinking: true);
            kept.Add((d, steps, answer, answer is not null && fmt.Family.Verify(d.Problem, answer)));
        }
        var dtype = TorchRuntime.ParseDType(o.DType);
        int dim = model.Config.HiddenSize;
        var samples = new List<StepSample>();
        var parts = new List<Tensor>();
        var spec = HookSpec.Capture(o.Point);
        var hooks = new HookSet([spec]);
        long pad = model.Config.PadTokenId ?? 0;
        try
        {
            using var _ = no_grad();
            for (int at = 0; at < kept.Count; at += o.BatchSize)
            {
                using var scope = NewDisposeScope();
                var chunk = kept.Skip(at).Take(o.BatchSize).ToList();
                var (ids, mask) = TokenBatch.RightPad(chunk.Select(c => c.D.TraceIds).ToList(), pad);
                var dev = model.Device;
                using var output = model.Forward(ids.to(dev), attentionMask: mask.to(dev), hooks: hooks);
                var h = output.Capture(spec.Key).to(ScalarType.Float32).cpu();
                // Only each position's log-probability of the token that follows leaves the device, never the
                // [B, T, vocab] distribution (151k columns for Qwen3).
                var next = ids.narrow(1, 1, ids.shape[1] - 1).to(dev).unsqueeze(2);
                var tokenLogp = output.Logits!.narrow(1, 0, ids.shape[1] - 1).to(ScalarType.Float32).log_softmax(-1)
                    .gather(2, next).squeeze(2).cpu();
                for (int i = 0; i < chunk.Count; i++)
                {
                    var (d, steps, answer, ok) = chunk[i];
                    var rows = new List<Tensor> { h[i, d.PromptIds.Length - 1] };
                    foreach (var s in steps) rows.Add(h[i].narrow(0, s.Start, s.Length).mean([0]));
                    parts.Add(stack(rows, 0).to(dtype).DetachFromDisposeScope());
                    int n = d.TraceIds.Length, p = d.PromptIds.Length;
                    double lp = tokenLogp[i].narrow(0, p - 1, n - p).sum().item<float>();
                    samples.Add(new StepSample(samples.Count, d.ProblemIndex, d.Draw, d.Problem, d.PromptIds, d.TraceIds, steps,
                        StepCheck.All(d.Problem, steps), answer, ok, lp, d.Generated));
                }
            }
            var all = parts.Count == 0 ? zeros(0, dim, dtype: dtype) : cat(parts, 0);
            return new StepLatents(samples, all);
        }
        finally
        {
            foreach (var t in parts) t.Dispose();
        }
    }
}
