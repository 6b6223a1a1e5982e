using System.Text;
using LatentLab.Training;
using LatentLab.Methods.JepaReasoner;

namespace LatentLab.Tests;

/// <summary>
/// Each phase is a Trainer run: interrupted after a checkpoint and started again with the same options, it resumes and
/// ends with exactly the files of an uninterrupted run (SST included, whose EMA target is extra checkpoint state).
/// The Trainer's own test kills a real process; here the interruption is a cancellation right after a checkpoint.
/// </summary>
public sealed class JepaReasonerPhaseTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-reasoner").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    ReasonerOptions Tiny(string name) => new()
    {
        Task = "tree", Difficulty = 1, Hidden = 16, Layers = 1, Heads = 2, TalkerHidden = 16, TalkerLayers = 1, BatchSize = 4,
        PretrainSteps = 6, SstSteps = 6, TalkerSteps = 6, TalkerPool = 8, Seed = 7, Compute = "f32", OutDir = Path.Combine(_dir, name), ProgressBar = false,
    };

    /// <summary>A log that cancels the run once the trainer reports the checkpoint of step 2.</summary>
    sealed class CancelAfterCheckpoint(CancellationTokenSource cts) : TextWriter
    {
        public readonly StringBuilder Seen = new();
        public override Encoding Encoding => Encoding.UTF8;
        public override void WriteLine(string? value)
        {
            Seen.AppendLine(value);
            if (value?.Contains("checkpoint step-000002") == true) cts.Cancel();
        }
    }

    static void Interrupted(Func<ReasonerOptions, TextWriter?, CancellationToken, PhaseResult> phase, ReasonerOptions o)
    {
        using var cts = new CancellationTokenSource();
        var log = new CancelAfterCheckpoint(cts);
        Assert.ThrowsAny<OperationCanceledException>(() => phase(o, log, cts.Token));
        var again = new StringWriter();
        var r = phase(o, again, default);
        Assert.Contains("resumed from", again.ToString());
        Assert.Equal(2, r.Train.ResumedFrom);
    }

    static Dictionary<string, byte[]> Weights(string dir) =>
        Directory.GetFiles(dir, "*.safetensors").ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);

    static void SameWeights(string a, string b)
    {
        var wa = Weights(a);
        var wb = Weights(b);
        Assert.NotEmpty(wa);
        Assert.Equal(wa.Keys.Order(), wb.Keys.Order());
        foreach (var (k, v) in wa) Assert.True(v.AsSpan().SequenceEqual(wb[k]), $"{k} differs between {a} and {b}");
    }

    [Fact]
    public void EveryPhaseResumesToTheWeightsOfAnUninterruptedRun()
    {
        var straight = Tiny("straight");
        var cut = Tiny("cut");
        var quiet = TextWriter.Null;
        ReasonerPhases.RunPretrain(straight, quiet);
        ReasonerPhases.RunSst(straight, quiet);
        ReasonerPhases.RunTalker(straight, quiet);
        ReasonerPhases.RunBaseline(straight, quiet);

        Interrupted(ReasonerPhases.RunPretrain, cut);
        SameWeights(straight.ModelDir(ReasonerPhases.Pretrain), cut.ModelDir(ReasonerPhases.Pretrain));
        Interrupted(ReasonerPhases.RunSst, cut);
        SameWeights(straight.ModelDir(ReasonerPhases.Sst), cut.ModelDir(ReasonerPhases.Sst));
        Interrupted(ReasonerPhases.RunTalker, cut);
        SameWeights(straight.ModelDir(ReasonerPhases.TalkerPhase("mono")), cut.ModelDir(ReasonerPhases.TalkerPhase("mono")));
        Interrupted(ReasonerPhases.RunBaseline, cut);
        SameWeights(straight.ModelDir(ReasonerPhases.Baseline), cut.ModelDir(ReasonerPhases.Baseline));

        // The SST run logged its collapse diagnostics.
        var metrics = File.ReadAllText(Path.Combine(cut.PhaseDir(ReasonerPhases.Sst), "train", "metrics.jsonl"));
        Assert.Contains("eval_effective_rank", metrics);
        Assert.Contains("eval_dim_std", metrics);
        var settings = ReasonerSettings.Load(cut.ModelDir(ReasonerPhases.Sst));
        Assert.True(settings.L2);
        Assert.False(ReasonerSettings.Load(cut.ModelDir(ReasonerPhases.Pretrain)).L2);
    }

    [Fact]
    public void APretrainedFolderIsReusedByRunsThatDifferOnlyDownstream()
    {
        var first = Tiny("first");
        ReasonerPhases.RunPretrain(first, TextWriter.Null);
        // Another SST loss scale and Talker budget over the same pre-training: the copied phase is found finished.
        var sweep = Tiny("k2") with { LossScale = 2, SstSteps = 4, TalkerSteps = 3 };
        DamageKit.CopyTree(first.PhaseDir(ReasonerPhases.Pretrain), sweep.PhaseDir(ReasonerPhases.Pretrain));
        var log = new StringWriter();
        var again = ReasonerPhases.RunPretrain(sweep, log);
        Assert.Contains("already trained", log.ToString());
        Assert.Equal(first.PretrainSteps, again.Train.Steps);
        ReasonerPhases.RunSst(sweep, TextWriter.Null);
        Assert.DoesNotContain("loss_scale", File.ReadAllText(Path.Combine(sweep.PhaseDir(ReasonerPhases.Pretrain), "train", "config.json")));
        Assert.Contains("\"loss_scale\": 2", File.ReadAllText(Path.Combine(sweep.PhaseDir(ReasonerPhases.Sst), "train", "config.json")));
        // An upstream change (the width) is still refused.
        var wider = Tiny("wider") with { Hidden = 24 };
        DamageKit.CopyTree(first.PhaseDir(ReasonerPhases.Pretrain), wider.PhaseDir(ReasonerPhases.Pretrain));
        Assert.Throws<InvalidOperationException>(() => ReasonerPhases.RunPretrain(wider, TextWriter.Null));
        Assert.Equal(["momentum", "loss_scale", "rollout"], ReasonerPhases.NotUpstream(ReasonerPhases.Baseline).Take(3));
    }

    /// <summary>The cfg-noise and cfg-slips experiments end to end on tiny models: every arm graded, the Bayes ceiling beside them under noise.</summary>
    [Fact]
    public void CfgNoiseAndSlipsGradeEveryArmWithTheirCeilings()
    {
        var o = Tiny("cfg") with { Task = "cfg", Difficulty = 6 };
        var r = ReasonerExperiments.CfgNoise(o, evalProblems: 12, rates: [0, 0.3], log: TextWriter.Null);
        var report = File.ReadAllText(r.ReportPath);
        Assert.Contains("| oracle-chain-mono | ceiling |", report);
        Assert.Contains("| other-problem-chain | floor |", report);
        Assert.Contains("bayes-optimal normalised", report);
        Assert.Contains("headroom over the baseline |", report);
        Assert.True(File.Exists(Path.Combine(r.RunDir, "cfg_noise.png")));
        var rows = r.Results["normalised"]!.AsArray();
        Assert.Equal(2, rows.Count);
        Assert.Equal(1.0, (double)rows[0]!["bayes_accuracy"]!);   // noise-free, the posterior's answer is the exact solution
        double noisy = (double)rows[1]!["bayes_accuracy"]!;
        Assert.InRange(noisy, 0.01, 0.99);                       // 30 % noise on 6 tokens: neither lost nor solved

        // cfg-slips over the same run folder: the models are reused, and slip-free it grades exactly what cfg-noise did.
        var log = new StringWriter();
        var s = ReasonerExperiments.CfgSlips(o, evalProblems: 12, rates: [0, 0.5], log: log);
        Assert.Contains("already trained", log.ToString());
        Assert.Equal(Path.Combine(Path.GetFullPath(o.OutDir), "generation-slips"), s.RunDir);
        Assert.True(File.Exists(Path.Combine(s.RunDir, "cfg_slips.png")));
        Assert.Contains("| slip rate |", File.ReadAllText(s.ReportPath));
        var slipRows = s.Results["normalised"]!.AsArray();
        foreach (var arm in new[] { "mono", "dual", "coupled" })
            Assert.Equal((double)rows[0]![arm + "_accuracy"]!, (double)slipRows[0]![arm + "_accuracy"]!);
        Assert.True(File.Exists(r.ReportPath));                  // the cfg-noise report is still there
    }

    [Fact]
    public void SlipAugmentedTrainingChangesBothDecodersAndNothingUpstream()
    {
        var plain = Tiny("plain") with { Task = "cfg", Difficulty = 6 };
        ReasonerPhases.RunPretrain(plain, TextWriter.Null);
        ReasonerPhases.RunSst(plain, TextWriter.Null);
        ReasonerPhases.RunTalker(plain, TextWriter.Null);
        ReasonerPhases.RunBaseline(plain, TextWriter.Null);
        // Only the Talker and baseline phases see the option: the pre-training and SST folders are reused as they are.
        var slipped = plain with { TrainSlips = 0.5, OutDir = Path.Combine(_dir, "slipped") };
        foreach (var phase in new[] { ReasonerPhases.Pretrain, ReasonerPhases.Sst })
            DamageKit.CopyTree(plain.PhaseDir(phase), slipped.PhaseDir(phase));
        var log = new StringWriter();
        ReasonerPhases.RunSst(slipped, log);
        Assert.Contains("already trained", log.ToString());
        ReasonerPhases.RunTalker(slipped, TextWriter.Null);
        ReasonerPhases.RunBaseline(slipped, TextWriter.Null);
        foreach (var phase in new[] { ReasonerPhases.TalkerPhase("mono"), ReasonerPhases.Baseline })
        {
            Assert.Contains("\"train_slips\": 0.5", File.ReadAllText(Path.Combine(slipped.PhaseDir(phase), "train", "config.json")));
            Assert.DoesNotContain("train_slips", File.ReadAllText(Path.Combine(plain.PhaseDir(phase), "train", "config.json")));   // 0 is left out
            var a = Weights(plain.ModelDir(phase));
            var b = Weights(slipped.ModelDir(phase));
            Assert.Contains(a, kv => !kv.Value.AsSpan().SequenceEqual(b[kv.Key]));
        }
        Assert.DoesNotContain("train_slips", File.ReadAllText(Path.Combine(slipped.PhaseDir(ReasonerPhases.Sst), "train", "config.json")));
        Assert.Throws<ArgumentException>(() => ReasonerPhases.RunTalker(plain with { TrainSlips = 1 }, TextWriter.Null));
    }

    [Fact]
    public void SstWithoutAPretrainedModelSaysWhatToRunFirst()
    {
        var e = Assert.Throws<DirectoryNotFoundException>(() => ReasonerPhases.RunSst(Tiny("none"), TextWriter.Null));
        Assert.Contains("reasoner pretrain", e.Message);
    }
}

public sealed class JepaReasonerOptionsTests
{
    [Fact]
    public void OptionsFileOverridesDefaultsAndScaleGrowsStepsAndWidth()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, """{ "_comment": "x", "task": "cfg", "difficulty": 6, "hidden": 64, "sst_steps": 10, "momentum": 0.9 }""");
            var o = ReasonerOptions.Load(path);
            Assert.Equal("cfg", o.Task);
            Assert.Equal(6, o.Difficulty);
            Assert.Equal(0.9, o.Momentum);
            Assert.Equal(4, o.LossScale); // left out: the paper's k
            var big = o.Scaled(4);
            Assert.Equal(40, big.SstSteps);
            Assert.Equal(128, big.Hidden);
            File.WriteAllText(path, "{ not json");
            var e = Assert.Throws<InvalidDataException>(() => ReasonerOptions.Load(path));
            Assert.Contains(path, e.Message);
        }
        finally { File.Delete(path); }
    }

    /// <summary>examples/reasoner-*.json say they hold the experiments' defaults: they must, or they mislead.</summary>
    [Theory]
    [InlineData("reasoner-tree.json", "tree")]
    [InlineData("reasoner-cfg.json", "cfg")]
    public void ExampleOptionFilesAreTheExperimentDefaults(string file, string experiment)
    {
        var loaded = ReasonerOptions.Load(Path.Combine(RepoPaths.Root(), "examples", file));
        var defaults = experiment == "tree" ? ReasonerExperiments.TreeDefaults : ReasonerExperiments.CfgDefaults;
        Assert.Equal(defaults.ToJson().ToJsonString(), loaded.ToJson().ToJsonString());
    }
}

public sealed class JepaReasonerGsm8kDataTests
{
    [Fact]
    public void FewShotPromptsAndGradingRejectAnInfiniteBabble()
    {
        var file = Path.Combine(AppContext.BaseDirectory, "Fixtures", "data", "gsm8k_test_excerpt.jsonl");
        var all = Gsm8kReasonerData.Load(file);
        var data = Gsm8kReasonerData.FromExamples("fixture", all.Take(30).ToList());
        var zero = data.Example(all[35], []);
        var two = data.Example(all[35], all.Take(2).ToList());
        Assert.True(two.Prompt.Length > zero.Prompt.Length);
        Assert.Equal(zero.Continuation, two.Continuation);
        var tok = data.Tokenizer;
        Assert.True(data.IsCorrect(zero, tok.Encode(" so\n#### " + all[35].Answer)));
        Assert.False(data.IsCorrect(zero, tok.Encode(" 12" + new string('0', 400))));
    }
}
