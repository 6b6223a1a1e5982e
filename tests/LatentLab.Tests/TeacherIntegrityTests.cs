using LatentLab.IO;
using LatentLab.Teacher;
using LatentLab.Training;

namespace LatentLab.Tests;

/// <summary>
/// Issue 14 as a new user met it, on a tiny teacher: a flipped bit in the last checkpoint, a run folder copied to a
/// new path, and a flipped bit in the exported model, each followed by the same command again.
/// </summary>
public sealed class TeacherIntegrityTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-teacher-integrity").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    TeacherOptions Options(string name) => new()
    {
        Task = "addition", Difficulty = 2, Steps = 51, BatchSize = 4, Hidden = 32, Layers = 1, Heads = 2, WarmupSteps = 5,
        Compute = "f32", EvalProblems = 1, OodExtra = 0, OutDir = Path.Combine(_dir, name), ProgressBar = false,
    };

    static byte[] Weights(TeacherOptions o) => File.ReadAllBytes(Path.Combine(o.OutDir, "model", "model.safetensors"));

    [Fact]
    public void DamageAndMovesAreRecoveredByRunningTheSameCommandAgain()
    {
        var o = Options("R");
        TeacherTraining.Train(o, TextWriter.Null);
        var truth = Weights(o);
        var export = Path.Combine(o.OutDir, "model");
        Assert.Equal(Integrity.Intact, ChecksumManifest.Verify(export).State);
        Assert.Contains("tokenizer.json", File.ReadAllText(Path.Combine(export, ChecksumManifest.FileName)));

        // A flipped bit in the final checkpoint: named, skipped, retrained from step 50 to the same weights (checkpoints at 50 and 51).
        DamageKit.FlipBit(Path.Combine(o.OutDir, "train", "checkpoints", "step-000051", RunCheckpoints.ModelFile), -3);
        var log = new StringWriter();
        TeacherTraining.Train(o, log);
        Assert.Contains("skipping checkpoint step-000051", log.ToString());
        Assert.Contains("(step 50)", log.ToString());
        Assert.Contains("resumed from", log.ToString());
        Assert.Equal(truth, Weights(o));

        // The run folder copied elsewhere resumes there instead of refusing a "different config".
        var moved = o with { OutDir = Path.Combine(_dir, "copies", "R2") };
        DamageKit.CopyTree(o.OutDir, moved.OutDir);
        log = new StringWriter();
        TeacherTraining.Train(moved, log);
        Assert.Contains("already trained", log.ToString());

        // A flipped bit in the exported model: loading names it, and the same command exports it again.
        DamageKit.FlipBit(Path.Combine(moved.OutDir, "model", "model.safetensors"), -3);
        var e = Assert.Throws<InvalidDataException>(() => Models.Checkpoints.Load(Path.Combine(moved.OutDir, "model")));
        Assert.Contains("model.safetensors is damaged", e.Message);
        TeacherTraining.Train(moved, TextWriter.Null);
        Assert.Equal(truth, Weights(moved));
        Assert.Equal(Integrity.Intact, ChecksumManifest.Verify(Path.Combine(moved.OutDir, "model")).State);
    }
}
