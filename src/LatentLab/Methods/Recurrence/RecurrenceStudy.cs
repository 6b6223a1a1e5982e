using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;

namespace LatentLab.Methods.Recurrence;

/// <summary>The study's settings: one teacher, the arms' shared training budget, the K values and the controls.</summary>
public sealed record RecurrenceStudyOptions
{
    public string Model { get; init; } = "";
    public string Task { get; init; } = "addition";
    public int? Difficulty { get; init; }
    /// <summary>Latent-recurrence arms (append mode); 0 is the answer-only baseline.</summary>
    public IReadOnlyList<int> Ks { get; init; } = new[] { 0, 1, 2, 4, 8 };
    /// <summary>K of the depth-mode arm and of the pause-token control; 0 leaves them out.</summary>
    public int DepthK { get; init; } = 4;
    public int PauseK { get; init; } = 4;
    public PSchedule P { get; init; } = new();
    public KSchedule KCurriculum { get; init; } = new();
    public int LoraRank { get; init; }
    public bool Checkpointing { get; init; }
    /// <summary>Every trained arm gets the same updates on the same batches (matched training data and steps).</summary>
    public long Steps { get; init; } = 150;
    public int BatchSize { get; init; } = 48;
    public double LearningRate { get; init; } = 1e-3;
    public int EvalPoints { get; init; } = 3;
    public int EvalProblems { get; init; } = 64;
    public int TestProblems { get; init; } = 200;
    public string Compute { get; init; } = "auto";
    public string Device { get; init; } = "cpu";
    public long Seed { get; init; }
    public string OutDir { get; init; } = "runs/recurrence-study";

    public JsonObject ToJson() => JsonSerializer.SerializeToNode(this, RecurrenceOptions.Json)!.AsObject();

    public RecurrenceOptions Arm(int k, RecurrenceMode mode, bool pause) => new()
    {
        Model = Model, Task = Task, Difficulty = Difficulty, Mode = mode, K = k, Pause = pause, P = P, KCurriculum = KCurriculum,
        LoraRank = LoraRank, Checkpointing = Checkpointing, Steps = Steps, BatchSize = BatchSize, LearningRate = LearningRate,
        WarmupSteps = Math.Max(1, Steps / 10), EvalPoints = EvalPoints, EvalProblems = EvalProblems, TestProblems = TestProblems,
        Compute = Compute, Device = Device, Seed = Seed, ProgressBar = false,
        OutDir = Path.Combine(OutDir, "arms", pause ? $"pause-k{k}" : $"{mode.ToString().ToLowerInvariant()}-k{k}"),
    };
}

/// <summary>
/// Every arm on the same held-out problems: the teacher answering directly (floor) and with its own explicit trace
/// (ceiling), both untrained here; K = 0 fine-tuned on answers only; latent recurrence at each K; one depth-mode
/// arm; and pause tokens (K learned embeddings, no recurrence). Writes report.md, results.json and the plots.
/// </summary>
public static class RecurrenceStudy
{
    public static IReadOnlyList<RecurrenceResult> Run(RecurrenceStudyOptions o, TextWriter? log = null, CancellationToken cancel = default)
    {
        log ??= Console.Out;
        Directory.CreateDirectory(o.OutDir);
        var sw = Stopwatch.StartNew();
        var arms = new List<RecurrenceResult>();
        arms.AddRange(TeacherArms(o, log));
        var plan = o.Ks.Select(k => (k, RecurrenceMode.Append, false)).ToList();
        if (o.DepthK > 0) plan.Add((o.DepthK, RecurrenceMode.Depth, false));
        if (o.PauseK > 0) plan.Add((o.PauseK, RecurrenceMode.Append, true));
        foreach (var (k, mode, pause) in plan)
        {
            cancel.ThrowIfCancellationRequested();
            var arm = o.Arm(k, mode, pause);
            log.WriteLine($"== arm {RecurrenceTraining.ArmName(arm)} ({sw.Elapsed.TotalSeconds:F0} s into the study)");
            arms.Add(RecurrenceTraining.Train(arm, new EveryNthStepLog(log, Math.Max(1, (int)(o.Steps / 5))), cancel));
            RecurrenceReport.Write(o, arms, sw.Elapsed.TotalSeconds); // a killed study still leaves what it measured
        }
        RecurrenceReport.Write(o, arms, sw.Elapsed.TotalSeconds);
        log.WriteLine($"study done in {sw.Elapsed.TotalSeconds:F0} s: {Path.Combine(o.OutDir, "report.md")}");
        return arms;
    }

    /// <summary>The teacher as it is, with and without its explicit trace, on the arms' test problems.</summary>
    static IEnumerable<RecurrenceResult> TeacherArms(RecurrenceStudyOptions o, TextWriter log)
    {
        TorchRuntime.Initialize();
        var family = TaskRegistry.Get(o.Task);
        int difficulty = o.Difficulty ?? family.Difficulty.Default;
        var fmt = TraceFormat.ForModel(o.Model, family);
        using var model = Checkpoints.Load(o.Model, device: TorchRuntime.ParseDevice(o.Device));
        var test = TaskSplits.Generate(family, Split.Test, o.TestProblems, difficulty, o.Seed + 7919 * difficulty);
        foreach (bool thinking in new[] { false, true })
        {
            var sw = Stopwatch.StartNew();
            var graded = TeacherEval.Grade(model, fmt, test, thinking);
            var acc = Proportion.Wilson(graded.Count(g => g.Correct), graded.Count);
            double flops = graded.Average(g => Throughput.DecoderForwardFlops(model.Config, 1, g.PromptTokens + g.Sampled));
            var name = thinking ? "explicit thinking (teacher's trace)" : "teacher direct (untrained floor)";
            log.WriteLine($"{name}: {acc} in {sw.Elapsed.TotalSeconds:F0} s");
            yield return new RecurrenceResult(name, thinking ? "thinking" : "direct", 0, false, acc, flops, 0, double.NaN, [], null);
        }
    }
}
