using LatentLab.Training;

namespace LatentLab.Tests;

public sealed class TrainerProgressTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-progress").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>A front end that can show a bar: records what the trainer reports and the lines it logs.</summary>
    sealed class RecordingLog(bool canShow) : StringWriter, IProgressLog
    {
        public readonly List<long> Reported = [];
        public T WithProgress<T>(string label, long total, long done, Func<Action<long, string>?, T> work) =>
            work(canShow ? (d, _) => Reported.Add(d) : null);
    }

    TrainerConfig Config(string name, bool? bar) => new()
    {
        Steps = 4, LearningRate = 1e-2, WarmupSteps = 1, LogEvery = 2, Seed = 3, OutDir = Path.Combine(_dir, name), ProgressBar = bar,
    };

    [Fact]
    public void TheLogDecidesOnTheBarAndTheConfigCanTurnItOff()
    {
        using (var task = new TinyTask())
        {
            var log = new RecordingLog(canShow: true);
            new Trainer(Config("bar", null), log: log).Run(task);
            Assert.Equal(new long[] { 1, 2, 3, 4 }, log.Reported);
            Assert.DoesNotContain("step 2/4", log.ToString()); // the bar shows the steps, the log keeps the rest
            Assert.Contains("checkpoint step-000004", log.ToString());
        }
        foreach (var (name, canShow, bar) in new[] { ("lines", false, (bool?)null), ("off", true, false) })
        {
            using var task = new TinyTask();
            var log = new RecordingLog(canShow);
            new Trainer(Config(name, bar), log: log).Run(task);
            Assert.Empty(log.Reported);
            Assert.Contains("step 2/4", log.ToString());
        }
    }
}
