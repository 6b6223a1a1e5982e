using LatentLab.Evaluation;
using LatentLab.Latents;
using LatentLab.Methods.Shortcut;
using LatentLab.Tasks;
using LatentLab.Tensors;
using static TorchSharp.torch;

namespace LatentLab.Tests;

/// <summary>Synthetic pre → post data: post = f(pre) for a fixed nonlinear f plus noise, with a few huge dimensions like real hidden states.</summary>
static class SyntheticLatents
{
    public const int D = 16;

    public static (Tensor Pre, Tensor Post) Make(int n, long seed, int k = 1, double noise = 0.05)
    {
        TorchRuntime.Initialize();
        using var scope = NewDisposeScope();
        using var fg = new Generator(1234); // f is the same for every split
        var w1 = randn([D, 32], generator: fg) / Math.Sqrt(D);
        var w2 = randn([32, k * D], generator: fg) / Math.Sqrt(32);
        using var g = new Generator((ulong)seed);
        var pre = randn([n, D], generator: g);
        var post = tanh(pre.matmul(w1)).matmul(w2).reshape(n, k, D);
        post = post + noise * randn([n, k, D], generator: g);
        // Outlier dimensions: large offset and scale in a couple of coordinates.
        var scale = ones(D);
        scale[0] = 80; scale[3] = 40;
        var offset = zeros(D);
        offset[0] = 300;
        return ((pre * scale + offset).MoveToOuterDisposeScope(), (post * scale + offset).MoveToOuterDisposeScope());
    }
}

public sealed class ShortcutPredictorTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-predictor").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    public ShortcutPredictorTests() => TorchRuntime.Initialize();

    static PredictorConfig Small(PredictorKind kind = PredictorKind.Mlp, int k = 1) => new()
    {
        Kind = kind, Hidden = 64, Layers = 1, Heads = 4, K = k, Steps = 300, BatchSize = 64, LearningRate = 3e-3,
        WarmupSteps = 20, VarWeight = 0.0, CovWeight = 0.0, EvalEvery = 100, CheckpointEvery = 0, Seed = 1,
    };

    [Fact]
    public void MlpLearnsANonlinearMapAndRetrievesHeldOutPostStates()
    {
        var (preTr, postTr) = SyntheticLatents.Make(1024, 1);
        var (preTe, postTe) = SyntheticLatents.Make(128, 2);
        var run = PredictorTraining.Train(preTr, postTr, preTe, postTe, Small(), Path.Combine(_dir, "mlp"), TextWriter.Null);
        using var p = run.Predictor;
        using var pred = p.Predict(preTe);
        Assert.Equal(new long[] { 128, 1, SyntheticLatents.D }, pred.shape);
        // Standardised space (raw cosine is inflated by the outlier offset, so it is not the test).
        using var zPred = p.PredictStandardized(preTe);
        using var zPost = p.StandardizePost(postTe);
        double cos = LatentMetrics.MeanCosine(zPred, zPost);
        Assert.True(cos > 0.9, $"held-out cosine {cos}");
        var ranks = LatentMetrics.RetrievalRanks(zPred, zPost);
        Assert.True(LatentMetrics.TopK(ranks, 1) > 0.8, $"top-1 {LatentMetrics.TopK(ranks, 1)}");
        // Training logged validation cosine and retrieval to metrics.jsonl.
        var lines = File.ReadAllLines(Path.Combine(run.RunDir, "metrics.jsonl")).Where(l => l.Contains("eval_top5")).ToList();
        Assert.Equal(3, lines.Count);
        Assert.True(File.Exists(Path.Combine(run.PredictorDir, LatentPredictor.WeightsFile)));
    }

    [Fact]
    public void TransformerOverKSlotsLearnsToo()
    {
        var (preTr, postTr) = SyntheticLatents.Make(512, 3, k: 2);
        var (preTe, postTe) = SyntheticLatents.Make(128, 4, k: 2);
        var run = PredictorTraining.Train(preTr, postTr, preTe, postTe, Small(PredictorKind.Transformer, k: 2) with { Steps = 150, Hidden = 32 },
            Path.Combine(_dir, "tf"), TextWriter.Null);
        using var p = run.Predictor;
        using var zPred = p.PredictStandardized(preTe);
        using var zPost = p.StandardizePost(postTe);
        Assert.Equal(new long[] { 128, 2, SyntheticLatents.D }, zPred.shape);
        double cos = LatentMetrics.MeanCosine(zPred, zPost);
        Assert.True(cos > 0.85, $"held-out cosine {cos}");
    }

    [Fact]
    public void ConstantPredictorRetrievesAtChance()
    {
        var (_, post) = SyntheticLatents.Make(100, 5);
        using var constant = post[0].unsqueeze(0).expand(100, -1, -1).contiguous();
        var ranks = LatentMetrics.RetrievalRanks(constant, post);
        // One query order for all: each true state is top-1 for exactly one query.
        Assert.Equal(0.01, LatentMetrics.TopK(ranks, 1), 9);
        Assert.Equal(0.05, LatentMetrics.TopK(ranks, 5), 9);
        // An all-zero prediction ties everything: ranks sit in the middle, never at the top.
        using var zero = zeros(100, 1, SyntheticLatents.D);
        Assert.Equal(0.0, LatentMetrics.TopK(LatentMetrics.RetrievalRanks(zero, post), 5));
        // Perfect prediction: all top-1.
        Assert.Equal(1.0, LatentMetrics.TopK(LatentMetrics.RetrievalRanks(post, post), 1));
    }

    [Fact]
    public void VicRegVarianceIsZeroAboveUnitStdAndPositiveOnACollapsedBatch()
    {
        // Columns with std 2 and std 1.5: every std ≥ 1, so the hinge is 0.
        using var wide = tensor(new float[] { -2, 3, 2, -3, -2, 0, 2, 0 }).reshape(4, 2);
        Assert.Equal(0.0, PredictorLosses.Variance(wide).item<float>(), 6);
        // Collapsed: every row equal → std = sqrt(0 + 1e-4) = 0.01 → hinge 1 − 0.01 = 0.99 per feature.
        using var collapsed = ones(8, 3) * 5;
        Assert.Equal(0.99, PredictorLosses.Variance(collapsed).item<float>(), 5);
        // Half-collapsed: column 0 values ±0.5 (var = 1/3 with n−1 = 3) → 1 − sqrt(1/3 + 1e-4); column 1 wide → 0.
        using var half = tensor(new float[] { 0.5f, -3, -0.5f, 3, 0.5f, -3, -0.5f, 3 }).reshape(4, 2);
        double expect = (1 - Math.Sqrt(1.0 / 3 + 1e-4)) / 2;
        Assert.Equal(expect, PredictorLosses.Variance(half).item<float>(), 5);
        // Covariance: two identical columns with var 1 → C01 = C10 = 1 → (1 + 1) / 2 = 1; independent columns → 0.
        using var twin = tensor(new float[] { 1, 1, -1, -1, 1, 1, -1, -1 }).reshape(4, 2) * (float)Math.Sqrt(0.75);
        Assert.Equal(1.0, PredictorLosses.Covariance(twin).item<float>(), 5);
        using var indep = tensor(new float[] { 1, 1, 1, -1, -1, 1, -1, -1 }).reshape(4, 2);
        Assert.Equal(0.0, PredictorLosses.Covariance(indep).item<float>(), 6);
    }

    [Fact]
    public void EffectiveRankOfIdentityIsFullAndOfRankOneIsOne()
    {
        using var id = eye(8);
        Assert.Equal(8.0, LatentMetrics.EffectiveRank(id, center: false), 6);
        using var r1 = outer(arange(1, 11, dtype: ScalarType.Float32), arange(1, 7, dtype: ScalarType.Float32));
        Assert.Equal(1.0, LatentMetrics.EffectiveRank(r1, center: false), 4);
        // Centring: a constant matrix has no spread at all.
        using var constant = ones(5, 4);
        Assert.Equal(0.0, LatentMetrics.EffectiveRank(constant));
        // Two equal singular values → exactly 2.
        using var two = diag(tensor(new float[] { 3, 3, 0, 0 }));
        Assert.Equal(2.0, LatentMetrics.EffectiveRank(two, center: false), 5);
    }

    [Fact]
    public void ProbesRecoverALinearlyEncodedIntegerAndStayAtBaselineOnNoise()
    {
        using var g = new Generator(7);
        int nTr = 400, nTe = 200, d = 12;
        var labels = randint(0, 5, [nTr + nTe], generator: g).to(ScalarType.Int32).data<int>().ToArray();
        using var noise = randn([nTr + nTe, d], generator: g);
        // Each value of the integer writes its own direction (as an LM's residual stream encodes a digit), under noise.
        using var codes = randn([5, d], generator: g);
        using var encoded = noise * 0.5 + codes.index_select(0, tensor(labels.Select(v => (long)v).ToArray()));
        var yTr = labels[..nTr];
        var yTe = labels[nTr..];
        foreach (var method in new[] { ProbeMethod.Ridge, ProbeMethod.Logistic })
        {
            var o = new ProbeOptions { Method = method };
            var good = Probes.Fit("v", "encoded", encoded.narrow(0, 0, nTr), yTr, encoded.narrow(0, nTr, nTe), yTe, o);
            Assert.True(good.Accuracy > 0.9, $"{method}: encoded accuracy {good.Accuracy}");
            Assert.Equal(5, good.Classes);
            var bad = Probes.Fit("v", "noise", noise.narrow(0, 0, nTr), yTr, noise.narrow(0, nTr, nTe), yTe, o);
            Assert.True(Math.Abs(bad.Accuracy - bad.Majority) < 0.1, $"{method}: noise accuracy {bad.Accuracy} vs majority {bad.Majority}");
            Assert.InRange(bad.Majority, 0.15, 0.3);
        }
    }

    [Fact]
    public void ProbeTargetsComeFromIntermediatesPresentEverywhere()
    {
        TraceSample S(int i, int carry, int digit, bool extra)
        {
            var steps = new List<IReadOnlyDictionary<string, int>> { new Dictionary<string, int> { ["carry"] = carry, ["digit"] = digit, ["pos"] = 0 } };
            if (extra) steps.Add(new Dictionary<string, int> { ["carry"] = 1 });
            var p = new TaskProblem("addition", i, 1, "p", ["s"], "a", steps);
            return new TraceSample(i, p, [1], [1, 2], 0, 1, 2, "a", true);
        }
        var train = Enumerable.Range(0, 6).Select(i => S(i, i % 2, i % 3, i < 3)).ToList();
        var test = Enumerable.Range(0, 3).Select(i => S(i, i % 2, i % 3, true)).ToList();
        var t = Probes.FromIntermediates(train, test);
        // s0.pos is constant (dropped); s1.carry is missing from half the train set (dropped).
        Assert.Equal(["s0.carry", "s0.digit"], t.Select(x => x.Name).ToArray());
        Assert.Equal([0, 1, 2, 0, 1, 2], t[1].Train);
    }

    [Fact]
    public void GateGivesEachCriterionAndAReason()
    {
        var gate = new PromotionGate();
        var pass = gate.Evaluate(0.62, 0.05, 0.2, 0.4);
        Assert.True(pass.Pass, pass.Reason);
        Assert.All(pass.Criteria, c => Assert.Equal(GateStatus.Pass, c.Status));
        Assert.Equal(0.62 / 0.05, pass.Criteria[1].Value, 9);

        var lowRetrieval = gate.Evaluate(0.4, 0.05, 0.2, 0.2);
        Assert.False(lowRetrieval.Pass);
        Assert.Equal(GateStatus.Fail, lowRetrieval.Criteria[0].Status);
        Assert.Contains("top-5 retrieval 0.4", lowRetrieval.Reason);

        // Above 0.5 but under 3× chance (a small pool: chance 0.25).
        var nearChance = gate.Evaluate(0.6, 0.25, 0.1, 0.1);
        Assert.False(nearChance.Pass);
        Assert.Equal(GateStatus.Pass, nearChance.Criteria[0].Status);
        Assert.Equal(GateStatus.Fail, nearChance.Criteria[1].Status);

        var unstable = gate.Evaluate(0.9, 0.05, 0.7, null);
        Assert.False(unstable.Pass);
        Assert.Equal(GateStatus.Fail, unstable.Criteria[2].Status);
        Assert.Equal(GateStatus.NotMeasured, unstable.Criteria[3].Status);
        Assert.Contains("paraphrase", unstable.Reason);

        // Rename unsupported by the family: not a failure, as long as paraphrase was measured.
        Assert.True(gate.Evaluate(0.9, 0.05, 0.3, null).Pass);
        var nothing = gate.Evaluate(0.9, 0.05, null, null);
        Assert.False(nothing.Pass);
        Assert.Contains("not measured", nothing.Reason);
        Assert.True((gate with { MaxParaphraseRatio = 0.8 }).Evaluate(0.9, 0.05, 0.7, null).Pass);
    }

    [Fact]
    public void SaveLoadRoundTripGivesIdenticalPredictions()
    {
        var (pre, post) = SyntheticLatents.Make(64, 8, k: 2);
        foreach (var kind in new[] { PredictorKind.Mlp, PredictorKind.Transformer })
        {
            TorchRuntime.Seed(3);
            using var p = new LatentPredictor(Small(kind, k: 2), SyntheticLatents.D);
            p.FitStandardizer(pre, post);
            var dir = Path.Combine(_dir, "save-" + kind);
            p.Save(dir);
            using var q = LatentPredictor.Load(dir);
            Assert.Equal(p.Config, q.Config);
            using var a = p.Predict(pre);
            using var b = q.Predict(pre);
            Assert.True(a.eq(b).all().item<bool>(), $"{kind}: predictions differ after load");
            // The standardiser travelled too: predictions live in the model's space (offset dimension 0 near 300).
            Assert.True(Math.Abs(a[.., .., 0].mean().item<float>() - 300) < 100);
        }
        Assert.Throws<FileNotFoundException>(() => LatentPredictor.Load(Path.Combine(_dir, "missing")));
    }

    [Fact]
    public void EmaTargetProjectorIsStopGradientAndFollowsTheOnlineProjector()
    {
        var (pre, post) = SyntheticLatents.Make(32, 9);
        var cfg = Small() with { ProjectorDim = 8, EmaProjector = true, EmaMomentum = 0.5, VarWeight = 0.1, CovWeight = 0.01 };
        using var p = new LatentPredictor(cfg, SyntheticLatents.D);
        p.FitStandardizer(pre, post);
        var obj = new PredictorObjective(p);
        var target = obj.TargetProjector!;
        Assert.NotSame(obj.Projector, target);
        Assert.All(target.parameters(), t => Assert.False(t.requires_grad));
        using var before = target.weight!.detach().clone();
        Assert.True(before.eq(obj.Projector!.weight!).all().item<bool>(), "target starts as a copy of the online projector");

        var (loss, parts) = obj.Loss(p.StandardizePre(pre), p.StandardizePost(post));
        Assert.Equal(["latent", "proj", "var", "cov"], parts.Keys.ToArray());
        loss.backward();
        Assert.All(target.parameters(), t => Assert.Null(t.grad));
        Assert.NotNull(obj.Projector.weight!.grad);
        Assert.NotNull(p.parameters().First().grad);

        // Move the online projector; the EMA update pulls the target half-way (momentum 0.5 at step 0).
        using (no_grad()) obj.Projector.weight.add_(1.0);
        obj.AfterStep(0);
        using var expect = before + 0.5;
        Assert.True(target.weight.allclose(expect, rtol: 0, atol: 1e-6), "EMA update");
        obj.DisposeProjectors();
    }

    [Fact]
    public void DiagnosticsSeparateAGoodPredictorFromAnUntrainedOne()
    {
        var (preTr, postTr) = SyntheticLatents.Make(512, 11);
        var (preTe, postTe) = SyntheticLatents.Make(100, 12);
        var cfg = Small() with { Steps = 150, VarWeight = 0.05, CovWeight = 0.005, EvalEvery = 50 };
        var run = PredictorTraining.Train(preTr, postTr, preTe, postTe, cfg, Path.Combine(_dir, "diag"), TextWriter.Null);
        using var good = run.Predictor;

        // Twins: a small perturbation of h_pre (a "paraphrase") and a larger one (a "rename").
        using var g = new Generator(13);
        using var para = preTe + 0.02 * randn(preTe.shape, generator: g) * good.StandardizePre(preTe).std();
        using var ren = preTe + 2.0 * randn(preTe.shape, generator: g) * tensor(new float[] { 80, 1, 1, 40, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 });
        var twins = new[] { new TwinSet(EditKind.Paraphrase, preTe, para), new TwinSet(EditKind.Rename, preTe, ren) };

        // Intermediates: the sign of the first post coordinate (a function of pre, so predictable).
        var signTr = (postTr[.., 0, 1] > 0).to(ScalarType.Int32).data<int>().ToArray();
        var signTe = (postTe[.., 0, 1] > 0).to(ScalarType.Int32).data<int>().ToArray();
        var noiseRng = new Random(3);
        TraceSample S(int i, int sign) => new(i, new TaskProblem("syn", i, 1, "p", ["s"], "a",
            [new Dictionary<string, int> { ["sign"] = sign, ["noise"] = noiseRng.Next(2) }]), [1], [1, 2], 0, 1, 2, "a", true);
        var trainS = signTr.Select((sign, i) => S(i, sign)).ToList();
        var testS = signTe.Select((sign, i) => S(i, sign)).ToList();

        var r = ShortcutDiagnostics.Compute(good, preTr, postTr, trainS, preTe, postTe, testS, twins);
        Assert.True(r.MeanCosine > 0.85, $"cosine {r.MeanCosine}");
        Assert.True(r.Top5.Value > 0.9, $"top-5 {r.Top5}");
        Assert.Equal(0.05, r.ChanceTop5, 9);
        var paraScore = r.StabilityOf(EditKind.Paraphrase)!;
        Assert.True(paraScore.Ratio < 0.2, $"paraphrase ratio {paraScore.Ratio}");
        Assert.True(r.StabilityOf(EditKind.Rename)!.Ratio > 0.5, "a large edit is not stable");
        Assert.False(r.Gate.Pass); // the rename criterion fails
        Assert.Equal(GateStatus.Pass, r.Gate.Criteria[0].Status);
        Assert.Equal(GateStatus.Fail, r.Gate.Criteria[3].Status);
        var signPost = r.Probes.Single(p => p.Target == "s0.sign" && p.Source == ShortcutDiagnostics.PostSource);
        var signPred = r.Probes.Single(p => p.Target == "s0.sign" && p.Source == ShortcutDiagnostics.PredSource);
        Assert.True(signPost.Accuracy >= 0.85 && signPred.Accuracy >= 0.85, $"sign probe: post {signPost.Accuracy}, pred {signPred.Accuracy}");
        var noiseProbe = r.Probes.Single(p => p.Target == "s0.noise" && p.Source == ShortcutDiagnostics.PredSource);
        Assert.True(noiseProbe.Accuracy < 0.7, $"noise probe {noiseProbe.Accuracy}");
        Assert.True(r.Collapse.PredEffectiveRank > 3 && r.Collapse.DeadFraction == 0);
        var md = r.ToMarkdown();
        Assert.Contains("Promotion gate: FAIL", md);
        Assert.Contains("s0.sign", md);

        // Untrained predictor: retrieval far below the trained one, and the gate fails on retrieval.
        TorchRuntime.Seed(99);
        using var untrained = new LatentPredictor(cfg, SyntheticLatents.D);
        untrained.FitStandardizer(preTr, postTr);
        var u = ShortcutDiagnostics.Compute(untrained, preTr, postTr, null, preTe, postTe, null, twins[..1]);
        Assert.True(u.Top5.Value < 0.5, $"untrained top-5 {u.Top5}");
        Assert.Equal(GateStatus.Fail, u.Gate.Criteria[0].Status);
        Assert.Empty(u.Probes);

        // Plots from the run's metrics and the collapse monitor.
        var curves = Path.Combine(_dir, "curves.png");
        var hist = Path.Combine(_dir, "std.png");
        DiagnosticsPlots.TrainingCurves(Path.Combine(run.RunDir, "metrics.jsonl"), curves);
        DiagnosticsPlots.StdHistogram(r.Collapse, hist);
        Assert.True(new FileInfo(curves).Length > 1000 && new FileInfo(hist).Length > 1000);
    }

    [Fact]
    public void Phase1WritesItsReportAndARerunResumesToTheSamePredictor()
    {
        var (preTr, postTr) = SyntheticLatents.Make(300, 21);
        var (preTe, postTe) = SyntheticLatents.Make(60, 22);
        using var para = preTe * 1.001f;
        var data = new PredictorData(preTr, postTr, null, preTe, postTe, null, [new TwinSet(EditKind.Paraphrase, preTe, para)]);
        var cfg = Small() with { Steps = 40, EvalEvery = 20, ProjectorDim = 8, EmaProjector = true, VarWeight = 0.05 };
        var dir = Path.Combine(_dir, "phase1");
        var first = PredictorPromotion.Run(data, cfg, dir, log: TextWriter.Null);
        foreach (var f in new[] { PredictorPromotion.ReportFile, PredictorPromotion.DiagnosticsFile, PredictorPromotion.CurvesFile, PredictorPromotion.StdFile, "config.json" })
            Assert.True(File.Exists(Path.Combine(first.RunDir, f)), f);
        var md = File.ReadAllText(first.ReportPath);
        Assert.Contains("Promotion gate:", md);
        Assert.Contains("trained on 270 problems, 30 held out", md);
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(first.RunDir, PredictorPromotion.DiagnosticsFile)));
        Assert.Equal(first.Diagnostics.MeanCosine, json.RootElement.GetProperty("mean_cosine").GetDouble(), 12);

        // Same folder, same config: the trainer finds the finished run and restores it instead of training again.
        var log = new StringWriter();
        var second = PredictorPromotion.Run(data, cfg, dir, log: log);
        Assert.Contains("already trained", log.ToString());
        using var a = LatentPredictor.Load(first.PredictorDir).Predict(preTe);
        using var b = LatentPredictor.Load(second.PredictorDir).Predict(preTe);
        Assert.True(a.eq(b).all().item<bool>());
        Assert.Equal(first.Diagnostics.Top5, second.Diagnostics.Top5);
        // A different config in the same folder is refused rather than mixed.
        Assert.Throws<InvalidOperationException>(() => PredictorPromotion.Run(data, cfg with { Hidden = 32 }, dir, log: TextWriter.Null));
    }

    [Fact]
    public void BadShapesAndConfigsAreClearErrors()
    {
        var (pre, post) = SyntheticLatents.Make(16, 1, k: 2);
        var e = Assert.Throws<ArgumentException>(() => PredictorTraining.Train(pre, post, pre, post, Small(k: 1), Path.Combine(_dir, "bad"), TextWriter.Null));
        Assert.Contains("K from the config", e.Message);
        Assert.Throws<ArgumentException>(() => new LatentPredictor(Small() with { EmaProjector = true }, 4));
        Assert.Throws<ArgumentException>(() => new LatentPredictor(Small(PredictorKind.Transformer) with { Hidden = 30 }, 4));
    }
}
