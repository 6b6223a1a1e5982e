using LatentLab.Generation;
using LatentLab.Hooks;
using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using LatentLab.Training;
using static TorchSharp.torch;

namespace LatentLab.Methods.WorldModel;

/// <summary>
/// NUDGE settings. <see cref="Lambda"/>: residual steering strength (0 = none); <see cref="Candidates"/>: next-step
/// candidates sampled per step, the one with the lowest world-model error kept (1 = none). Steps are drawn at
/// <see cref="Temperature"/> (0 = greedy) with a seed per batch and step; the answer after the thinking is greedy.
/// </summary>
public sealed record NudgeOptions
{
    public double Lambda { get; init; }
    public int Candidates { get; init; } = 1;
    public double Temperature { get; init; } = 1.0;
    public long Seed { get; init; }
    public int MaxSteps { get; init; } = 16;
    public int MaxStepTokens { get; init; } = 24;
    public int BatchSize { get; init; } = 64;

    public void Validate()
    {
        if (!double.IsFinite(Lambda) || Lambda < 0) throw new ArgumentException($"nudge: λ must be a finite number >= 0 (got {Lambda})");
        if (Candidates < 1) throw new ArgumentException($"nudge: candidates must be >= 1 (got {Candidates})");
        if (Temperature < 0) throw new ArgumentException($"nudge: temperature must be >= 0 (got {Temperature})");
        if (MaxSteps < 1 || MaxStepTokens < 1 || BatchSize < 1) throw new ArgumentException("nudge: max steps, max step tokens and batch size must be >= 1");
    }
}

/// <summary>What a NUDGE run produced per problem, and what it spent: tokens drawn (all candidates) and tokens re-read to get step latents.</summary>
public sealed record NudgeResult(IReadOnlyList<int[]> Traces, IReadOnlyList<string?> Answers, IReadOnlyList<bool> Correct, long TokensSampled, long TokensRead);

/// <summary>
/// Generation one reasoning step at a time, with the world model in the loop. At each step boundary the step latents so
/// far (the prompt state and one mean per finished step, read unsteered) go into the world model, which predicts the next
/// step's latent ẑ (next-step mask, through the latent head). Then (a) residual steering adds λ·(ẑ − h̄) at the extraction
/// layer for every token of the next step, h̄ being the latent of the step just finished (or the prompt state), and/or
/// (b) candidate steering samples m next steps and keeps the one whose next-step error is lowest. With no world model
/// (or λ = 0 and m = 1) it is plain step-by-step sampling; λ = 0 adds exact zeros, so its output is bit-identical.
/// </summary>
public sealed class StepGenerator
{
    readonly DecoderLM _model;
    readonly TraceFormat _fmt;
    readonly WorldModel? _wm;
    readonly string _point;
    readonly int[] _separators, _stops;
    readonly int _thinkEnd, _eos;

    public StepGenerator(DecoderLM model, TraceFormat fmt, WorldModel? wm, string point)
    {
        _model = model;
        _fmt = fmt;
        _wm = wm;
        _point = HookPoint.Parse(point).Resolve(model.Config.NumLayers).ToString();
        var rule = StepRule.For(fmt);
        int? One(string s) => fmt.Tokenizer.Encode(s) is [var id] ? id : null;
        // Every separator of the rule that is one token ends a step (Qwen3 writes "\n" between steps, "\n\n" between paragraphs).
        _separators = rule.Separators.Select(One).OfType<int>().Distinct().ToArray();
        if (_separators.Length == 0) throw new ArgumentException($"NUDGE needs a step separator that is one token; none of '{rule}' is in {fmt}");
        _thinkEnd = One(fmt.Chat.ThinkEnd) ?? throw new ArgumentException($"NUDGE needs '{fmt.Chat.ThinkEnd}' to be one token");
        _eos = fmt.StopTokens[0];
        _stops = [.. _separators, _thinkEnd, _eos];
        if (wm is not null && wm.Dim != model.Config.HiddenSize)
            throw new ArgumentException($"the world model reads states of size {wm.Dim}, the model's hidden size is {model.Config.HiddenSize}");
    }

    /// <summary>The tokens that end a step: the step separator, the end-of-thinking marker and the end of turn.</summary>
    public IReadOnlyList<int> StepStops => _stops;

    /// <summary>Where steering starts in a batch of contexts, left-padded to one length: the last context token, whose
    /// state yields the step's first token (every token of the step comes after it).</summary>
    public static int SteerFrom(IReadOnlyList<int[]> contexts) => contexts.Max(p => p.Length) - 1;

    /// <summary>
    /// The hooks that steer one step: add <paramref name="scale"/>·<paramref name="delta"/> [B, 1, D] at the extraction point
    /// to every position from <paramref name="from"/> on (the last context token, whose state yields the step's first token,
    /// and every token of the step after it; prompts are left-padded, so one absolute position serves every row).
    /// </summary>
    public HookSet SteeringHooks(Tensor delta, double scale, int from) =>
        new([HookSpec.Add(_point, delta, Positions.Span(from, int.MaxValue), scale)]);

    public NudgeResult Run(IReadOnlyList<TaskProblem> problems, NudgeOptions o)
    {
        o.Validate();
        if ((o.Lambda > 0 || o.Candidates > 1) && _wm is null) throw new ArgumentException("nudge: λ > 0 or m > 1 needs a world model");
        var traces = new int[problems.Count][];
        long sampled = 0, read = 0;
        var gen = new TextGenerator(_model);
        using var _ = no_grad();
        for (int at = 0; at < problems.Count; at += o.BatchSize)
        {
            var chunk = problems.Skip(at).Take(o.BatchSize).ToList();
            var prefix = chunk.Select(p => _fmt.PromptIds(p, thinking: true).ToList()).ToList();
            var spans = chunk.Select(_ => new List<(int Start, int End)>()).ToList();
            var open = Enumerable.Range(0, chunk.Count).ToList();
            for (int round = 0; round < o.MaxSteps && open.Count > 0; round++)
            {
                using var scope = NewDisposeScope();
                Tensor? delta = null, predicted = null;
                List<Tensor>? rows = null;
                if (_wm is not null)
                {
                    rows = open.Select(r => StepRows(prefix[r], spans[r], ref read)).ToList();
                    predicted = PredictNext(rows);                      // [B, D] raw hidden-state space
                    delta = (predicted - stack(rows.Select(x => x[-1]).ToList(), 0)).unsqueeze(1);
                }
                int m = o.Candidates;
                var prompts = open.SelectMany(r => Enumerable.Repeat(prefix[r].ToArray(), m)).ToList();
                int from = SteerFrom(prompts);
                var hooks = delta is null ? null : SteeringHooks(delta.repeat_interleave(m, 0), o.Lambda, from);
                var cfg = new GenerationConfig(MaxNewTokens: o.MaxStepTokens, Temperature: o.Temperature,
                    StopTokens: StepStops, Seed: Seeds.For(o.Seed, at, round));
                using var outcome = gen.Generate(prompts, cfg, hooks: hooks);
                var steps = outcome.Tokens.Select((t, i) => outcome.MatchedStopToken[i] is int s ? [.. t, s] : t).ToList();
                sampled += outcome.Sampled.Sum();
                var pick = new int[open.Count];
                if (m > 1)
                {
                    var errors = CandidateErrors(open, prefix, rows!, steps, m, ref read);
                    for (int i = 0; i < open.Count; i++)
                        pick[i] = i * m + Enumerable.Range(0, m).MinBy(j => errors[i * m + j]);
                }
                else for (int i = 0; i < open.Count; i++) pick[i] = i;
                var still = new List<int>();
                for (int i = 0; i < open.Count; i++)
                {
                    int r = open[i];
                    var step = steps[pick[i]];
                    int start = prefix[r].Count;
                    prefix[r].AddRange(step);
                    if (step.Length > 0) spans[r].Add((start, prefix[r].Count));
                    if (step.Length > 0 && _separators.Contains(step[^1])) still.Add(r);
                }
                open = still;
            }
            // Answers: greedy after the closed thinking (rows that never closed it are left as they are: wrong).
            var closed = Enumerable.Range(0, chunk.Count).Where(r => prefix[r].Count > 0 && prefix[r][^1] == _thinkEnd).ToList();
            if (closed.Count > 0)
            {
                var cfg = new GenerationConfig(MaxNewTokens: chunk.Max(p => _fmt.MaxNewTokens(p)), StopTokens: [_eos]);
                using var outcome = gen.Generate(closed.Select(r => prefix[r].ToArray()).ToList(), cfg);
                sampled += outcome.Sampled.Sum();
                for (int i = 0; i < closed.Count; i++)
                {
                    prefix[closed[i]].AddRange(outcome.Tokens[i]);
                    if (outcome.MatchedStopToken[i] is int s) prefix[closed[i]].Add(s);
                }
            }
            for (int r = 0; r < chunk.Count; r++) traces[at + r] = prefix[r].ToArray();
        }
        var answers = new string?[problems.Count];
        var correct = new bool[problems.Count];
        for (int i = 0; i < problems.Count; i++)
        {
            int p = _fmt.PromptIds(problems[i], thinking: true).Length;
            answers[i] = _fmt.ParseAnswer(traces[i][p..], thinking: true);
            correct[i] = answers[i] is not null && _fmt.Family.Verify(problems[i], answers[i]!);
        }
        return new NudgeResult(traces, answers, correct, sampled, read);
    }

    /// <summary>The latent rows of a partial trace, read without steering: the last prompt token's state, then each finished step's mean.</summary>
    Tensor StepRows(List<int> ids, List<(int Start, int End)> spans, ref long read)
    {
        var h = States(ids.ToArray());
        read += ids.Count;
        int promptEnd = (spans.Count > 0 ? spans[0].Start : ids.Count) - 1;
        var rows = new List<Tensor> { h[promptEnd] };
        foreach (var (s, e) in spans) rows.Add(h.narrow(0, s, e - s).mean([0]));
        return stack(rows, 0);
    }

    /// <summary>The hook point's states [T, D] (float32, CPU) over one sequence, no steering.</summary>
    public Tensor States(int[] ids)
    {
        var spec = HookSpec.Capture(_point);
        using var output = _model.Forward(tensor(ids.Select(x => (long)x).ToArray()).view(1, -1).to(_model.Device), hooks: new HookSet([spec]), logits: LogitsMode.None);
        return output.Capture(spec.Key)[0].to(ScalarType.Float32).cpu();
    }

    /// <summary>ẑ for the step after each row's last one, in hidden-state space.</summary>
    Tensor PredictNext(List<Tensor> rows)
    {
        var (x, masked, valid, t) = NextBatch(rows, null);
        using var pass = _wm!.Forward(x, masked, valid);
        var idx = t.view(-1, 1, 1).expand(-1, 1, pass.PredictedLatent.shape[2]);
        return _wm.Unstandardise(pass.PredictedLatent.gather(1, idx).squeeze(1));
    }

    /// <summary>Rows padded with one more row (a candidate's latent, or zeros to be predicted), that row masked.</summary>
    static (Tensor X, Tensor Masked, Tensor Valid, Tensor T) NextBatch(List<Tensor> rows, List<Tensor>? next)
    {
        int b = rows.Count, l = rows.Max(r => (int)r.shape[0]) + 1, d = (int)rows[0].shape[1];
        var x = zeros(b, l, d);
        var masked = zeros(b, l, dtype: ScalarType.Bool);
        var valid = zeros(b, l, dtype: ScalarType.Bool);
        var t = new long[b];
        for (int i = 0; i < b; i++)
        {
            int n = (int)rows[i].shape[0];
            x[i].narrow(0, 0, n).copy_(rows[i]);
            if (next is not null) x[i, n].copy_(next[i]);
            masked[i, n] = true;
            valid[i].narrow(0, 0, n + 1).fill_(true);
            t[i] = n;
        }
        return (x, masked, valid, tensor(t));
    }

    /// <summary>Next-step error of every candidate (row-major: m per open row).</summary>
    double[] CandidateErrors(List<int> open, List<List<int>> prefix, List<Tensor> rows, List<int[]> steps, int m, ref long read)
    {
        var candRows = new List<Tensor>();
        var candLatents = new List<Tensor>();
        for (int i = 0; i < open.Count; i++)
            for (int j = 0; j < m; j++)
            {
                var step = steps[i * m + j];
                var ids = prefix[open[i]].Concat(step).ToArray();
                read += ids.Length;
                var h = States(ids);
                int s = prefix[open[i]].Count;
                candLatents.Add(step.Length == 0 ? h[s - 1] : h.narrow(0, s, step.Length).mean([0]));
                candRows.Add(rows[i]);
            }
        var (x, masked, valid, t) = NextBatch(candRows, candLatents);
        using var pass = _wm!.Forward(x, masked, valid);
        var idx = t.view(-1, 1, 1).expand(-1, 1, pass.Predicted.shape[2]);
        var e = _wm.Distance(pass.Predicted.gather(1, idx).squeeze(1), pass.Target.gather(1, idx).squeeze(1));
        return e.to(ScalarType.Float64).data<double>().ToArray();
    }
}
