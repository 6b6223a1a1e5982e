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
        public readonly Option<string> Model = new("--model") { Description = "Hugging Face model folder, or a teacher run folder (with model/)", Required = true };
        public readonly Option<string> Task = new("--task") { Description = "task family (see tasks list)", DefaultValueFactory = _ => "addition" };
        public readonly Option<int?> Difficulty = new("--difficulty", "--digits") { Description = "the family's difficulty (default: its own)" };
        public readonly Option<string> PSchedule = new("--p-schedule") { Description = "linear | cosine | gated[:LOSS], optionally ,START,END (default linear,0.9,0)", DefaultValueFactory = _ => "linear" };
        public readonly Option<double> AnnealFraction = new("--anneal-fraction") { Description = "share of training over which p anneals (then holds at its end value)", DefaultValueFactory = _ => new PSchedule().AnnealFraction };
        public readonly Option<string> KSchedule = new("--k-schedule") { Description = "fixed | grow:START (K grows from START to the arm's K as p falls)", DefaultValueFactory = _ => "grow:2" };
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

        public IEnumerable<Option> All => new Option[] { Model, Task, Difficulty, PSchedule, AnnealFraction, KSchedule, LoraRank, Checkpointing, Steps, Batch, Lr, TestProblems, EvalProblems, Compute, Device, Seed };

        public PSchedule P(ParseResult pr) => Methods.Recurrence.PSchedule.Parse(pr.GetValue(PSchedule)!) with { AnnealFraction = pr.GetValue(AnnealFraction) };
        public KSchedule K(ParseResult pr) => Methods.Recurrence.KSchedule.Parse(pr.GetValue(KSchedule)!);
        public string ModelDir(ParseResult pr) => CliSupport.ModelDir(pr.GetValue(Model)!);
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
                Model = s.ModelDir(pr), Task = pr.GetValue(s.Task)!, Difficulty = pr.GetValue(s.Difficulty), K = pr.GetValue(k),
                Mode = ParseMode(pr.GetValue(mode)!), Pause = pr.GetValue(pause), BridgeMlp = pr.GetValue(mlp), MarkerDecode = pr.GetValue(marker), P = s.P(pr), KCurriculum = s.K(pr),
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
        var ks = new Option<string>("--ks") { Description = "comma-separated K of the latent arms", DefaultValueFactory = _ => "0,1,2,4,8" };
        var depthK = new Option<int>("--depth-k") { Description = "K of the depth-mode arm (0 = none)", DefaultValueFactory = _ => new RecurrenceStudyOptions().DepthK };
        var pauseK = new Option<int>("--pause-k") { Description = "K of the pause-token control (0 = none)", DefaultValueFactory = _ => new RecurrenceStudyOptions().PauseK };
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/recurrence-study" };
        var cmd = new Command("study", "Train and grade every arm at matched training steps: K=0, latent K=1,2,4,8, depth mode, pause tokens, and the teacher direct / thinking; writes report.md, results.json and plots")
            { ks, depthK, pauseK, output };
        foreach (var o in s.All) cmd.Add(o);
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var d = new RecurrenceStudyOptions();
            var o = new RecurrenceStudyOptions
            {
                Model = s.ModelDir(pr), Task = pr.GetValue(s.Task)!, Difficulty = pr.GetValue(s.Difficulty),
                Ks = pr.GetValue(ks)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToList(),
                DepthK = pr.GetValue(depthK), PauseK = pr.GetValue(pauseK), P = s.P(pr), KCurriculum = s.K(pr), LoraRank = pr.GetValue(s.LoraRank),
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

    static RecurrenceMode ParseMode(string m) => m.Trim().ToLowerInvariant() switch
    {
        "append" => RecurrenceMode.Append,
        "depth" => RecurrenceMode.Depth,
        _ => throw new UserError($"--mode '{m}': expected append or depth"),
    };
}
