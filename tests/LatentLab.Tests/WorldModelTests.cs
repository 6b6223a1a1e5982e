using LatentLab.Evaluation;
using LatentLab.Generation;
using LatentLab.Hooks;
using LatentLab.Latents;
using LatentLab.Methods.WorldModel;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using static TorchSharp.torch;

namespace LatentLab.Tests;

/// <summary>R-JEPA: step segmentation and checks, the step store, the world model's masks, EMA and stop-gradient, the score, RERANK, NUDGE and calibration.</summary>
public sealed class WorldModelTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-rjepa").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    static WorldModelConfig Small => new() { Width = 32, Layers = 1, PredictorLayers = 1, Heads = 2, MaxSteps = 12 };

    [Fact]
    public void TeacherTracesSplitAtSemicolonsIntoTheTasksOwnSteps()
    {
        var fmt = TeacherFormat.Create(LatentTestKit.Addition);
        foreach (var p in LatentTestKit.Problems(5, digits: 4))
        {
            var (ids, promptLength) = fmt.Sequence(p, thinking: true);
            var steps = StepSegmenter.Segment(fmt, ids, promptLength)!;
            Assert.Equal(p.Steps, steps.Select(s => s.Text).ToList());
            Assert.All(StepCheck.All(p, steps), Assert.True);
            // Each step closes with its separator, the last with the end-of-thinking marker.
            for (int i = 0; i < steps.Count; i++)
                Assert.Equal(i < steps.Count - 1 ? ";" : "</think>", fmt.Tokenizer.Decode([ids[steps[i].End - 1]]));
            Assert.Equal(promptLength, steps[0].Start);
        }
    }

    [Fact]
    public void AWrongStepIsTheFirstWrongStep()
    {
        var p = LatentTestKit.Problems(1, digits: 4)[0];
        var fmt = TeacherFormat.Create(LatentTestKit.Addition);
        var bad = p.Steps.ToList();
        bad[2] = bad[2][..^1] + (bad[2][^1] == '9' ? '0' : (char)(bad[2][^1] + 1));
        var trace = fmt.Trace.Chat.Trace(p.Prompt, string.Join(";", bad), p.Answer);
        var ids = fmt.Tokenizer.Encode(trace, true);
        int promptLength = fmt.PromptIds(p, true).Length;
        var steps = StepSegmenter.Segment(fmt, ids, promptLength)!;
        var s = new StepSample(0, 0, 0, p, ids[..promptLength], ids, steps, StepCheck.All(p, steps), p.Answer, true, 0, 0);
        Assert.Equal(2, s.FirstWrongStep);
    }

    [Fact]
    public void StepStoreRoundTripsResumesAndRefusesAnotherModel()
    {
        var (model, fmt) = LatentTestKit.RandomTeacher(seed: 3);
        using var _ = model;
        var problems = LatentTestKit.Problems(6, digits: 3);
        var o = new StepOptions { Trace = TraceMode.Reference, Point = "blocks.-1.resid_post", RowsPerFile = 4 };
        var dir = Path.Combine(_dir, "store");
        StepStore.Run(model, fmt, problems, o, dir);
        using var set = StepStore.Open(dir, model, fmt.Tokenizer);
        Assert.Equal(6, set.Samples.Count);
        Assert.All(set.Samples, s => Assert.Equal(4, s.Rows)); // prompt + 3 column steps
        using var direct = StepExtraction.Run(model, fmt, problems, o);
        LatentTestKit.AssertSame(direct.Latents, set.Latents, 1e-6);
        // The mean over a step's tokens is what is stored.
        var spec = HookSpec.Capture("blocks.-1.resid_post");
        var s0 = set.Samples[0];
        using var outp = model.Forward(tensor(s0.TraceIds.Select(x => (long)x).ToArray()).view(1, -1), hooks: new HookSet([spec]));
        var h = outp.Capture(spec.Key)[0];
        LatentTestKit.AssertSame(h.narrow(0, s0.Steps[1].Start, s0.Steps[1].Length).mean([0]), set.Of(0)[2], 1e-5);
        // The trace's log-probability is the sum over its generated tokens, read off the same forward pass.
        int p0 = s0.PromptIds.Length, n0 = s0.TraceIds.Length;
        var lsm = outp.Logits![0].log_softmax(-1);
        double expected = Enumerable.Range(p0 - 1, n0 - p0).Sum(j => (double)lsm[j, s0.TraceIds[j + 1]].item<float>());
        Assert.Equal(expected, s0.LogProb, 3);
        // Resume: a second run keeps every file; damage one and only it is redone.
        var before = File.GetLastWriteTimeUtc(Path.Combine(dir, "steps-0000000-0000004.safetensors"));
        File.AppendAllText(Path.Combine(dir, "steps-0000004-0000006.jsonl"), "x");
        var notes = new List<string>();
        StepStore.Run(model, fmt, problems, o, dir, notes.Add);
        Assert.Contains(notes, n => n.Contains("kept from an earlier run"));
        Assert.Equal(before, File.GetLastWriteTimeUtc(Path.Combine(dir, "steps-0000000-0000004.safetensors")));
        using var again = StepStore.Open(dir);
        Assert.Equal(6, again.Samples.Count);
        var (other, _) = LatentTestKit.RandomTeacher(seed: 4);
        using var __ = other;
        Assert.Throws<InvalidDataException>(() => StepStore.Open(dir, other));
        Assert.Throws<InvalidDataException>(() => StepStore.Run(model, fmt, problems, o with { Point = "blocks.0.resid_post" }, dir));
    }

    [Fact]
    public void SpanMasksStayWithinTheirBoundsAndNeverHideThePrompt()
    {
        var c = Small with { NextStepShare = 0 };
        var rng = new Random(1);
        var steps = Enumerable.Range(1, 11).ToArray();
        for (int rep = 0; rep < 50; rep++)
        {
            var m = StepMasks.Draw(steps, 12, c, rng).data<bool>().ToArray();
            for (int r = 0; r < steps.Length; r++)
            {
                int n = steps[r];
                var row = m.Skip(r * 12).Take(12).ToArray();
                Assert.False(row[0]);
                Assert.All(row.Skip(n + 1), Assert.False);
                var on = Enumerable.Range(0, 12).Where(i => row[i]).ToList();
                Assert.Equal(on.Count, on[^1] - on[0] + 1); // contiguous
                int lo = Math.Max(1, (int)Math.Ceiling(0.3 * n - 1e-9)), hi = Math.Max(lo, Math.Min(n, (int)Math.Floor(0.7 * n + 1e-9)));
                Assert.InRange(on.Count, lo, hi);
            }
        }
        var next = StepMasks.NextStep(5, 3, 8);
        Assert.Equal(new[] { false, false, false, true, true, true, false, false }, next);
    }

    [Fact]
    public void NoGradientReachesTheTargetEncoderAndEmaPullsItTowardsTheContextEncoder()
    {
        TorchRuntime.Initialize();
        TorchRuntime.Seed(0);
        using var wm = new WorldModel(8, Small);
        var x = randn(4, 5, 8);
        var valid = ones(4, 5, dtype: ScalarType.Bool);
        var masked = StepMasks.Draw([4, 4, 4, 4], 5, Small, new Random(0));
        var (loss, _) = WorldModelTrainable.Objective(wm, x, masked, valid);
        loss.backward();
        Assert.All(wm.target.parameters(), p => { Assert.False(p.requires_grad); Assert.Null(p.grad); });
        Assert.Contains(wm.context.parameters(), p => p.grad is not null && p.grad.abs().sum().item<float>() > 0);
        // Targets equal the target encoder's output without any gradient path.
        using var pass = wm.Forward(x, masked, valid);
        Assert.False(pass.Target.requires_grad);

        using (no_grad()) foreach (var p in wm.context.parameters()) p.add_(1.0);
        var t0 = wm.target.parameters().First().clone();
        var c0 = wm.context.parameters().First().clone();
        var trainable = new WorldModelTrainable(wm, new StepBatch(x, valid, [4, 4, 4, 4]), new WorldTrainOptions { Steps = 10, Model = Small });
        trainable.AfterStep(0);
        double tau = new Training.EmaSchedule().At(0, 10);
        LatentTestKit.AssertSame(t0 * tau + c0 * (1 - tau), wm.target.parameters().First(), 1e-6);
    }

    /// <summary>Right traces walk a fixed chain of latents; wrong ones jump off it at one step. A world model trained on the right ones must score the wrong ones higher.</summary>
    static StepLatents Constructed(int n, long seed, double wrongShare)
    {
        var g = new Random((int)seed);
        var chain = randn(7, 8, generator: new Generator(7));
        var p = LatentTestKit.Problems(1, digits: 4)[0];
        var samples = new List<StepSample>();
        var rows = new List<Tensor>();
        for (int i = 0; i < n; i++)
        {
            bool wrong = g.NextDouble() < wrongShare;
            int bad = wrong ? 1 + g.Next(5) : -1;
            var x = chain.clone() + 0.05 * randn(7, 8);
            if (wrong) x[bad] = randn(8) * 2;
            rows.Add(x);
            var steps = Enumerable.Range(0, 6).Select(k => new StepSpan(k, k + 1, "s")).ToList();
            var ok = Enumerable.Range(0, 6).Select(k => k != bad - 1).ToArray();
            samples.Add(new StepSample(i, i, 0, p, [0], [0], steps, ok, "a", !wrong, 0, 0));
        }
        return new StepLatents(samples, cat(rows, 0));
    }

    [Fact]
    public void TheScoreSeparatesRightFromWrongTracesWhereItMust()
    {
        TorchRuntime.Initialize();
        using var train = Constructed(64, 1, 0.3);
        using var test = Constructed(60, 2, 0.5);
        var o = new WorldTrainOptions { Steps = 120, BatchSize = 32, LearningRate = 3e-3, Model = Small, EvalEvery = 0, OutDir = Path.Combine(_dir, "wm"), ProgressBar = false };
        var (wm, r) = WorldModelTraining.Train(train, null, o, TextWriter.Null);
        using var _ = wm;
        Assert.True(r.TrainTraces < 64); // wrong traces are left out by default
        var scores = WorldScoring.Score(wm, test);
        var (trace, _, step) = WorldScoring.Aurocs(test.Samples, scores);
        Assert.True(trace.Value > 0.9, $"trace AUROC {trace}");
        Assert.True(step.Value > 0.8, $"first-wrong-step AUROC {step}");
        // A reloaded world model scores the same.
        using var back = WorldModel.Load(Path.Combine(_dir, "wm", "model"));
        Assert.Equal(scores[0].Mean, WorldScoring.Score(back, test)[0].Mean, 5);
    }

    [Fact]
    public void RerankPicksTheLowestErrorSample()
    {
        var errors = new[] { 0.9, 0.2, 0.5, 0.2 };
        Assert.Equal(1, Rerank.Pick([0, 1, 2, 3], i => -errors[i]));
        var w = new RerankWeights(0, 1, false, 1, 1);
        var p = LatentTestKit.Problems(1)[0];
        StepSample S(bool ok) => new(0, 0, 0, p, [0], [0], [], [], "x", ok, -1, 0);
        var samples = new[] { S(false), S(true), S(false) };
        var scores = new[] { new TraceScore([0.8], [0]), new TraceScore([0.1], [0]), new TraceScore([0.5], [0]) };
        Assert.Equal(new[] { true }, Rerank.Grade(samples, [[0, 1, 2]], i => w.Utility(samples[i], scores[i])));
    }

    [Fact]
    public void AurocCountsPairsAndTies()
    {
        Assert.Equal(1.0, Auroc.Of([3, 4], [1, 2]).Value);
        Assert.Equal(0.0, Auroc.Of([1], [2]).Value);
        Assert.Equal(0.5, Auroc.Of([1, 1], [1]).Value);
        Assert.Equal(0.75, Auroc.Of([2, 3], [1, 2.5]).Value);
    }

    [Fact]
    public void CalibrationRecoversAKnownAffineMap()
    {
        TorchRuntime.Initialize();
        var g = new Generator(3);
        var w = randn(6, 4, generator: g);
        var b = randn(4, generator: g);
        var x = randn(200, 6, generator: g);
        using var map = AffineMap.Fit(x, x.matmul(w) + b, ridge: 1e-8);
        LatentTestKit.AssertSame(w, map.Weight, 1e-3);
        LatentTestKit.AssertSame(b, map.Bias, 1e-3);
        Assert.True(map.R2(x, x.matmul(w) + b) > 0.9999);
    }

    [Fact]
    public void NudgeAtLambdaZeroIsBitIdenticalAndAboveZeroMovesTheHiddenState()
    {
        var (model, fmt) = LatentTestKit.RandomTeacher(seed: 5);
        using var _ = model;
        TorchRuntime.Seed(1);
        using var wm = new WorldModel(model.Config.HiddenSize, Small);
        var problems = LatentTestKit.Problems(3, digits: 2);
        var plain = new StepGenerator(model, fmt, null, "blocks.-2.resid_post");
        var nudged = new StepGenerator(model, fmt, wm, "blocks.-2.resid_post");
        var o = new NudgeOptions { Temperature = 1.0, Seed = 9, MaxSteps = 3, MaxStepTokens = 6 };
        var a = plain.Run(problems, o);
        var z = nudged.Run(problems, o with { Lambda = 0 });
        Assert.Equal(a.Traces, z.Traces);
        // Greedy step-by-step generation is plain greedy generation.
        var g = plain.Run(problems, o with { Temperature = 0, MaxSteps = 1, MaxStepTokens = 6 });
        var gen = new TextGenerator(model).Generate(problems.Select(p => fmt.PromptIds(p, true)).ToList(),
            new GenerationConfig(MaxNewTokens: 6, StopTokens: [fmt.Tokenizer.TokenToId(";")!.Value, fmt.Tokenizer.TokenToId("</think>")!.Value, fmt.Tokenizer.EosId!.Value]));
        for (int i = 0; i < problems.Count; i++)
        {
            int p = fmt.PromptIds(problems[i], true).Length;
            Assert.Equal(gen.Tokens[i], g.Traces[i][p..(p + gen.Tokens[i].Length)]);
        }

        // The steering hook adds λ·δ at the extraction point from the given position on, and nothing before it.
        var ids = tensor(fmt.PromptIds(problems[0], true).Select(x => (long)x).ToArray()).view(1, -1);
        long len = ids.shape[1];
        var delta = randn(1, 1, model.Config.HiddenSize);
        var cap = HookSpec.Capture("blocks.-2.resid_post");
        using var before = model.Forward(ids, hooks: new HookSet([cap]));
        var steer = nudged.SteeringHooks(delta, 0.5, (int)len - 1);
        using var after = model.Forward(ids, hooks: new HookSet([.. steer.Hooks, cap]));
        var h0 = before.Capture(cap.Key);
        var h1 = after.Capture(cap.Key);
        LatentTestKit.AssertSame(h0.narrow(1, 0, len - 1), h1.narrow(1, 0, len - 1));
        LatentTestKit.AssertSame(h0[0, -1] + 0.5 * delta[0, 0], h1[0, -1], 1e-5);
        var zero = nudged.SteeringHooks(delta, 0, (int)len - 1);
        using var same = model.Forward(ids, hooks: new HookSet([.. zero.Hooks, cap]));
        LatentTestKit.AssertSame(h0, same.Capture(cap.Key));
    }

    [Fact]
    public void PlanDeletesOneInteriorStepAndWritesTheGapFromItsPrefix()
    {
        var (model, fmt) = LatentTestKit.RandomTeacher(seed: 5);
        using var _ = model;
        const string point = "blocks.-2.resid_post";
        var problems = LatentTestKit.Problems(6, digits: 4);
        // Reference traces: every step right (a random model's own never are).
        using var set = StepExtraction.Run(model, fmt, problems, new StepOptions { Point = point, Trace = TraceMode.Reference });
        var cases = GapPlanner.Cases(set, seed: 3);
        Assert.Equal(6, cases.Count);
        Assert.Contains(cases, c => c.Gap != cases[0].Gap); // the gap is drawn per trace
        foreach (var c in cases)
        {
            var s = set.Samples[c.Sample];
            Assert.InRange(c.Gap, 1, s.Steps.Count - 2);
            // The prefix ends where the deleted step began; the gapped trace is the trace without exactly that step.
            Assert.Equal(s.Steps[c.Gap].Start, c.Prefix.Length);
            Assert.Equal(s.TraceIds[..c.Prefix.Length], c.Prefix);
            var cut = StepSegmenter.Segment(fmt, c.GappedIds, c.PromptIds.Length)!;
            Assert.Equal(s.Problem.Steps.Where((_, i) => i != c.Gap), cut.Select(x => x.Text));
        }
        using var gapped = GapPlanner.Read(model, fmt, cases, new StepOptions { Point = point });
        for (int i = 0; i < cases.Count; i++) Assert.Equal(set.Samples[cases[i].Sample].Rows - 1, gapped.Samples[i].Rows);

        TorchRuntime.Seed(1);
        using var wm = new WorldModel(model.Config.HiddenSize, Small);
        var gen = new StepGenerator(model, fmt, wm, point);
        using var z = GapPlanner.PredictMissing(wm, cases, gapped);
        Assert.Equal(new long[] { cases.Count, model.Config.HiddenSize }, z.shape);
        // No latent, or λ = 0, is the model writing the gap's step alone: plain greedy generation from the prefix.
        var o = new PlanOptions();
        var alone = GapPlanner.Fill(gen, model, fmt, cases, null, 0, o);
        Assert.Equal(alone.Steps, GapPlanner.Fill(gen, model, fmt, cases, z, 0, o).Steps);
        using var plain = new TextGenerator(model).Generate(cases.Select(c => c.Prefix).ToList(),
            new GenerationConfig(MaxNewTokens: o.MaxStepTokens, Temperature: 0, StopTokens: gen.StepStops));
        Assert.Equal(plain.Tokens.Select(t => fmt.Tokenizer.Decode(t).Trim()), alone.Steps);
        // The true step latent injected hard enough changes what is written at the gap.
        using var truth = stack(cases.Select(c => set.Of(c.Sample)[c.Gap + 1]).ToList(), 0);
        var forced = GapPlanner.Fill(gen, model, fmt, cases, truth, 50, o);
        Assert.NotEqual(alone.Steps, forced.Steps);
        // The checker grades the written step as the deleted one.
        for (int i = 0; i < cases.Count; i++)
            Assert.Equal(alone.Steps[i] == cases[i].Problem.Steps[cases[i].Gap], alone.Correct[i]);
    }

    [Fact]
    public void GapDetectionCalibratesItsThresholdOnCompleteTraces()
    {
        var p = LatentTestKit.Problems(1)[0];
        var cases = Enumerable.Range(0, 4).Select(i => new GapCase(i, 1, p, [0], [0], [0])).ToList();
        var gapped = cases.Select((_, i) => new TraceScore([0.1, i < 3 ? 2.0 : 0.1, 0.1], [0, 0, 0])).ToList();
        var complete = cases.Select(_ => new TraceScore([0.1, 0.2, 0.1, 0.1], [0, 0, 0, 0])).ToList();
        var calibration = Enumerable.Range(0, 20).Select(i => new TraceScore([i / 20.0], [0])).ToList();
        var d = GapPlanner.Detect(cases, gapped, complete, calibration, 0.95);
        Assert.Equal(0.9, d.Threshold, 10); // the 19th of 20 sorted errors
        Assert.Equal(3, d.Detected.Successes);
        Assert.Equal(0, d.FalseAlarms.Successes);
        Assert.Equal(0.75, d.Auroc.Value, 10); // three gaps above every complete step, one below (0.1 < 0.2)
    }
}
