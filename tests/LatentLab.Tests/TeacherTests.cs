using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Text;
using static TorchSharp.torch;

namespace LatentLab.Tests;

public sealed class TeacherTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-teacher").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void SequencesScoreOnlyTheContinuationAndParseBack()
    {
        var fmt = TeacherFormat.Create(TaskRegistry.Get("addition"));
        var p = TaskRegistry.Get("addition").FromPrompt("47+85=");
        var (ids, promptLen) = fmt.Sequence(p, thinking: true);
        Assert.Equal("<bos>47+85=<think>7+5+0=12;4+8+1=13</think>132<eos>", fmt.Tokenizer.Decode(ids));
        Assert.Equal(fmt.PromptIds(p, true), ids[..promptLen]);

        var (x, y, mask, lossTokens) = fmt.Batch(new[] { (ids, promptLen), fmt.Sequence(p, thinking: false) });
        Assert.Equal(new long[] { 2, ids.Length - 1 }, x.shape);
        var targets = y.data<long>().ToArray();
        // Row 0: nothing before the prompt's last token is scored; everything after is, up to <eos>.
        Assert.All(targets[..(promptLen - 1)], t => Assert.Equal(-100, t));
        Assert.Equal(ids[promptLen], targets[promptLen - 1]);
        Assert.Equal(ids.Length - promptLen, targets[..(ids.Length - 1)].Count(t => t != -100));
        // Row 1 (direct, shorter) is padded and the padding is neither attended nor scored.
        var (directIds, directPrompt) = fmt.Sequence(p, thinking: false);
        Assert.Equal(0, mask[1, directIds.Length - 1].item<long>());
        Assert.Equal(ids.Length - promptLen + directIds.Length - directPrompt, lossTokens);

        var continuation = fmt.Tokenizer.Encode("7+5+0=12;4+8+1=13</think>132<eos>");
        Assert.Equal("132", fmt.ParseAnswer(continuation, thinking: true));
        Assert.Null(fmt.ParseAnswer(fmt.Tokenizer.Encode("7+5+0=12;4+8"), thinking: true));
        Assert.Equal("132", fmt.ParseAnswer(fmt.Tokenizer.Encode("132<eos>"), thinking: false));
    }

    /// <summary>A problem space too small for the evaluation is refused before the first update, not after training.</summary>
    [Fact]
    public void EvaluationTooLargeForTheProblemSpaceFailsBeforeTraining()
    {
        var o = new TeacherOptions
        {
            Task = "addition", Difficulty = 2, Steps = 5, BatchSize = 4, Hidden = 32, Layers = 1, Heads = 2,
            EvalProblems = 500, OodExtra = 0, OutDir = _dir, ProgressBar = false, Compute = "f32",
        };
        var e = Assert.Throws<InvalidOperationException>(() => TeacherTraining.Train(o, TextWriter.Null));
        Assert.Contains("distinct Test problems of difficulty 2", e.Message);
        Assert.False(Directory.Exists(Path.Combine(_dir, "train")), "training started before the evaluation sets were drawn");
    }

    /// <summary>A study's teacher folder is reused only for the teacher asked for: another width or length is an error, not the old model.</summary>
    [Fact]
    public void EnsureReusesAFinishedTeacherOnlyWhenItMatches()
    {
        var o = new TeacherOptions
        {
            Task = "addition", Difficulty = 2, Steps = 3, BatchSize = 4, Hidden = 32, Layers = 1, Heads = 2, WarmupSteps = 1,
            EvalProblems = 8, OodExtra = 0, OutDir = _dir, ProgressBar = false, Compute = "f32",
        };
        var first = TeacherTraining.Ensure(o, TextWriter.Null);
        var stamp = File.GetLastWriteTimeUtc(Path.Combine(first, "config.json"));
        Assert.Equal(first, TeacherTraining.Ensure(o, TextWriter.Null));
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(Path.Combine(first, "config.json")));
        var wider = Assert.Throws<InvalidOperationException>(() => TeacherTraining.Ensure(o with { Hidden = 64 }, TextWriter.Null));
        Assert.Contains("d = 32, 1 layers, 3 steps, not the d = 64", wider.Message);
        Assert.Throws<InvalidOperationException>(() => TeacherTraining.Ensure(o with { Steps = 4 }, TextWriter.Null));
        Assert.Throws<InvalidOperationException>(() => TeacherTraining.Ensure(o with { Layers = 2 }, TextWriter.Null));
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void TeacherLearnsTwoDigitAdditionWithThinkingAndSavesAHuggingFaceFolder()
    {
        var o = new TeacherOptions
        {
            Task = "addition", Difficulty = 2, Steps = 600, BatchSize = 32, Hidden = 64, Layers = 2, Heads = 4,
            WarmupSteps = 30, EvalProblems = 100, OodExtra = 1, OutDir = _dir, ProgressBar = false,
        };
        var report = TeacherTraining.Train(o, TextWriter.Null);
        var thinking = report.Cell("in-distribution", thinking: true).Accuracy;
        Assert.True(thinking.Value >= 0.9, $"thinking accuracy {thinking}");
        Assert.True(File.Exists(Path.Combine(_dir, "report.md")));
        Assert.True(File.Exists(Path.Combine(_dir, "train", "metrics.jsonl")));

        // The saved folder reloads through the generic loaders and grades the same.
        using var model = Checkpoints.Load(report.ModelDir);
        var tok = TokenizerLoader.TryLoadFromDirectory(report.ModelDir)!;
        var fmt = new TeacherFormat(TaskRegistry.Get("addition"), tok);
        var problems = TaskSplits.Generate(fmt.Family, Split.Test, 100, 2, o.Seed + 7919 * 2);
        var graded = TeacherEval.Grade(model, fmt, problems, thinking: true);
        Assert.Equal(thinking.Successes, graded.Count(g => g.Correct));
    }
}
