using LatentLab.Evaluation;
using LatentLab.Generation;
using LatentLab.Hooks;
using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using static TorchSharp.torch;

namespace LatentLab.Methods.WorldModel;

/// <summary>
/// One PLAN case: a verified trace with every step right, step <see cref="Gap"/> deleted. <see cref="Prefix"/> is the
/// trace up to where the deleted step began (prompt and the steps before it), so the step written there is the gap's;
/// <see cref="GappedIds"/> is the whole trace without the step's tokens (its separator included).
/// </summary>
public sealed record GapCase(int Sample, int Gap, TaskProblem Problem, int[] PromptIds, int[] Prefix, int[] GappedIds);

/// <summary>PLAN settings: the quantile of complete traces' step errors that calibrates the gap threshold, and the
/// generation limits of the filled step.</summary>
public sealed record PlanOptions
{
    public double ThresholdQuantile { get; init; } = 0.95;
    public int MaxStepTokens { get; init; } = 24;
    public int BatchSize { get; init; } = 64;
}

/// <summary>How well the world model finds a deleted step: the error of the step after the gap against the same step
/// position of the complete traces (AUROC), and the share flagged by a threshold calibrated on complete traces.</summary>
public sealed record GapDetection(Auroc Auroc, double Quantile, double Threshold, Proportion Detected, Proportion FalseAlarms)
{
    /// <summary>The threshold and the shares it flags (the AUROC goes with the study's other AUROCs).</summary>
    public System.Text.Json.Nodes.JsonObject ToJson() => new()
    {
        ["threshold"] = Threshold, ["detected"] = Detected.Value, ["false_alarms"] = FalseAlarms.Value,
    };
}

/// <summary>
/// PLAN: traces with one interior step deleted (made from verified traces whose every step is right), the gap detected
/// as a jump in next-step error above a threshold calibrated on complete traces, the missing step's latent predicted by
/// the masked predictor from the steps on both sides of the gap, and turned into text by generating the gap's step from
/// the prefix before it with that latent injected by residual steering (<see cref="StepGenerator.SteeringHooks"/>,
/// h ← h + λ·(ẑ − h̄) at the extraction layer, h̄ the latent of the step the model writes there unsteered). The task's
/// step checker grades the step.
/// </summary>
public static class GapPlanner
{
    /// <summary>One case per good trace of at least three steps; the gap (never the first or last step) is drawn per trace from <paramref name="seed"/>.</summary>
    public static List<GapCase> Cases(StepLatents set, long seed, int max = int.MaxValue)
    {
        var cases = new List<GapCase>();
        for (int i = 0; i < set.Samples.Count && cases.Count < max; i++)
        {
            var s = set.Samples[i];
            if (!WorldModelTraining.IsGood(s) || s.Steps.Count < 3) continue;
            int g = 1 + new Random(unchecked((int)Training.Seeds.For(seed, i, 0))).Next(s.Steps.Count - 2);
            int from = s.Steps[g].Start, to = s.Steps[g + 1].Start; // the step, its separator and the space after it
            cases.Add(new GapCase(i, g, s.Problem, s.PromptIds, s.TraceIds[..from], [.. s.TraceIds[..from], .. s.TraceIds[to..]]));
        }
        return cases;
    }

    /// <summary>The gapped traces' step latents, read as any trace is (one per case, in order; a case the segmenter cannot cut is an error).</summary>
    public static StepLatents Read(DecoderLM model, TraceFormat fmt, IReadOnlyList<GapCase> cases, StepOptions o)
    {
        var drawn = cases.Select((c, i) => new StepExtraction.Drawn(i, -1, c.Problem, c.PromptIds, c.GappedIds, c.GappedIds.Length - c.PromptIds.Length)).ToList();
        var set = StepExtraction.Read(model, fmt, drawn, o);
        if (set.Samples.Count != cases.Count) { set.Dispose(); throw new InvalidOperationException($"PLAN: {cases.Count - set.Samples.Count} gapped traces could not be cut into steps"); }
        return set;
    }

    /// <summary>
    /// Detection: positives are the gapped traces' next-step errors at the step after the gap, negatives the complete
    /// traces' errors at the same step position; the threshold is the <see cref="PlanOptions.ThresholdQuantile"/> of every
    /// step error of the calibration traces (complete, never the test ones).
    /// </summary>
    public static GapDetection Detect(IReadOnlyList<GapCase> cases, IReadOnlyList<TraceScore> gapped, IReadOnlyList<TraceScore> complete,
        IReadOnlyList<TraceScore> calibration, double quantile)
    {
        var pos = cases.Select((c, i) => gapped[i].StepErrors[c.Gap]).ToList();
        var neg = cases.Select(c => complete[c.Sample].StepErrors[c.Gap]).ToList();
        var calib = calibration.SelectMany(s => s.StepErrors).OrderBy(x => x).ToArray();
        if (calib.Length == 0) throw new ArgumentException("PLAN: no calibration step errors");
        double threshold = calib[Math.Clamp((int)Math.Ceiling(quantile * calib.Length) - 1, 0, calib.Length - 1)];
        return new GapDetection(Auroc.Of(pos, neg), quantile, threshold, Proportion.Wilson(pos.Count(x => x > threshold), pos.Count),
            Proportion.Wilson(neg.Count(x => x > threshold), neg.Count));
    }

    /// <summary>ẑ for each case's missing step [N, D] (hidden-state space): its row masked between the rows around it.</summary>
    public static Tensor PredictMissing(WorldModel wm, IReadOnlyList<GapCase> cases, StepLatents gapped)
    {
        using var _ = no_grad();
        int n = cases.Count, d = gapped.HiddenSize;
        int l = Enumerable.Range(0, n).Max(i => gapped.Samples[i].Rows) + 1;
        if (l > wm.Config.MaxSteps + 1)
            throw new ArgumentException($"PLAN: a gapped trace needs {l} rows; the world model takes at most {wm.Config.MaxSteps + 1}");
        var x = zeros(n, l, d);
        var masked = zeros(n, l, dtype: ScalarType.Bool);
        var valid = zeros(n, l, dtype: ScalarType.Bool);
        for (int i = 0; i < n; i++)
        {
            var rows = gapped.Of(i);
            int r = (int)rows.shape[0], at = cases[i].Gap + 1; // row 0 is the prompt; the missing step is row gap + 1
            x[i].narrow(0, 0, at).copy_(rows.narrow(0, 0, at));
            x[i].narrow(0, at + 1, r - at).copy_(rows.narrow(0, at, r - at));
            masked[i, at] = true;
            valid[i].narrow(0, 0, r + 1).fill_(true);
        }
        using var pass = wm.Forward(x, masked, valid);
        var idx = tensor(cases.Select(c => (long)c.Gap + 1).ToArray()).view(-1, 1, 1).expand(-1, 1, pass.PredictedLatent.shape[2]);
        var z = wm.Unstandardise(pass.PredictedLatent.gather(1, idx).squeeze(1));
        x.Dispose(); masked.Dispose(); valid.Dispose();
        return z;
    }

    /// <summary>
    /// Writes each case's missing step greedily from its prefix, the latent <paramref name="latents"/> [N, D] injected
    /// with strength <paramref name="lambda"/> (0, or null latents: the model fills the gap itself). The steering moves
    /// the step toward the latent from where the model would put it: δ = ẑ − h̄, h̄ being the latent of the step the
    /// model writes there unsteered (the mean of its states over that step, at the hook point), so a latent equal to
    /// the model's own step changes nothing and the true step's latent steers only where the model would go wrong.
    /// Returns the step texts and whether the task's step checker accepts each as step <c>gap</c>.
    /// </summary>
    public static (string[] Steps, bool[] Correct) Fill(StepGenerator generator, DecoderLM model, TraceFormat fmt, IReadOnlyList<GapCase> cases,
        Tensor? latents, double lambda, PlanOptions o)
    {
        var alone = Write(generator, model, cases, null, 0, o);
        var tokens = alone;
        if (latents is not null && lambda != 0)
        {
            using var delta = Baselines(generator, cases, alone, latents);
            tokens = Write(generator, model, cases, delta, lambda, o);
        }
        var texts = new string[cases.Count];
        var correct = new bool[cases.Count];
        for (int i = 0; i < cases.Count; i++)
        {
            var t = tokens[i];
            texts[i] = fmt.Tokenizer.Decode(t.Length > 0 && generator.StepStops.Contains(t[^1]) ? t[..^1] : t).Trim();
            correct[i] = StepCheck.Correct(cases[i].Problem, cases[i].Gap, texts[i]);
        }
        return (texts, correct);
    }

    /// <summary>δ = ẑ − h̄ per case [N, D]: h̄ the mean hook state over the step the model wrote unsteered (its stop token
    /// included, as a step's latent is read; the prefix's last state when it wrote nothing).</summary>
    static Tensor Baselines(StepGenerator generator, IReadOnlyList<GapCase> cases, int[][] alone, Tensor latents)
    {
        using var _ = no_grad();
        var rows = new List<Tensor>();
        for (int i = 0; i < cases.Count; i++)
        {
            using var h = generator.States([.. cases[i].Prefix, .. alone[i]]);
            int p = cases[i].Prefix.Length;
            rows.Add(alone[i].Length == 0 ? h[p - 1] : h.narrow(0, p, alone[i].Length).mean([0]));
        }
        var mean = stack(rows, 0);
        foreach (var r in rows) r.Dispose();
        var delta = latents.to(ScalarType.Float32).cpu() - mean;
        mean.Dispose();
        return delta;
    }

    /// <summary>Each case's step tokens (its stop token kept), greedy from the prefix, steered by λ·δ when <paramref name="delta"/> is given.</summary>
    static int[][] Write(StepGenerator generator, DecoderLM model, IReadOnlyList<GapCase> cases, Tensor? delta, double lambda, PlanOptions o)
    {
        var steps = new int[cases.Count][];
        var gen = new TextGenerator(model);
        using var _ = no_grad();
        for (int at = 0; at < cases.Count; at += o.BatchSize)
        {
            using var scope = NewDisposeScope();
            var idx = Enumerable.Range(at, Math.Min(o.BatchSize, cases.Count - at)).ToList();
            var prompts = idx.Select(i => cases[i].Prefix).ToList();
            var hooks = delta is null ? null
                : generator.SteeringHooks(delta.index_select(0, tensor(idx.Select(i => (long)i).ToArray())).unsqueeze(1), lambda, StepGenerator.SteerFrom(prompts));
            var cfg = new GenerationConfig(MaxNewTokens: o.MaxStepTokens, Temperature: 0, StopTokens: generator.StepStops);
            using var outcome = gen.Generate(prompts, cfg, hooks: hooks);
            for (int k = 0; k < idx.Count; k++)
                steps[idx[k]] = outcome.MatchedStopToken[k] is int stop ? [.. outcome.Tokens[k], stop] : outcome.Tokens[k];
        }
        return steps;
    }

}
