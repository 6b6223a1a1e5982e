using LatentLab.Evaluation;
using LatentLab.Hooks;
using LatentLab.Latents;
using LatentLab.Methods.Shortcut;
using LatentLab.Models;
using LatentLab.Teacher;
using LatentLab.Tensors;
using static TorchSharp.torch;

namespace LatentLab.Tests;

/// <summary>The bottleneck trace: the answer must not see the thought, in one pass, through a cache, in generation.</summary>
public sealed class BottleneckTests
{
    const int Slots = 2;

    static (DecoderLM Model, TeacherFormat Fmt) Teacher(long seed = 5)
    {
        TorchRuntime.Initialize();
        var fmt = TeacherFormat.Create(LatentTestKit.Addition, Slots);
        TorchRuntime.Seed(seed);
        var model = new DecoderLM(TeacherModel.DefaultConfig(fmt.Tokenizer, 32, layers: 2, heads: 2));
        model.eval();
        return (model, fmt);
    }

    static (int[] Ids, int Prompt, int FirstSlot, int Marker, SequenceLayout Layout) Trace(TeacherFormat fmt)
    {
        var p = LatentTestKit.Problems(1, digits: 2)[0];
        var (ids, prompt) = fmt.Trace.BottleneckSequence(p);
        int first = Array.IndexOf(ids, fmt.Trace.SlotId!.Value);
        return (ids, prompt, first, first + Slots, fmt.Trace.Layout(ids, prompt)!);
    }

    static (Tensor Positions, Tensor Expiry) One(SequenceLayout l) => SequenceLayout.Batch([l], [l.Length], l.Length);

    [Fact]
    public void FormatPutsSlotsBeforeTheMarkerAndReadsTargetsThere()
    {
        var (_, fmt) = Teacher();
        var (ids, prompt, first, marker, layout) = Trace(fmt);
        Assert.Equal(fmt.Tokenizer.TokenToId(fmt.Chat.ThinkEnd), ids[marker]);
        Assert.True(first > prompt, "the thought comes between the prompt and the slots");
        // The slots and everything after take positions as if the thought were absent; the thought is hidden from the marker on.
        Assert.Equal(prompt, layout.Positions[first]);
        Assert.Equal(prompt + Slots, layout.Positions[marker]);
        Assert.All(Enumerable.Range(prompt, first - prompt), i => Assert.Equal(marker, layout.Expiry[i]));
        Assert.All(Enumerable.Range(0, prompt).Concat(Enumerable.Range(first, ids.Length - first)), i => Assert.Equal(SequenceLayout.Never, layout.Expiry[i]));
        var pos = fmt.Trace.Locate(ids, prompt)!.Value;
        Assert.Equal(marker - 1, pos.Post); // the last slot: K = slots post states are the slots
        Assert.Equal(marker + 1, pos.FirstAnswer);
        Assert.Equal(Slots, TraceFormat.BottleneckSlots(SaveFormat(fmt)));
        Assert.Null(TeacherFormat.Create(LatentTestKit.Addition).Trace.Layout(ids, prompt));
    }

    static string SaveFormat(TeacherFormat fmt)
    {
        var dir = Directory.CreateTempSubdirectory("bottleneck").FullName;
        fmt.Trace.SaveTo(dir);
        return dir;
    }

    [Fact]
    public void AnswerGivesNoAttentionToTheThought()
    {
        var (model, fmt) = Teacher();
        using var _ = model;
        using var scope = NewDisposeScope();
        var (ids, prompt, first, marker, layout) = Trace(fmt);
        var (positions, expiry) = One(layout);
        var hooks = new HookSet(Enumerable.Range(0, 2).Select(l => HookSpec.Capture($"blocks.{l}.attn.hook_pattern")).ToArray());
        var x = tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var masked = model.Forward(x, hooks: hooks, positions: positions, keyExpiry: expiry);
        using var open = model.Forward(x, hooks: hooks);
        for (int l = 0; l < 2; l++)
        {
            var key = HookSpec.Capture($"blocks.{l}.attn.hook_pattern").Key;
            var hidden = masked.Capture(key).narrow(2, marker, ids.Length - marker).narrow(3, prompt, first - prompt);
            Assert.Equal(0.0, hidden.abs().max().item<float>());
            // The slots themselves read the thought, and without the layout the answer would too (the test can fail).
            Assert.True(masked.Capture(key).narrow(2, first, Slots).narrow(3, prompt, first - prompt).sum().item<float>() > 0.01);
            Assert.True(open.Capture(key).narrow(2, marker, ids.Length - marker).narrow(3, prompt, first - prompt).sum().item<float>() > 0.01);
        }
    }

    [Fact]
    public void SlotCacheAloneReproducesTheAnswerAndCachedDecodingHonoursTheLayout()
    {
        var (model, fmt) = Teacher();
        using var _ = model;
        using var scope = NewDisposeScope();
        var (ids, prompt, first, marker, layout) = Trace(fmt);
        var (positions, expiry) = One(layout);
        long[] L(IEnumerable<int> xs) => xs.Select(i => (long)i).ToArray();
        var x = tensor(L(ids)).unsqueeze(0);
        var full = model.Forward(x, positions: positions, keyExpiry: expiry).Logits!.narrow(1, marker, ids.Length - marker);

        // Incremental: prefill up to the slots with the layout, then one token at a time from the marker on.
        using (var cache = new KvCache(model.Config.NumLayers))
        {
            model.Forward(x.narrow(1, 0, marker), cache: cache, positions: positions.narrow(1, 0, marker), keyExpiry: expiry.narrow(1, 0, marker)).Dispose();
            var steps = Enumerable.Range(marker, ids.Length - marker).Select(t => model.Forward(x.narrow(1, t, 1), cache: cache).Logits!).ToList();
            var diffs = string.Join(" ", Enumerable.Range(0, steps.Count).Select(j => (steps[j] - full.narrow(1, j, 1)).abs().max().item<float>().ToString("E1")));
            Assert.True((cat(steps, 1) - full).abs().max().item<float>() < 1e-4, $"cached decoding differs from the one-pass bottleneck forward: {diffs}; next {cache.NextPositions!.item<long>()} pos {string.Join(",", layout.Positions)}");
        }

        // The prompt's own cache plus the slots' keys and values from the full pass: the answer is the same, so the
        // thought reaches it through the slots only. A leak of the thought would make these differ.
        using var withThought = new KvCache(model.Config.NumLayers);
        model.Forward(x.narrow(1, 0, marker), cache: withThought, positions: positions.narrow(1, 0, marker), keyExpiry: expiry.narrow(1, 0, marker)).Dispose();
        using var promptOnly = new KvCache(model.Config.NumLayers);
        model.Forward(x.narrow(1, 0, prompt), cache: promptOnly).Dispose();
        var kv = Enumerable.Range(0, model.Config.NumLayers).Select(l =>
            (cat(new[] { promptOnly.Keys(l)!, withThought.Keys(l)!.narrow(2, first, Slots) }, 2),
             cat(new[] { promptOnly.Values(l)!, withThought.Values(l)!.narrow(2, first, Slots) }, 2))).ToList();
        using var prefix = KvCache.FromPrefix(kv, 1);
        var rest = model.Forward(x.narrow(1, marker, ids.Length - marker), cache: prefix).Logits!;
        Assert.True((rest - full).abs().max().item<float>() < 1e-4, "the answer reads more than the prompt and the slots");
    }

    [Fact]
    public void GenerationDecodesWhatTheOnePassForwardPredicts()
    {
        var (model, fmt) = Teacher();
        using var _ = model;
        using var scope = NewDisposeScope();
        var (ids, prompt, first, marker, layout) = Trace(fmt);
        // Reference thought given, slots and marker forced, then 3 greedy tokens.
        var outs = ThinkingGeneration.Generate(model, fmt, [ids[..first]], [prompt], bottleneck: true, maxThought: 1, maxAnswer: 3, continueThought: false);
        var cont = outs[0].Continuation;
        Assert.Equal(ids[prompt..(marker + 1)], cont[..(marker + 1 - prompt)]);
        var gen = cont[(marker + 1 - prompt)..];
        // Teacher-force the generated tokens in one pass: each must be the argmax there.
        int[] seq = [.. ids[..(marker + 1)], .. gen];
        var l = fmt.Trace.Layout(seq, prompt)!;
        var (positions, expiry) = One(l);
        var logits = model.Forward(tensor(seq.Select(i => (long)i).ToArray()).unsqueeze(0), positions: positions, keyExpiry: expiry).Logits!;
        for (int j = 0; j < gen.Length; j++)
            Assert.Equal(gen[j], (int)logits[0, marker + j].argmax().item<long>());
    }

    [Fact]
    public void KvPrefixOracleAnswersExactlyAsTheTeacherDoesThroughItsSlots()
    {
        // Phase 0's one path: reference thoughts, the slots forced, the answer decoded behind the bottleneck.
        var (model, fmt, problems, set) = Samples(9, 6, 3);
        using var _ = model;
        using var _set = set;
        Assert.Equal(problems.Count, set.Samples.Count);
        Assert.Equal(new long[] { problems.Count, Slots, 32 }, set.Post.shape);
        var slots = KvPrefixInjection.SlotCache(model, fmt, set.Samples);
        var oracle = KvPrefixInjection.Answer(model, fmt, problems, slots);
        Assert.Equal(set.Samples.Select(x => x.TeacherAnswer), oracle.Answers);
        // The mean prefix ignores the problem: on different problems it may not reproduce them all.
        var mean = KvPrefixInjection.Answer(model, fmt, problems, KvPrefixInjection.Mean(slots, problems.Count));
        Assert.Single(mean.Answers.Distinct());
        foreach (var (k, v) in slots) { k.Dispose(); v.Dispose(); }
    }

    /// <summary>A random bottleneck teacher and Phase 0's samples of <paramref name="n"/> 2-digit problems (reference
    /// thoughts, slots forced, the answer decoded behind the bottleneck).</summary>
    static (DecoderLM Model, TeacherFormat Fmt, IReadOnlyList<Tasks.TaskProblem> Problems, LatentSet Set) Samples(long seed, int n, long problemSeed)
    {
        var (model, fmt) = Teacher(seed);
        var problems = LatentTestKit.Problems(n, digits: 2, seed: problemSeed);
        return (model, fmt, problems, LatentExtraction.Samples(model, fmt.Tokenizer, fmt, problems, LatentTestKit.Reference(k: Slots) with { MaxNewTokens = 8 }));
    }

    /// <summary>A random bottleneck teacher, 16 problems' samples and slot caches, and those samples labelled with the
    /// teacher's own answers through its slots (what a KV predictor should learn to reproduce).</summary>
    static (DecoderLM Model, TeacherFormat Fmt, IReadOnlyList<Tasks.TaskProblem> Problems, LatentSet Set,
        IReadOnlyList<(Tensor Keys, Tensor Values)> Slots, List<TraceSample> Train) KvFixture(long seed, long problemSeed)
    {
        var (model, fmt, problems, set) = Samples(seed, 16, problemSeed);
        var slots = KvPrefixInjection.SlotCache(model, fmt, set.Samples);
        var oracle = KvPrefixInjection.Answer(model, fmt, problems, slots);
        var train = set.Samples.Select((x, i) => x with { TeacherAnswer = oracle.Answers[i] ?? x.Problem.Answer, Verified = true }).ToList();
        return (model, fmt, problems, set, slots, train);
    }

    [Fact]
    public void KvPrefixPredictorStartsAtTheMeanCacheAndLearnsThroughTheCache()
    {
        var (model, fmt, problems, set, slots, train) = KvFixture(11, 4);
        using var _ = model;
        using var _set = set;
        using var flat = KvPrefixPredictor.Flatten(slots);
        Assert.Equal(new long[] { problems.Count, 2L * 2 * model.Config.NumKvHeads * Slots * model.Config.HeadDim }, flat.shape);

        var fresh = KvPrefixPredictor.For(model, Slots, hidden: 16);
        fresh.FitStandardizer(set.Pre, flat);
        var round = fresh.Unflatten(flat);
        for (int l = 0; l < slots.Count; l++)
        {
            Assert.True(round[l].Keys.eq(slots[l].Keys).all().item<bool>());
            Assert.True(round[l].Values.eq(slots[l].Values).all().item<bool>());
        }
        // Zero-initialised output: an untrained predictor is the mean cache, so it answers as the floor arm does.
        var start = fresh.Predict(set.Pre);
        var mean = KvPrefixInjection.Mean(slots, problems.Count);
        for (int l = 0; l < slots.Count; l++) Assert.True(start[l].Keys.allclose(mean[l].Keys, rtol: 1e-4, atol: 1e-5));
        Assert.Equal(KvPrefixInjection.Answer(model, fmt, problems, mean).Answers, KvPrefixInjection.Answer(model, fmt, problems, start).Answers);

        var dir = Path.Combine(Path.GetTempPath(), "latentlab-kv-" + Guid.NewGuid().ToString("N"));
        try
        {
            // Answer cross-entropy alone (λ = 0): its gradient reaches the predictor only through the cache's attention.
            using var ceOnly = KvPrefixTraining.Train(model, fmt, train, set.Pre, slots, new ArmTraining(20, 8, 3e-3, 1), 0, Path.Combine(dir, "ce"), hidden: 16);
            Assert.True(ceOnly.named_parameters().Single(p => p.name == "output.weight").parameter.abs().max().item<float>() > 0);
            // With the cache-matching term it moves towards the true cache: standardised error below the mean's (1 per element).
            using var matched = KvPrefixTraining.Train(model, fmt, train, set.Pre, slots, new ArmTraining(60, 8, 3e-3, 1), 1, Path.Combine(dir, "mse"), hidden: 16);
            using var pred = KvPrefixPredictor.Flatten(matched.Predict(set.Pre));
            double err = (matched.StandardizeKv(pred) - matched.StandardizeKv(flat)).pow(2).mean().item<float>();
            double meanErr = matched.StandardizeKv(flat).pow(2).mean().item<float>();
            Assert.True(err < 0.7 * meanErr, $"standardised cache error {err:F3} vs the mean's {meanErr:F3}");
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
        foreach (var (k, v) in slots.Concat(mean).Concat(start)) { k.Dispose(); v.Dispose(); }
    }

    [Fact]
    public void KvPrefixStudentStartsAtTheTeachersThoughtlessSlotsAndLearnsThroughTheCache()
    {
        var (model, fmt, problems, set, slots, train) = KvFixture(17, 4);
        using var _ = model;
        using var _set = set;
        using var flat = KvPrefixPredictor.Flatten(slots);
        var prompts = set.Samples.Select(x => x.PromptIds).ToList();
        // Untrained, the student is the teacher: its slots equal the teacher's own cache (through the bottleneck layout
        // and the store's path) on traces whose thought is empty.
        var thoughtless = set.Samples.Select(x => x with
        {
            TraceIds = [.. x.PromptIds, .. fmt.Trace.SlotsAndEnd()],
            PostPosition = x.PromptIds.Length + Slots - 1,
        }).ToList();
        var reference = KvPrefixInjection.SlotCache(model, fmt, thoughtless);
        using var untrained = KvPrefixStudent.Untrained(model, fmt);
        var start = untrained.Predict(prompts, batchSize: 5);
        for (int l = 0; l < slots.Count; l++)
        {
            Assert.True(start[l].Keys.allclose(reference[l].Keys, rtol: 1e-4, atol: 1e-5), $"layer {l} keys");
            Assert.True(start[l].Values.allclose(reference[l].Values, rtol: 1e-4, atol: 1e-5), $"layer {l} values");
        }
        using var startFlat = KvPrefixPredictor.Flatten(start);
        Assert.Equal(0, KvPrefixStudent.RelativeError(slots, slots).item<float>());
        var dir = Path.Combine(Path.GetTempPath(), "latentlab-kvs-" + Guid.NewGuid().ToString("N"));
        try
        {
            // Answer cross-entropy alone (λ = 0): the student's adapters learn only through the teacher's attention to the slots.
            using var ceOnly = KvPrefixStudent.Train(model, fmt, train, slots, new ArmTraining(10, 8, 3e-3, 1), 4, 0, Path.Combine(dir, "ce"));
            using var ceFlat = KvPrefixPredictor.Flatten(ceOnly.Predict(prompts));
            Assert.False(ceFlat.allclose(startFlat, rtol: 1e-4, atol: 1e-5), "answer CE alone left the student's slots where they started");
            // With the cache-matching term its slots move towards the teacher's after real thinking.
            using var matched = KvPrefixStudent.Train(model, fmt, train, slots, new ArmTraining(60, 8, 3e-3, 1), 4, 1, Path.Combine(dir, "mse"));
            var pred = matched.Predict(prompts);
            double err = KvPrefixStudent.RelativeError(pred, slots).item<float>(), startErr = KvPrefixStudent.RelativeError(start, slots).item<float>();
            foreach (var (k, v) in pred) { k.Dispose(); v.Dispose(); }
            Assert.True(err < 0.7 * startErr, $"relative cache error {err:F4} vs {startErr:F4} before training");
            Assert.True(matched.Flops(10) > 0);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
        foreach (var (k, v) in slots.Concat(reference).Concat(start)) { k.Dispose(); v.Dispose(); }
    }

    [Fact]
    public void PromptReadingKvPredictorIgnoresPaddingStartsAtTheMeanAndLearnsThroughTheCache()
    {
        var (model, fmt, problems, set, slots, train) = KvFixture(19, 9);
        using var _ = model;
        using var _set = set;
        using var input = KvInput.Prompts(model, set.Samples.Select(x => x.PromptIds).ToList(), "blocks.0.resid_post");
        Assert.Equal(set.Samples.Select(x => (long)x.PromptIds.Length), input.Mask!.sum(1).data<long>().ToArray());
        // The states at real positions are the model's own: the last one is h_pre as Phase 0 reads it (the store's
        // forward over the trace cut at the slots, at the extraction's point).
        using var atStorePoint = KvInput.Prompts(model, set.Samples.Select(x => x.PromptIds).ToList(), "blocks.-1.resid_post");
        using var pre = atStorePoint.LastStates();
        for (int i = 0; i < problems.Count; i++)
        {
            Assert.True(atStorePoint.States[i, set.Samples[i].PromptIds.Length - 1].allclose(set.Pre[i], rtol: 1e-4, atol: 1e-5));
            Assert.True(pre[i].allclose(set.Pre[i], rtol: 1e-4, atol: 1e-5));
        }

        var dir = Path.Combine(Path.GetTempPath(), "latentlab-kvp-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var q = KvPrefixTraining.Train(model, fmt, train, input, slots, new ArmTraining(20, 8, 3e-3, 1), 0, Path.Combine(dir, "ce"), hidden: 16);
            Assert.True(q.ReadsPrompt);
            Assert.True(q.named_parameters().Single(p => p.name == "output.weight").parameter.abs().max().item<float>() > 0);
            // Padding is invisible: two more masked positions of noise change nothing.
            using var padded = new KvInput(cat(new[] { input.States, randn(problems.Count, 2, 32) * 10 }, 1),
                cat(new[] { input.Mask!, zeros(problems.Count, 2, dtype: ScalarType.Int64) }, 1));
            var a = q.Predict(input);
            var b = q.Predict(padded);
            for (int l = 0; l < a.Count; l++) Assert.True(a[l].Keys.allclose(b[l].Keys, rtol: 1e-4, atol: 1e-5));
            foreach (var (x, y) in a.Concat(b)) { x.Dispose(); y.Dispose(); }
            Assert.Throws<InvalidOperationException>(() => q.Predict(set.Pre));
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
        foreach (var (k, v) in slots) { k.Dispose(); v.Dispose(); }
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void EvaluationOnABottleneckTeacherRunsThePredictedKvPrefixArmBetweenItsControls()
    {
        var (model, fmt) = Teacher(13);
        using var _ = model;
        const string point = "blocks.0.resid_post";
        var trainP = LatentTestKit.Problems(24, digits: 2, seed: 5);
        var testP = LatentTestKit.Problems(12, digits: 2, seed: 6);
        var extraction = LatentTestKit.Reference(point: point, k: Slots) with { MaxNewTokens = 8 };
        using var tr = LatentExtraction.Samples(model, fmt.Tokenizer, fmt, trainP, extraction);
        using var te = LatentExtraction.Samples(model, fmt.Tokenizer, fmt, testP, extraction);
        // Plumbing, not science: the random teacher's samples are given the true answers to learn from.
        var train = tr.Samples.Select(x => x with { TeacherAnswer = x.Problem.Answer, Verified = true }).ToList();
        var test = te.Samples.Select(x => x with { TeacherAnswer = x.Problem.Answer, Verified = true }).ToList();
        var oracle = new OraclePredictor(tr.Pre, tr.Post);
        oracle.Register(te.Pre, te.Post);
        var o = new ShortcutEvalOptions { Point = point, TrainSteps = 3, TrainBatch = 8, Phase3Problems = 6, OodExtra = 0, Seed = 1, Plots = false, PrimaryArm = "kv-prefix" };
        var dir = Path.Combine(Path.GetTempPath(), "latentlab-kv-eval-" + Guid.NewGuid().ToString("N"));
        try
        {
            var r = ShortcutEvaluation.Run(model, fmt, oracle, train, tr.Pre, tr.Post, test, te.Pre, te.Post, o, dir);
            foreach (var arm in new[] { "kv-prefix", "kv-prefix-prompt", "kv-prefix-student", "kv-prefix oracle", "kv-prefix mean", "soft-tokens oracle", "soft-tokens mean" })
                Assert.Equal(12, r.Arm(arm).Accuracy!.Value.Trials);
            Assert.Equal("kv-prefix oracle", r.Study.Ceiling!.Name);
            Assert.Equal("kv-prefix mean", r.Study.Floor!.Name);
            Assert.Equal("kv-prefix", r.NoGo.ShortcutArm);
            Assert.Equal("kv-prefix oracle", r.NoGo.CeilingArm);
            Assert.Equal(r.Arm("kv-prefix oracle").Accuracy, r.NoGo.Ceiling);
            // The predictor's input is counted, and the arm runs no thought: fewer token-steps than thinking.
            Assert.True(r.Arm("kv-prefix").Flops > r.Arm("kv-prefix oracle").Flops);
            Assert.True(r.Arm("kv-prefix").TokenSteps < r.Arm("thinking").TokenSteps);
            Assert.Equal(5, r.Sweeps.Single(x => x.Arm == "kv-prefix").Points.Count);
            Assert.Contains(r.Interventions, i => i.Arm == "kv-prefix");
            Assert.Contains(r.Interventions, i => i.Arm == "kv-prefix-prompt");
            Assert.Equal(5, r.Sweeps.Single(x => x.Arm == "kv-prefix-prompt").Points.Count);
            Assert.Contains(r.Interventions, i => i.Arm == "kv-prefix-student");
            Assert.Equal(5, r.Sweeps.Single(x => x.Arm == "kv-prefix-student").Points.Count);
            // The student's own forward over prompt ++ slots is counted on top of the teacher's.
            Assert.True(r.Arm("kv-prefix-student").Flops > r.Arm("kv-prefix oracle").Flops);
            Assert.Contains(r.Edits, e => e.Arm == "kv-prefix");
            Assert.InRange(r.Separability.HeldOutAccuracy, 0, 1);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    [Fact]
    public void ConfigurationSearchTriesEachDistinctPointAndKindAndChoosesTheBestOnValidation()
    {
        var (model, fmt, _, set) = Samples(17, 30, 8);
        using var _ = model;
        using var _set = set;
        var dir = Path.Combine(Path.GetTempPath(), "latentlab-search-" + Guid.NewGuid().ToString("N"));
        try
        {
            // blocks.1 is blocks.-1 of this 2-layer model, and blocks.-3 does not exist: two points, two kinds.
            var o = new ConfigSearchOptions { Points = ["blocks.-1.resid_post", "blocks.1.resid_post", "blocks.-2.resid_post", "blocks.-3.resid_post"], Steps = 15, Ks = [1, 3] };
            var r = ConfigSearch.Run(model, fmt, set.Samples, 1, new PredictorConfig { Hidden = 16, Layers = 1, Heads = 2, BatchSize = 8 }, o, dir);
            Assert.Equal(4, r.Rows.Count);
            Assert.Equal(new[] { "blocks.-1.resid_post", "blocks.-2.resid_post" }, r.Rows.Select(x => x.Candidate.Point).Distinct());
            // A bottleneck teacher's K is its slot count, whatever the search is asked to try.
            Assert.All(r.Rows, x => Assert.Equal(Slots, x.Candidate.K));
            Assert.All(r.Rows, x => { Assert.Equal(6, x.Validation); Assert.InRange(x.Top5, 0, 1); Assert.InRange(x.Cosine, -1, 1); });
            var best = r.Rows.OrderByDescending(x => x.Top5).ThenByDescending(x => x.Cosine).First();
            Assert.Equal(best.Candidate, r.Chosen);
            Assert.Contains("chosen", r.ToMarkdown());
            Assert.Throws<ArgumentException>(() => ConfigSearch.Run(model, fmt, set.Samples, 1, new PredictorConfig(), o with { Points = ["blocks.7.resid_post"] }, dir));
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    [Fact]
    public void CriteriaBelowTheirCeilingAreUninformativeAndAFlatZeroSweepIsNoPass()
    {
        static Proportion P(int s, int n) => Proportion.Wilson(s, n);
        var diag = new ShortcutDiagnosticsResult(10, 4, 1, 0, 0, 0, 0, P(1, 10), P(2, 10), 0.1, 0.5, [], [],
            new CollapseStats([1.0], [1.0], 1, 1, 0), new GateResult(false, [], "test"));
        NoGoNumbers Numbers(Proportion ceiling, double bestScale) =>
            new("soft-tokens", P(0, 100), P(0, 100), P(0, 100), P(100, 100), Difference.Of(P(0, 100), P(0, 100)), Difference.Of(P(0, 100), P(0, 100)),
                P(0, 50), P(10, 50), P(0, 100), 1.0, P(0, 50), 0, 1, 2) { Ceiling = ceiling, CeilingArm = "kv-prefix oracle", BestScaleAccuracy = bestScale };
        var report = new ShortcutEvalReport("t", "p", 1, 1, new Study("s", []), [], [], new LexicalResult(P(0, 100), P(0, 100)),
            new SeparabilityResult(1, 2, 2), Numbers(P(0, 100), 0), 0, []);
        var low = ShortcutStudy.NoGoTable(new NoGoThresholds(), diag, report, 0, 10);
        Assert.Equal("UNINFORMATIVE", low.Single(r => r.Criterion.StartsWith("shortcut beats")).Status);
        Assert.Equal("UNINFORMATIVE", low.Single(r => r.Criterion.StartsWith("latent interventions")).Status);
        Assert.Equal("UNINFORMATIVE", low.Single(r => r.Criterion.StartsWith("no fragile")).Status);
        Assert.Equal("FAIL", low.Single(r => r.Criterion.StartsWith("train/inference")).Status);
        // With a ceiling of 100% the same numbers are real failures, and a sweep that scores somewhere can pass.
        var high = ShortcutStudy.NoGoTable(new NoGoThresholds(), diag, report with { NoGo = Numbers(P(100, 100), 0.5) }, 0, 10);
        Assert.Equal("FAIL", high.Single(r => r.Criterion.StartsWith("shortcut beats")).Status);
        Assert.Equal("FAIL", high.Single(r => r.Criterion.StartsWith("latent interventions")).Status);
        Assert.Equal("PASS", high.Single(r => r.Criterion.StartsWith("no fragile")).Status);
        Assert.Contains("ceiling (kv-prefix oracle) 100.0", high[0].Evidence);
        // A sweep whose best point (1 of 100) stays inside its floor's interval (0 of 100: up to 3.7%) says nothing either.
        var atFloor = ShortcutStudy.NoGoTable(new NoGoThresholds(), diag, report with { NoGo = Numbers(P(100, 100), 0.01) with { Floor = P(0, 100) } }, 0, 10);
        Assert.Equal("UNINFORMATIVE", atFloor.Single(r => r.Criterion.StartsWith("no fragile")).Status);
    }
}
