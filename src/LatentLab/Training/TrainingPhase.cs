using System.Diagnostics;
using System.Text.Json.Nodes;

namespace LatentLab.Training;

/// <summary>How one training phase ended: where its result is and what the trainer reported.</summary>
public sealed record PhaseResult(string Phase, string ModelDir, TrainResult Train, double Seconds);

/// <summary>
/// One training phase, run the same way by every method: the method validates its options, builds its model, data
/// and loss (an <see cref="ITrainable"/>), and this trains it through the one <see cref="Trainer"/> (resuming a killed
/// run from its last checkpoint), saves the result into <c>modelDir</c> and reports.
/// <code>
///   var phase = new TrainingPhase("sst", trainerConfig, runConfig) { Evaluate = _ => Metrics(...) };
///   return phase.Run(trainable, dir => reasoner.Save(dir, tokenizer), o.ModelDir("sst"), log, cancel);
/// </code>
/// </summary>
public sealed record TrainingPhase(string Name, TrainerConfig Config, JsonObject? RunConfig = null)
{
    /// <summary>The trainer's evaluation callback (see <see cref="Trainer.Evaluate"/>).</summary>
    public Func<long, IReadOnlyDictionary<string, double>>? Evaluate { get; init; }

    /// <summary>Trains, then calls <paramref name="save"/> with <paramref name="modelDir"/> (null: nothing to save, the caller keeps the model).</summary>
    public PhaseResult Run(ITrainable model, Action<string>? save, string? modelDir, TextWriter? log = null, CancellationToken cancel = default)
    {
        var trainer = new Trainer(Config, RunConfig, log) { Evaluate = Evaluate };
        var sw = Stopwatch.StartNew();
        var result = trainer.Run(model, cancel);
        if (save is not null && modelDir is not null) save(modelDir);
        return new PhaseResult(Name, modelDir is null ? trainer.RunDir : Path.GetFullPath(modelDir), result, sw.Elapsed.TotalSeconds);
    }
}
