using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;

namespace LatentLab.Methods.Recurrence;

/// <summary>
/// The study's settings: one teacher, the arms' shared training budget, the K values and the controls. Without
/// <see cref="Model"/> the study trains its own char teacher (<see cref="TeacherSteps"/> updates, at half the family's
/// default difficulty: 2-digit addition, whose 17-token thought K can reach) into OutDir/teacher and reuses it on a rerun.
/// </summary>
public sealed record RecurrenceStudyOptions
{
    /// <summary>In <see cref="Ks"/>, <see cref="DepthK"/> and <see cref="PauseK"/>: the teacher's thought length in tokens.</summary>
    public const int TraceK = -1;

    public string? Model { get; init; }
    public string Task { get; init; } = "addition";
    public int? Difficulty { get; init; }
    public long TeacherSteps { get; init; } = 400;
    /// <summary>Latent-recurrence arms (append mode); 0 is the answer-only baseline, <see cref="TraceK"/> the thought's length.</summary>
    public IReadOnlyList<int> Ks { get; init; } = new[] { 0, 1, 2, 4, 8, TraceK };
    /// <summary>K of the depth-mode arm and of the pause-token control; 0 leaves them out.</summary>
    public int DepthK { get; init; } = 2;
    public int PauseK { get; init; } = TraceK;
    /// <summary>
    /// Append arms decode from the end-of-thinking marker with the latent steps as the cache (see
    /// <see cref="RecurrenceOptions.MarkerDecode"/>), so at p = 1 and K the thought's length an arm starts as the teacher.
    /// </summary>
    public bool MarkerDecode { get; init; } = true;
    public LatentScale LatentScale { get; init; } = LatentScale.EmbeddingNorm;
    /// <summary>
    /// Loss-gated from p = 1: p falls only while the answer loss stays under 0.2, so the teacher's route is kept while
    /// the latent path takes over; by 90 % of training it is at 0 whatever the loss, so every arm trains at the p it is graded at.
    /// </summary>
    public PSchedule P { get; init; } = new() { Kind = PAnnealing.Gated, GateLoss = 0.2, Start = 1, End = 0, Deadline = 0.9 };
    /// <summary>Fixed K: with gated annealing from p = 1 a K curriculum would start the arm on a truncated thought.</summary>
    public KSchedule KCurriculum { get; init; } = new() { Curriculum = false };
    /// <summary>The depth-mode arm cannot decode from a marker (no cache); it keeps the bridge and this schedule.</summary>
    public PSchedule DepthP { get; init; } = new();
    public int LoraRank { get; init; }
    public bool Checkpointing { get; init; }
    /// <summary>Every trained arm gets the same updates on the same batches (matched training data and steps).</summary>
    public long Steps { get; init; } = 300;
    public int BatchSize { get; init; } = 32;
    /// <summary>See <see cref="RecurrenceOptions.LearningRate"/>.</summary>
    public double LearningRate { get; init; } = 1e-4;
    public int EvalPoints { get; init; } = 3;
    public int EvalProblems { get; init; } = 64;
    public int TestProblems { get; init; } = 200;
    public string Compute { get; init; } = "auto";
    public string Device { get; init; } = "cpu";
    public long Seed { get; init; }
    public string OutDir { get; init; } = "runs/recurrence-study";

    public JsonObject ToJson() => JsonSerializer.SerializeToNode(this, RecurrenceOptions.Json)!.AsObject();

    /// <summary>One arm's run options; <see cref="Model"/>, <see cref="Difficulty"/> and K resolved (see <see cref="RecurrenceStudy.Resolve"/>).</summary>
    public RecurrenceOptions Arm(int k, RecurrenceMode mode, bool pause) => new()
    {
        Model = Model ?? throw new InvalidOperationException("recurrence study: resolve the model first"),
        Task = Task, Difficulty = Difficulty, Mode = mode, K = k, Pause = pause,
        MarkerDecode = MarkerDecode && mode == RecurrenceMode.Append, LatentScale = LatentScale, P = mode == RecurrenceMode.Depth ? DepthP : P, KCurriculum = KCurriculum,
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
        o = Resolve(o, log);
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

    /// <summary>
    /// The study with its teacher trained (when <see cref="RecurrenceStudyOptions.Model"/> is unset), its difficulty
    /// fixed and every <see cref="RecurrenceStudyOptions.TraceK"/> replaced by the thought's length in tokens.
    /// </summary>
    public static RecurrenceStudyOptions Resolve(RecurrenceStudyOptions o, TextWriter log)
    {
        TorchRuntime.Initialize();
        var family = TaskRegistry.Get(o.Task);
        int difficulty = o.Difficulty ?? (o.Model is null ? Math.Max(family.Difficulty.Min, family.Difficulty.Default / 2) : family.Difficulty.Default);
        string model = o.Model ?? TeacherTraining.Ensure(new TeacherOptions
        {
            Task = o.Task, Difficulty = difficulty, Steps = o.TeacherSteps, EvalProblems = o.TestProblems, OodExtra = 0, Compute = o.Compute,
            Device = o.Device, Seed = o.Seed, OutDir = Path.Combine(o.OutDir, "teacher"),
        }, log);
        var fmt = TraceFormat.ForModel(model, family);
        int thought = RecurrenceData.ThoughtLength(fmt, TaskSplits.Generate(family, Split.Train, 64, difficulty, o.Seed + 17));
        int K(int k) => k == RecurrenceStudyOptions.TraceK ? thought : k;
        if (o.Ks.Concat([o.DepthK, o.PauseK]).Any(k => k < RecurrenceStudyOptions.TraceK))
            throw new ArgumentException("recurrence study: every K must be ≥ 0 (or 'trace', the thought's length)");
        log.WriteLine($"recurrence study: {family.Name} at {family.Difficulty.Name} {difficulty}, the teacher's thought is {thought} tokens");
        return o with { Model = model, Difficulty = difficulty, Ks = o.Ks.Select(K).Distinct().ToList(), DepthK = K(o.DepthK), PauseK = K(o.PauseK) };
    }

    /// <summary>The teacher as it is, with and without its explicit trace, on the arms' test problems.</summary>
    static IEnumerable<RecurrenceResult> TeacherArms(RecurrenceStudyOptions o, TextWriter log)
    {
        TorchRuntime.Initialize();
        var family = TaskRegistry.Get(o.Task);
        int difficulty = o.Difficulty!.Value;
        var fmt = TraceFormat.ForModel(o.Model!, family);
        using var model = Checkpoints.Load(o.Model!, device: TorchRuntime.ParseDevice(o.Device));
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
