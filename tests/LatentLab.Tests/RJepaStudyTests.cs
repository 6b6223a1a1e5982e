using System.Text.Json.Nodes;
using LatentLab.Latents;
using LatentLab.Methods.WorldModel;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Text;

namespace LatentLab.Tests;

/// <summary>The R-JEPA study on a Hugging Face checkpoint folder (tiny random Qwen3 with the real tokenizer and its
/// thinking template): every stage's plumbing, the stores' shapes and the report's fields.</summary>
[Collection(RealTokenizerCollection.Name)]
public sealed class RJepaStudyTests(RealTokenizers tokenizers) : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-rjepa-study").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    [Trait("Category", "Slow")]
    public void StudyRunsEveryStageOnAQwen3CheckpointFolder()
    {
        var modelDir = TinyCheckpoint.Qwen3(Path.Combine(_dir, "qwen3-tiny"), tokenizers.Qwen3, seed: 9);
        var modelB = TinyCheckpoint.Qwen3(Path.Combine(_dir, "qwen3-tiny-b"), tokenizers.Qwen3, seed: 10);
        var o = new RJepaStudyOptions
        {
            Model = modelDir, Task = "addition", Difficulty = 3, Trace = TraceMode.Reference, // a random model never closes its own thinking
            TrainProblems = 12, ValProblems = 6, TestProblems = 6, Samples = 2, TrainSamples = 2, BatchSize = 16, Compute = "f32",
            World = new WorldTrainOptions { Steps = 4, BatchSize = 8, EvalEvery = 0, Model = new WorldModelConfig { Width = 32, Layers = 1, PredictorLayers = 1, Heads = 2, MaxSteps = 12 } },
            Lambdas = [0, 0.25], CandidateCounts = [2], NudgeProblems = 2, OutDir = Path.Combine(_dir, "study"),
            ModelB = modelB, CalibrationTraces = 8,
        };
        // The Qwen3 template's reference trace cuts into the task's own steps, each checked right.
        var fmt = TraceFormat.ForModel(modelDir, TaskRegistry.Get("addition"));
        var problem = TaskSplits.Generate(fmt.Family, Split.Train, 1, 3, 0)[0];
        var (ids, promptLength) = fmt.Sequence(problem, thinking: true);
        var steps = StepSegmenter.Segment(fmt, ids, promptLength)!;
        Assert.True(problem.Steps.SequenceEqual(steps.Select(x => x.Text)),
            $"trace '{fmt.Tokenizer.Decode(ids[promptLength..])}' cut into [{string.Join(" | ", steps.Select(x => x.Text))}], task steps [{string.Join(" | ", problem.Steps)}]");
        Assert.All(StepCheck.All(problem, steps), Assert.True);

        var r = RJepaStudy.Run(o, TextWriter.Null);

        // The stores are read through the chat template: Qwen3's family, its segmenter, one step latent per step of each trace.
        using var train = StepStore.Open(Path.Combine(o.OutDir, "latents", "train"));
        Assert.Equal(ChatFamily.Qwen3, TraceFormat.ForModel(modelDir, TaskRegistry.Get("addition")).Chat.Family);
        Assert.Equal(12, train.Samples.Select(s => s.ProblemIndex).Distinct().Count());
        Assert.All(train.Samples, s => Assert.True(s.Steps.Count >= 1));
        Assert.Equal(train.Samples.Sum(s => s.Rows), (int)train.Latents.shape[0]); // the prompt state and one mean per step
        Assert.Equal(TransformerConfig.FromHuggingFace(Path.Combine(modelDir, "config.json")).HiddenSize, train.HiddenSize);

        foreach (var arm in new[] { RJepaStudy.Greedy, RJepaStudy.RandomSample, RJepaStudy.LogProb, RJepaStudy.Majority, RJepaStudy.Jepa, RJepaStudy.JepaLogProb, RJepaStudy.Oracle })
            Assert.Equal(6, r.Rerank.Get(arm).Accuracy!.Value.Trials);
        Assert.NotNull(r.Nudge);
        Assert.Equal(4, r.Nudge!.Arms.Count); // λ = 0, λ = 0.25, m = 2, the oracle
        Assert.All(r.Nudge.Arms, a => Assert.Equal(2, a.Accuracy!.Value.Trials));

        // PLAN ran on the test traces (three steps each: one interior gap per trace).
        Assert.NotNull(r.Plan);
        Assert.NotNull(r.GapDetection);
        Assert.Equal(6, r.Plan!.Problems);
        Assert.Equal(5, r.Plan.Arms.Count); // the model alone, three λ of the predicted step, the true step

        // Cross-model: model B's traces reranked by A's world model through the fitted map, raw, and by B's own.
        Assert.NotNull(r.CrossModel);
        foreach (var arm in new[] { "A's world model, calibrated", "A's world model, uncalibrated", "B's own world model", RJepaStudy.Oracle })
            Assert.Equal(6, r.CrossModel!.Get(arm).Accuracy!.Value.Trials);

        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(o.OutDir, "results.json")))!;
        Assert.Equal(7, json["arms"]!.AsArray().Count);
        Assert.All(json["arms"]!.AsArray(), a => Assert.NotNull(a!["correct"]));
        Assert.NotNull(json["aurocs"]!["trace_mean_error"]);
        Assert.NotNull(json["nudge"]);
        Assert.NotNull(json["plan"]);
        Assert.NotNull(json["cross_model"]);
        Assert.NotNull(json["aurocs"]!["gap_detection"]);
        Assert.Contains("## RERANK", File.ReadAllText(r.ReportPath));
        foreach (var png in new[] { "rerank_accuracy.png", "nudge_lambda.png", "nudge_accuracy.png", "score_histogram.png", "plan_accuracy.png" })
            Assert.True(new FileInfo(Path.Combine(o.OutDir, png)).Length > 0, png);
    }
}
