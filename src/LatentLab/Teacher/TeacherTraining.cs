using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using LatentLab.IO;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Tensors;
using LatentLab.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Teacher;

/// <summary>Everything that defines a teacher run; written to the run folder's config.json.</summary>
public sealed record TeacherOptions
{
    public string Task { get; init; } = "addition";
    /// <summary>Training difficulty; null = the family's default (4 digits for addition).</summary>
    public int? Difficulty { get; init; }
    public long Steps { get; init; } = 900;
    public int BatchSize { get; init; } = 64;
    public double LearningRate { get; init; } = 3e-3;
    public long WarmupSteps { get; init; } = 60;
    /// <summary>Share of training examples in thinking mode; the rest answer directly after &lt;direct&gt;.</summary>
    public double ThinkingFraction { get; init; } = 0.8;
    /// <summary>Latent slots of the bottleneck trace (0: full traces only). See <see cref="TraceFormat.Slots"/>.</summary>
    public int BottleneckSlots { get; init; }
    /// <summary>Share of the thinking examples laid out as bottleneck traces (the rest are full traces).</summary>
    public double BottleneckFraction { get; init; } = 0.5;
    public int Hidden { get; init; } = 128;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 4;
    /// <summary>Activation dtype (weights stay f32): auto (measured on this machine, see <see cref="ComputePolicy"/>), f32 or bf16.</summary>
    public string Compute { get; init; } = "auto";
    /// <summary>cpu or cuda[:N].</summary>
    public string Device { get; init; } = "cpu";
    public long Seed { get; init; }
    /// <summary>Held-out problems per evaluation cell (test split).</summary>
    public int EvalProblems { get; init; } = 500;
    /// <summary>How many lengths beyond the training difficulty the OOD sets reach.</summary>
    public int OodExtra { get; init; } = 2;
    public string OutDir { get; init; } = "runs/teacher";
    public bool? ProgressBar { get; init; }

    public JsonObject ToJson() => JsonSerializer.SerializeToNode(this, Json)!.AsObject();
    internal static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };
}

/// <summary>What a teacher run produced: where the model is, how it scored, how long it took.</summary>
public sealed record TeacherReport(string RunDir, string ModelDir, double TrainSeconds, double EvalSeconds, long Steps,
    double FinalLoss, IReadOnlyList<ModeAccuracy> Cells)
{
    public ModeAccuracy Cell(string set, bool thinking) => Cells.First(c => c.Set == set && c.Thinking == thinking);

    public string ToMarkdown()
    {
        var sb = new System.Text.StringBuilder();
        sb.AppendLine("| test set | difficulty | mode | verified accuracy [Wilson 95%] | mean generated tokens |");
        sb.AppendLine("|---|---|---|---|---|");
        foreach (var c in Cells)
            sb.AppendLine($"| {c.Set} | {c.Difficulty} | {c.Mode} | {c.Accuracy} | {c.MeanGeneratedTokens:F1} |");
        return sb.ToString();
    }
}

/// <summary>
/// Trains a small character-level teacher from scratch on a task family's traces (a mix of thinking and
/// direct-answer examples), saves it as a Hugging Face folder, and grades it with the family's exact verifier.
/// </summary>
public static class TeacherTraining
{
    /// <summary>
    /// A study's own teacher: trained into <see cref="TeacherOptions.OutDir"/> (resuming if killed) and reused as it is
    /// once that run is complete (its eval.json and model folder exist). Returns the model folder.
    /// </summary>
    public static string Ensure(TeacherOptions o, TextWriter log)
    {
        var modelDir = Path.Combine(o.OutDir, "model");
        var evalPath = Path.Combine(o.OutDir, "eval.json");
        if (File.Exists(evalPath) && Directory.Exists(modelDir))
        {
            // Reused only when it is the teacher asked for: a changed width, depth or length must not be answered by an old run.
            var config = TransformerConfig.FromHuggingFace(Path.Combine(modelDir, "config.json"));
            long steps = JsonNode.Parse(File.ReadAllText(evalPath))?["steps"]?.GetValue<long>() ?? -1;
            if (config.HiddenSize != o.Hidden || config.NumLayers != o.Layers || steps != o.Steps)
                throw new InvalidOperationException($"{Path.GetFullPath(o.OutDir)} holds a teacher of d = {config.HiddenSize}, {config.NumLayers} layers, " +
                    $"{steps} steps, not the d = {o.Hidden}, {o.Layers} layers, {o.Steps} steps asked for: give another --out or delete that folder");
            return Path.GetFullPath(modelDir);
        }
        var family = TaskRegistry.Get(o.Task);
        log.WriteLine($"training the study's teacher: {o.Steps} steps on {o.Task} ({family.Difficulty.Name} {o.Difficulty ?? family.Difficulty.Default})");
        var r = Train(o with { ProgressBar = false }, log);
        log.WriteLine($"teacher: {r.TrainSeconds:F0} s, greedy thinking accuracy {r.Cell("in-distribution", true).Accuracy}");
        return r.ModelDir;
    }

    public static TeacherReport Train(TeacherOptions o, TextWriter? log = null)
    {
        log ??= Console.Out;
        TorchRuntime.Initialize();
        var family = TaskRegistry.Get(o.Task);
        int difficulty = o.Difficulty ?? family.Difficulty.Default;
        if (o.BottleneckSlots < 0) throw new ArgumentException($"bottleneck slots must be >= 0 (got {o.BottleneckSlots})");
        if (o.BottleneckFraction is < 0 or > 1) throw new ArgumentException($"bottleneck fraction must be in [0, 1] (got {o.BottleneckFraction})");
        var fmt = TeacherFormat.Create(family, o.BottleneckSlots);
        var config = TeacherModel.DefaultConfig(fmt.Tokenizer, o.Hidden, o.Layers, o.Heads);
        ComputePolicy.Validate(o.Compute);
        // Drawn before training, so a problem space too small for the evaluation fails now, not after the run.
        var evalSets = EvaluationSets(fmt.Family, difficulty, o.EvalProblems, o.OodExtra, o.Seed);

        TorchRuntime.Seed(o.Seed);
        var device = TorchRuntime.ParseDevice(o.Device);
        using var model = new DecoderLM(config);
        model.to(device);
        var trainDir = Path.Combine(o.OutDir, "train");
        var compute = ComputePolicy.Apply(o.Compute, model, Path.Combine(trainDir, "config.json"), log);

        var trainable = new Trainable(model, (step, micro) => BatchLoss(model, fmt, o, difficulty, device, step, micro));

        var trainerConfig = new TrainerConfig
        {
            Steps = o.Steps,
            LearningRate = o.LearningRate,
            WarmupSteps = o.WarmupSteps,
            MinLrRatio = 0.05,
            WeightDecay = 0.1,
            ClipNorm = 1.0,
            LogEvery = 25,
            CheckpointEvery = Math.Max(50, o.Steps / 10),
            KeepCheckpoints = 2,
            Seed = o.Seed,
            OutDir = trainDir,
            ProgressBar = o.ProgressBar,
        };
        var runConfig = new JsonObject { ["teacher"] = o.ToJson(), ["model"] = config.ToHuggingFace(), ["compute"] = compute.ToJson() };
        var modelDir = Path.Combine(o.OutDir, "model");
        var result = new TrainingPhase("teacher", trainerConfig, runConfig).Run(trainable, dir =>
        {
            Checkpoints.Save(model, dir);
            ((Text.CharTokenizer)fmt.Tokenizer).Save(dir);
            fmt.Trace.SaveTo(dir);
            Checkpoints.Seal(dir);
        }, modelDir, log);
        double trainSeconds = result.Seconds;

        var sw = Stopwatch.StartNew();
        model.eval();
        var cells = Evaluate(model, fmt, evalSets);
        double evalSeconds = sw.Elapsed.TotalSeconds;

        var report = new TeacherReport(Path.GetFullPath(o.OutDir), Path.GetFullPath(modelDir), trainSeconds, evalSeconds,
            result.Train.Steps, result.Train.FinalLoss, cells);
        WriteReport(report, o, family);
        return report;
    }

    /// <summary>
    /// The loss of one training micro-batch: a pure function of (seed, step, micro), so a resumed run sees the same
    /// data. Thinking and direct examples are mixed by <see cref="TeacherOptions.ThinkingFraction"/>, and a share
    /// <see cref="TeacherOptions.BottleneckFraction"/> of the thinking ones is laid out as bottleneck traces.
    /// </summary>
    public static TrainLoss BatchLoss(DecoderLM model, TeacherFormat fmt, TeacherOptions o, int difficulty, Device device, long step, int micro)
    {
        var (ids, targets, mask, lossTokens, positions, expiry) = BatchTensors(fmt, o, difficulty, step, micro);
        using var output = model.Forward(ids.to(device), attentionMask: mask.to(device), positions: positions?.to(device), keyExpiry: expiry?.to(device));
        var loss = nn.functional.cross_entropy(output.Logits!.view(-1, model.Config.VocabSize), targets.to(device).view(-1), ignore_index: -100);
        return new TrainLoss(loss, lossTokens);
    }

    /// <summary>The tensors of one training micro-batch (see <see cref="BatchLoss"/>), on the CPU.</summary>
    public static (Tensor Ids, Tensor Targets, Tensor Mask, long LossTokens, Tensor? Positions, Tensor? Expiry) BatchTensors(
        TeacherFormat fmt, TeacherOptions o, int difficulty, long step, int micro)
    {
        long s = Seeds.For(o.Seed, step, micro);
        var problems = TaskSplits.Generate(fmt.Family, Split.Train, o.BatchSize, difficulty, s);
        var rng = new Random(unchecked((int)s));
        var seqs = problems.Select(p =>
        {
            bool thinking = rng.NextDouble() < o.ThinkingFraction;
            return thinking && fmt.Slots > 0 && rng.NextDouble() < o.BottleneckFraction ? fmt.Trace.BottleneckSequence(p) : fmt.Sequence(p, thinking);
        }).ToList();
        var (ids, targets, mask, lossTokens) = fmt.Batch(seqs);
        Tensor? positions = null, expiry = null;
        if (fmt.Slots > 0)
        {
            // Inputs are each sequence but its last token, so their layouts are cut the same way.
            var layouts = seqs.Select(q => fmt.Trace.Layout(q.Ids, q.PromptLength)?.Take(q.Ids.Length - 1)).ToList();
            (positions, expiry) = SequenceLayout.Batch(layouts, seqs.Select(q => q.Ids.Length - 1).ToList(), (int)ids.shape[1]);
        }
        return (ids, targets, mask, lossTokens, positions, expiry);
    }

    /// <summary>
    /// Verified accuracy with and without thinking on held-out problems at the training length (in-distribution)
    /// and at each longer length up to +<paramref name="oodExtra"/> (out of distribution).
    /// </summary>
    public static IReadOnlyList<ModeAccuracy> Evaluate(DecoderLM model, TeacherFormat fmt, int difficulty, int n, int oodExtra, long seed) =>
        Evaluate(model, fmt, EvaluationSets(fmt.Family, difficulty, n, oodExtra, seed));

    static IReadOnlyList<ModeAccuracy> Evaluate(DecoderLM model, TeacherFormat fmt, IReadOnlyList<(string Set, int Difficulty, IReadOnlyList<TaskProblem> Problems)> sets)
    {
        var cells = new List<ModeAccuracy>();
        foreach (var (set, d, problems) in sets)
        {
            foreach (bool thinking in new[] { true, false })
                cells.Add(TeacherEval.Summarise(set, d, thinking, TeacherEval.Grade(model, fmt, problems, thinking, bottleneck: false)));
            if (fmt.Slots > 0)
                cells.Add(TeacherEval.Summarise(set, d, true, TeacherEval.Grade(model, fmt, problems, true, bottleneck: true), bottleneck: true));
        }
        return cells;
    }

    /// <summary>The held-out test problems at the training length and at each longer one up to +<paramref name="oodExtra"/>.</summary>
    static IReadOnlyList<(string Set, int Difficulty, IReadOnlyList<TaskProblem> Problems)> EvaluationSets(ITaskFamily family, int difficulty, int n, int oodExtra, long seed) =>
        Enumerable.Range(difficulty, Math.Max(0, Math.Min(difficulty + oodExtra, family.Difficulty.Max) - difficulty + 1))
            .Select(d => (d == difficulty ? "in-distribution" : $"OOD +{d - difficulty}", d, TaskSplits.Generate(family, Split.Test, n, d, seed + 7919 * d)))
            .ToList();

    static void WriteReport(TeacherReport r, TeacherOptions o, ITaskFamily family)
    {
        var md = $"""
            # Teacher: {family.Name}

            A {o.Layers}-layer, d={o.Hidden} character-level decoder trained from scratch for {r.Steps} steps
            (batch {o.BatchSize}, {o.ThinkingFraction:P0} thinking traces{(o.BottleneckSlots > 0 ? $" ({o.BottleneckFraction:P0} of them bottleneck traces through {o.BottleneckSlots} slots)" : "")}, the rest direct answers) in {r.TrainSeconds:F0} s;
            final training loss {r.FinalLoss:F4}. Answers are read from the model's own greedy output and checked by the
            task's exact verifier; intervals are Wilson 95%.

            {r.ToMarkdown()}
            Model folder (Hugging Face layout): `{r.ModelDir}`. Evaluation took {r.EvalSeconds:F0} s.
            """;
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "report.md"), md);
        var json = new JsonObject
        {
            ["model_dir"] = r.ModelDir,
            ["train_seconds"] = r.TrainSeconds,
            ["eval_seconds"] = r.EvalSeconds,
            ["steps"] = r.Steps,
            ["final_loss"] = r.FinalLoss,
            ["cells"] = new JsonArray(r.Cells.Select(c => (JsonNode)new JsonObject
            {
                ["set"] = c.Set, ["difficulty"] = c.Difficulty, ["thinking"] = c.Thinking, ["bottleneck"] = c.Bottleneck,
                ["accuracy"] = c.Accuracy.Value, ["low"] = c.Accuracy.Low, ["high"] = c.Accuracy.High,
                ["correct"] = c.Accuracy.Successes, ["n"] = c.Accuracy.Trials, ["mean_generated_tokens"] = c.MeanGeneratedTokens,
            }).ToArray()),
        };
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "eval.json"), json.ToJsonString(TeacherOptions.Json));
    }
}
