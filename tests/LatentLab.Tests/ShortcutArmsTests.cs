using LatentLab.Evaluation;
using LatentLab.Latents;
using LatentLab.Methods.Shortcut;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using static TorchSharp.torch;

namespace LatentLab.Tests;

public sealed class ShortcutArmsTests
{
    public ShortcutArmsTests() => TorchRuntime.Initialize();

    static (DecoderLM Model, TeacherFormat Fmt) RandomTeacher(long seed = 1)
    {
        var fmt = TeacherFormat.Create(TaskRegistry.Get("addition"));
        TorchRuntime.Seed(seed);
        var model = new DecoderLM(TeacherModel.DefaultConfig(fmt.Tokenizer, hidden: 32, layers: 2, heads: 2));
        model.eval();
        return (model, fmt);
    }

    [Fact]
    public void NewcombeDifferenceMatchesThePublishedExample()
    {
        // Newcombe (1998), Stat Med 17:873, example (a): 56/70 − 48/80, method 10 (hybrid score): 0.0524 to 0.3339.
        var d = Difference.Of(Proportion.Wilson(56, 70), Proportion.Wilson(48, 80));
        Assert.Equal(0.2, d.Value, 9);
        Assert.Equal(0.0524, d.Low, 3);
        Assert.Equal(0.3339, d.High, 3);
    }

    [Fact]
    public void FragilityIsBestMinusMeanOfNeighbours()
    {
        SweepPoint P(double s, int k) => new(s, Proportion.Wilson(k, 100));
        var spike = new ScaleSweep("x", "alpha", new[] { P(0.5, 10), P(1, 90), P(1.5, 30) });
        Assert.Equal(1, spike.Best.Scale);
        Assert.Equal(0.9 - 0.2, spike.Fragility, 9);
        var edge = new ScaleSweep("x", "alpha", new[] { P(0.5, 50), P(1, 40) });
        Assert.Equal(0.1, edge.Fragility, 9);
    }

    [Fact]
    public void OracleReturnsTheRegisteredPostStateAndMeanIgnoresItsInput()
    {
        using var scope = NewDisposeScope();
        var pre = randn(6, 8);
        var post = randn(6, 2, 8);
        var oracle = new OraclePredictor(pre.narrow(0, 0, 3), post.narrow(0, 0, 3));
        oracle.Register(pre.narrow(0, 3, 3), post.narrow(0, 3, 3));
        Assert.Equal(2, oracle.K);
        var order = tensor(new long[] { 4, 0, 5 });
        Assert.True(oracle.Predict(pre.index_select(0, order)).allclose(post.index_select(0, order)));

        var mean = new MeanPredictor(post);
        var m = mean.Predict(pre);
        Assert.Equal(new long[] { 6, 2, 8 }, m.shape);
        Assert.True(m[0].allclose(post.mean(new long[] { 0 })));
        Assert.True(m[0].allclose(m[5]));
        Assert.Throws<ArgumentException>(() => oracle.Register(pre, randn(5, 2, 8)));
    }

    [Fact]
    public void SeparabilityIsChanceForTheTruthAndHighForAConstant()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var post = randn(80, 1, 16);
        Assert.Equal(0.5, CausalTests.Separability(post, post.clone()).HeldOutAccuracy, 6);
        var constant = post.mean(new long[] { 0 }, keepdim: true).expand(80, 1, 16).clone();
        Assert.True(CausalTests.Separability(post, constant).HeldOutAccuracy > 0.9);
    }

    [Fact]
    public void LexicalBaselineLearnsASurfaceRuleButNotAddition()
    {
        var family = TaskRegistry.Get("addition");
        var train = TaskSplits.Generate(family, Split.Train, 400, 2, 1);
        var test = TaskSplits.Generate(family, Split.Test, 100, 2, 2);
        // A surface rule (answer = the prompt's first character) is linear in the features: the baseline must find it.
        var copy = CausalTests.Lexical(train, train.Select(p => p.Prompt[..1]).ToList(), test, (p, a) => a == p.Prompt[..1], steps: 200);
        Assert.True(copy.LinearPerDigit.Value > 0.9, $"surface rule: {copy.LinearPerDigit}");
        var sum = CausalTests.Lexical(train, train.Select(p => p.Answer).ToList(), test, family.Verify, steps: 200);
        Assert.True(sum.Best.Value < 0.5, $"addition: {sum.Best}");
    }

    [Fact]
    public void CaptureFindsPositionsAndDeltaWithItsOwnStateChangesNothing()
    {
        var (model, fmt) = RandomTeacher();
        using var _m = model;
        var problems = TaskSplits.Generate(fmt.Family, Split.Test, 6, 2, 5);
        // The arms read states through the latent store's one path (a random teacher never closes its thinking: reference traces).
        using var cap = LatentExtraction.Samples(model, fmt.Tokenizer, fmt, problems, LatentTestKit.Reference(k: 2, point: "blocks.0.resid_post"));
        Assert.Equal(new long[] { 6, 32 }, cap.Pre.shape);
        Assert.Equal(new long[] { 6, 2, 32 }, cap.Post.shape);
        foreach (var s in cap.Samples)
        {
            Assert.Equal(s.PromptIds.Length - 1, s.PrePosition);
            Assert.True(s.PostPosition > s.PrePosition && s.PostPosition < s.TraceIds.Length);
        }

        // The marker's own unmodified state as ĥ: h + α(h − h) = h for every α, so answers equal the plain shortcut prompt's.
        var plain = LoraStudent.Answer(model, fmt, problems);
        var prompts = problems.Select(p => ArmsCommon.ShortcutPrompt(fmt, p)).ToList();
        using var ids = tensor(prompts.SelectMany(p => p.Select(x => (long)x)).ToArray()).view(6, -1);
        using var probe = model.Forward(ids, hooks: new Hooks.HookSet(new[] { Hooks.HookSpec.Capture("blocks.0.resid_post", Hooks.Positions.At(prompts[0].Length - 1)) }));
        using var hOwn = probe.Capture("blocks.0.resid_post").to(ScalarType.Float32); // [6, 1, D]
        var same = ResidualDeltaInjection.Answer(model, fmt, "blocks.0.resid_post", problems, hOwn, new[] { 0.5, 1.0, 2.0 });
        foreach (var a in same) Assert.Equal(plain.Answers, a.Answers);
        Assert.All(same[0].TokenSteps.Zip(plain.TokenSteps), t => Assert.Equal(t.Second, t.First));

        // A large foreign state must change at least one answer (the hook really acts).
        using var big = hOwn * 0 + randn(6, 1, 32) * 50;
        var moved = ResidualDeltaInjection.Answer(model, fmt, "blocks.0.resid_post", problems, big, new[] { 1.0 })[0];
        Assert.NotEqual(plain.Answers, moved.Answers);
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void EndToEndEvaluationWritesEveryArmAndNoGoNumber()
    {
        var (model, fmt) = RandomTeacher(7);
        using var _m = model;
        const string point = "blocks.0.resid_post";
        var trainP = TaskSplits.Generate(fmt.Family, Split.Train, 24, 2, 1);
        var testP = TaskSplits.Generate(fmt.Family, Split.Test, 12, 2, 2);
        // The random teacher cannot add, so its traces are captured for the states and the samples' answers set to the
        // truth: this exercises the plumbing, not the science.
        using var tr = LatentExtraction.Samples(model, fmt.Tokenizer, fmt, trainP, LatentTestKit.Reference(point: point));
        using var te = LatentExtraction.Samples(model, fmt.Tokenizer, fmt, testP, LatentTestKit.Reference(point: point));
        var train = tr.Samples.Select(s => s with { TeacherAnswer = s.Problem.Answer, Verified = true }).ToList();
        var test = te.Samples.Select(s => s with { TeacherAnswer = s.Problem.Answer, Verified = true }).ToList();
        var oracle = new OraclePredictor(tr.Pre, tr.Post);
        oracle.Register(te.Pre, te.Post);
        var o = new ShortcutEvalOptions { Point = point, TrainSteps = 3, TrainBatch = 8, Phase3Problems = 6, OodExtra = 1, Seed = 1 };
        var dir = Path.Combine(Path.GetTempPath(), "latentlab-shortcut-eval-" + Guid.NewGuid().ToString("N"));
        try
        {
            var r = ShortcutEvaluation.Run(model, fmt, oracle, train, tr.Pre, tr.Post, test, te.Pre, te.Post, o, dir);
            Assert.Equal(new[] { "thinking", "direct", "distillation", "soft-tokens", "soft-tokens oracle", "soft-tokens mean", "residual-delta",
                "residual-delta oracle", "residual-delta mean", "lora-student", "kv-prefix", "kv-prefix-prompt", "kv-prefix-student" }, r.Arms.Select(a => a.Name));
            // The primary arm's own oracle and mean are the table's ceiling and floor, and the no-go rows' ceiling.
            Assert.Equal(r.NoGo.ShortcutArm + " oracle", r.Study.Ceiling!.Name);
            Assert.Equal(r.NoGo.ShortcutArm + " mean", r.Study.Floor!.Name);
            Assert.Equal(r.Arm(r.NoGo.ShortcutArm + " oracle").Accuracy, r.NoGo.Ceiling);
            Assert.NotNull(r.Arm("kv-prefix").NotRunReason);
            Assert.All(r.Arms.Where(a => a.NotRunReason is null), a => { Assert.Equal(12, a.Accuracy!.Value.Trials); Assert.True(a.Flops > 0 && a.TokenSteps > 0); });
            // Thinking spends more than the shortcut; the shortcut's K soft tokens and marker are counted.
            Assert.True(r.Arm("thinking").TokenSteps > r.Arm("direct").TokenSteps);
            Assert.True(r.Arm("soft-tokens").TokenSteps >= test[0].PromptIds.Length + 2);
            Assert.Equal(2, r.Sweeps.Count);
            Assert.Equal(5, r.Sweeps[0].Points.Count);
            Assert.Equal(6, r.Edits.Count);
            Assert.Equal(2, r.Interventions.Count);
            Assert.Equal(new[] { 2, 3 }, r.Lengths.Select(l => l.Difficulty).Distinct().Order());
            // The oracle injects the true state: train and inference states are the same distribution.
            Assert.Equal(0.5, r.Separability.HeldOutAccuracy, 6);
            Assert.Equal(6, r.NoGo.CounterfactualSuccess.Trials);
            Assert.Contains(r.NoGo.ShortcutArm, new[] { "soft-tokens", "residual-delta" });
            foreach (var f in new[] { "report.md", "shortcut_eval.json", "accuracy_vs_flops.png", "accuracy_vs_scale.png", "accuracy_vs_length.png" })
                Assert.True(new FileInfo(Path.Combine(dir, f)).Length > 0, f);
            Assert.Contains("No-go numbers", File.ReadAllText(Path.Combine(dir, "report.md")));
            Assert.Contains("\"shortcut_minus_distillation\"", File.ReadAllText(Path.Combine(dir, "shortcut_eval.json")));
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }
}
