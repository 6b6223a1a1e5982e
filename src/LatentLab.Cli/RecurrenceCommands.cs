using System.CommandLine;
using LatentLab.Methods.Recurrence;

namespace LatentLab.Cli;

/// <summary>`recurrence train | eval | study`: latent recurrence with annealed interpolation, a bridge and a frozen decoder (seed 004).</summary>
public static class RecurrenceCommands
{
    public static Command Create()
    {
        var root = new Command("recurrence", "Latent recurrence: K latent steps (p·embed(argmax) + (1−p)·latent), a bridge, a frozen decoder, answer-only CE");
        root.Add(Train());
        root.Add(Eval());
        root.Add(Study());
        return root;
    }

    /// <summary>Options that train and study share.</summary>
    sealed class Shared
    {
        public readonly Option<string> Model = new("--model") { Description = "Hugging Face model folder, or a teacher run folder (with model/)" };
        public readonly Option<string> Task = new("--task") { Description = "task family (see tasks list)", DefaultValueFactory = _ => "addition" };
        public readonly Option<int?> Difficulty = new("--difficulty", "--digits") { Description = "the family's difficulty (default: its own)" };
        public readonly Option<string?> PSchedule = new("--p-schedule") { Description = "linear | cosine | gated[:LOSS], optionally ,START,END (train: linear,0.9,0; study: gated:0.2,1,0)" };
        public readonly Option<double?> Deadline = new("--p-deadline") { Description = "gated / track: share of training by which p is at its end value whatever the loss (study default 0.9; none for train)" };
        public readonly Option<double?> AnnealFraction = new("--anneal-fraction") { Description = $"share of training over which p anneals (then holds at its end value; default {new PSchedule().AnnealFraction})" };
        public readonly Option<string?> KSchedule = new("--k-schedule") { Description = "fixed | grow:START (K grows from START to the arm's K as p falls; train: grow:2, study: fixed)" };
        public readonly Option<int> LoraRank = new("--lora-rank") { Description = "0 = full trainable copy of the latent-phase transformer; r > 0 = LoRA adapters on only while reasoning", DefaultValueFactory = _ => 0 };
        public readonly Option<bool> Checkpointing = new("--checkpointing") { Description = "recompute each latent step in backward instead of keeping its activations" };
        public readonly Option<long?> Steps = new("--steps") { Description = "optimiser updates (per arm in a study)" };
        public readonly Option<int?> Batch = new("--batch");
        public readonly Option<double?> Lr = new("--lr");
        public readonly Option<int?> TestProblems = new("--test-problems");
        public readonly Option<int?> EvalProblems = new("--eval-problems") { Description = "validation problems per evaluation during training" };
        public readonly Option<string> Compute = CliSupport.ComputeOption();
        public readonly Option<string> Device = CliSupport.DeviceOption();
        public readonly Option<long> Seed = new("--seed") { DefaultValueFactory = _ => 0 };
        public readonly Option<string> LatentScale = new("--latent-scale") { Description = "how a latent enters the step input: embedding (rescaled to the mean token-embedding norm) | raw (the seed's formula as written)", DefaultValueFactory = _ => "embedding" };

        public IEnumerable<Option> All => new Option[] { Model, Task, Difficulty, PSchedule, AnnealFraction, Deadline, KSchedule, LoraRank, Checkpointing, Steps, Batch, Lr, TestProblems, EvalProblems, Compute, Device, Seed, LatentScale };

        public LatentScale Scale(ParseResult pr) => pr.GetValue(LatentScale)!.Trim().ToLowerInvariant() switch
        {
            "embedding" => Methods.Recurrence.LatentScale.EmbeddingNorm,
            "raw" => Methods.Recurrence.LatentScale.Raw,
            var v => throw new UserError($"--latent-scale '{v}': expected embedding or raw"),
        };

        /// <summary>The p schedule given on the command line, or <paramref name="fallback"/>; --anneal-fraction applies to either.</summary>
        public PSchedule P(ParseResult pr, PSchedule fallback)
        {
            var p = pr.GetValue(PSchedule) is { } text ? Methods.Recurrence.PSchedule.Parse(text) : fallback;
            if (pr.GetValue(AnnealFraction) is { } f) p = p with { AnnealFraction = f };
            if (pr.GetValue(Deadline) is { } d) p = p with { Deadline = d };
            p.Validate();
            return p;
        }

        public KSchedule K(ParseResult pr, KSchedule fallback) => pr.GetValue(KSchedule) is { } text ? Methods.Recurrence.KSchedule.Parse(text) : fallback;
        public string? ModelDir(ParseResult pr) => pr.GetValue(Model) is { } m ? CliSupport.ModelDir(m) : null;
    }

    static Command Train()
    {
        var s = new Shared();
        var k = new Option<int>("--k") { Description = "latent steps at the end of the curriculum (0 = answer-only baseline)", DefaultValueFactory = _ => 4 };
        var mode = new Option<string>("--mode") { Description = "append (one KV-cached position per step) | depth (whole-sequence states fed back K times)", DefaultValueFactory = _ => "append" };
        var pause = new Option<bool>("--pause") { Description = "pause-token control: K learned embeddings after the question, no recurrence" };
        var mlp = new Option<bool>("--bridge-mlp") { Description = "add a small residual MLP to the bridge" };
        var marker = new Option<bool>("--marker-decode") { Description = "append mode: decode from the end-of-thinking marker's embedding plus a zero-initialised gate times the bridged latent, the latent steps as the cache" };
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/recurrence" };
        var cmd = new Command("train", "Train one arm (resumes if killed) and grade it on held-out problems") { k, mode, pause, mlp, marker, output };
        foreach (var o in s.All) cmd.Add(o);
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var d = new RecurrenceOptions();
            var o = new RecurrenceOptions
            {
                Model = s.ModelDir(pr) ?? throw new UserError("recurrence train: --model DIR is required"), Task = pr.GetValue(s.Task)!,
                Difficulty = pr.GetValue(s.Difficulty), K = pr.GetValue(k), Mode = ParseMode(pr.GetValue(mode)!), Pause = pr.GetValue(pause),
                BridgeMlp = pr.GetValue(mlp), MarkerDecode = pr.GetValue(marker), LatentScale = s.Scale(pr), P = s.P(pr, d.P), KCurriculum = s.K(pr, d.KCurriculum),
                LoraRank = pr.GetValue(s.LoraRank), Checkpointing = pr.GetValue(s.Checkpointing), Steps = pr.GetValue(s.Steps) ?? d.Steps,
                BatchSize = pr.GetValue(s.Batch) ?? d.BatchSize, LearningRate = pr.GetValue(s.Lr) ?? d.LearningRate,
                TestProblems = pr.GetValue(s.TestProblems) ?? d.TestProblems, EvalProblems = pr.GetValue(s.EvalProblems) ?? d.EvalProblems,
                Compute = pr.GetValue(s.Compute)!, Device = pr.GetValue(s.Device)!, Seed = pr.GetValue(s.Seed), OutDir = pr.GetValue(output)!,
            };
            RecurrenceTraining.Train(o);
            return 0;
        }));
        return cmd;
    }

    static Command Eval()
    {
        var dir = new Argument<string>("run") { Description = "a `recurrence train` run folder" };
        var k = new Option<int?>("--k") { Description = "latent steps at evaluation (default: the run's K)" };
        var p = new Option<double?>("--p") { Description = "interpolation at evaluation (default: the schedule's end value)" };
        var n = new Option<int?>("--n") { Description = "test problems (default: the run's)" };
        var cmd = new Command("eval", "Re-grade a trained run at any K and p (verified accuracy, Wilson 95%)") { dir, k, p, n };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            RecurrenceTraining.Evaluate(pr.GetValue(dir)!, pr.GetValue(k), pr.GetValue(p), pr.GetValue(n));
            return 0;
        }));
        return cmd;
    }

    static Command Study()
    {
        var s = new Shared();
        var d0 = new RecurrenceStudyOptions();
        var ks = new Option<string>("--ks") { Description = "comma-separated K of the latent arms; 'trace' = the teacher's thought length in tokens", DefaultValueFactory = _ => FormatKs(d0.Ks) };
        var depthK = new Option<string>("--depth-k") { Description = "K of the depth-mode arm (0 = none)", DefaultValueFactory = _ => FormatKs([d0.DepthK]) };
        var pauseK = new Option<string>("--pause-k") { Description = "K of the pause-token control (0 = none)", DefaultValueFactory = _ => FormatKs([d0.PauseK]) };
        var teacherSteps = new Option<long>("--teacher-steps") { Description = "without --model: updates of the study's own teacher", DefaultValueFactory = _ => d0.TeacherSteps };
        var bridgeOnly = new Option<bool>("--no-marker-decode") { Description = "decode from a bridged position before the marker instead of from the marker with the latent steps as the cache" };
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/recurrence-study" };
        var cmd = new Command("study", "Train and grade every arm at matched training steps (K=0, latent K=1,2,4,8 and the thought's length, depth mode, pause tokens) against the teacher direct / thinking; without --model it trains its own 2-digit teacher first; writes report.md, results.json and plots")
            { ks, depthK, pauseK, teacherSteps, bridgeOnly, output };
        foreach (var o in s.All) cmd.Add(o);
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var d = new RecurrenceStudyOptions();
            var o = new RecurrenceStudyOptions
            {
                Model = s.ModelDir(pr), Task = pr.GetValue(s.Task)!, Difficulty = pr.GetValue(s.Difficulty), TeacherSteps = pr.GetValue(teacherSteps),
                Ks = ParseKs(pr.GetValue(ks)!), DepthK = ParseK(pr.GetValue(depthK)!), PauseK = ParseK(pr.GetValue(pauseK)!),
                MarkerDecode = !pr.GetValue(bridgeOnly), LatentScale = s.Scale(pr), P = s.P(pr, d.P), KCurriculum = s.K(pr, d.KCurriculum), LoraRank = pr.GetValue(s.LoraRank),
                Checkpointing = pr.GetValue(s.Checkpointing), Steps = pr.GetValue(s.Steps) ?? d.Steps, BatchSize = pr.GetValue(s.Batch) ?? d.BatchSize,
                LearningRate = pr.GetValue(s.Lr) ?? d.LearningRate, TestProblems = pr.GetValue(s.TestProblems) ?? d.TestProblems,
                EvalProblems = pr.GetValue(s.EvalProblems) ?? d.EvalProblems, Compute = pr.GetValue(s.Compute)!, Device = pr.GetValue(s.Device)!,
                Seed = pr.GetValue(s.Seed), OutDir = pr.GetValue(output)!,
            };
            RecurrenceStudy.Run(o);
            return 0;
        }));
        return cmd;
    }

    static string FormatKs(IEnumerable<int> ks) => string.Join(",", ks.Select(k => k == RecurrenceStudyOptions.TraceK ? "trace" : k.ToString(System.Globalization.CultureInfo.InvariantCulture)));

    static List<int> ParseKs(string text) => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(k => k.Equals("trace", StringComparison.OrdinalIgnoreCase) ? RecurrenceStudyOptions.TraceK
            : int.TryParse(k, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var v) ? v
            : throw new UserError($"K '{k}': expected a non-negative integer or 'trace'"))
        .ToList();

    static int ParseK(string text) => ParseKs(text) is [var k] ? k : throw new UserError($"'{text}': expected one K");

    static RecurrenceMode ParseMode(string m) => m.Trim().ToLowerInvariant() switch
    {
        "append" => RecurrenceMode.Append,
        "depth" => RecurrenceMode.Depth,
        _ => throw new UserError($"--mode '{m}': expected append or depth"),
    };
}
