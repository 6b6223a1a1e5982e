using System.Text.Json.Nodes;
using LatentLab.Latents;
using LatentLab.Methods.Shortcut;
using LatentLab.Models;
using LatentLab.Text;

namespace LatentLab.Tests;

/// <summary>The whole study on a Hugging Face checkpoint folder (tiny random Qwen3 with the real tokenizer): plumbing, shapes, report fields.</summary>
[Collection(RealTokenizerCollection.Name)]
public sealed class ShortcutStudyTests(RealTokenizers tokenizers) : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-study").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    [Trait("Category", "Slow")]
    public void StudyRunsEveryPhaseOnAQwen3CheckpointFolder()
    {
        var modelDir = TinyCheckpoint.Qwen3(Path.Combine(_dir, "qwen3-tiny"), tokenizers.Qwen3, seed: 5);

        var o = new ShortcutStudyOptions
        {
            ModelDir = modelDir, Task = "addition", Difficulty = 2, TrainProblems = 40, TestProblems = 20, Point = "blocks.-1.resid_post",
            Trace = TraceMode.Reference, UseUnverified = true, IgnoreGate = true, BatchSize = 32, OutDir = Path.Combine(_dir, "study"),
            Predictor = new PredictorConfig { Steps = 20, BatchSize = 16, Hidden = 32, EvalEvery = 0, CheckpointEvery = 0 },
            Eval = new ShortcutEvalOptions { TrainSteps = 3, TrainBatch = 8, Phase3Problems = 8, OodExtra = 1, EvalBatch = 32, Plots = true },
            Search = new ConfigSearchOptions { Steps = 5 },
        };
        var r = ShortcutStudy.Run(o, TextWriter.Null);

        Assert.Equal(8, r.NoGo.Count);
        Assert.Equal(true, r.NoGo.Single(x => x.Criterion == "no answer leak into the target").Pass);
        Assert.All(r.NoGo, x => Assert.NotNull(x.Pass)); // --ignore-gate: every criterion was computed
        Assert.NotNull(r.Eval);
        foreach (var arm in new[] { ShortcutEvaluation.Thinking, ShortcutEvaluation.Direct, ShortcutEvaluation.Distillation,
                     ShortcutEvaluation.SoftTokens, ShortcutEvaluation.ResidualDelta, ShortcutEvaluation.LoraArm, ShortcutEvaluation.KvPrefix })
            Assert.Contains(r.Eval!.Arms, a => a.Name == arm);
        Assert.True(r.Eval!.Arm(ShortcutEvaluation.Thinking).Flops > r.Eval.Arm(ShortcutEvaluation.ResidualDelta).Flops);

        // The search ran on the training problems; the study used what it chose.
        Assert.NotNull(r.Search);
        Assert.Equal(r.Search!.Chosen, r.Configuration);
        Assert.Equal(r.Configuration.Point, r.Eval!.Point);

        var md = File.ReadAllText(r.ReportPath);
        Assert.Contains("## Configuration search", md);
        Assert.Contains("## No-go criteria", md);
        Assert.Contains("Promotion gate", md);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(o.OutDir, "study.json")))!;
        Assert.Equal(8, json["no_go"]!.AsArray().Count);
        Assert.Equal(r.Configuration.Point, (string?)json["configuration"]!["point"]);
        Assert.Equal("Qwen3", LatentStore.Open(Path.Combine(o.OutDir, "latents", "train")).Settings.ChatFamily);
    }
}
