using System.CommandLine;
using System.Diagnostics;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Text;
using Spectre.Console;

namespace LatentLab.Cli;

/// <summary>`teacher train`, `teacher eval` and `demo`: a model that thinks in visible traces, trained here.</summary>
public static class TeacherCommands
{
    public static IEnumerable<Command> Create() => new[] { Teacher(), Demo() };

    static Command Teacher()
    {
        var task = new Option<string>("--task") { Description = "task family (see tasks list)", DefaultValueFactory = _ => "addition" };
        var digits = new Option<int?>("--digits", "--difficulty") { Description = "training length (digits for addition; the family's knob otherwise)" };
        var steps = new Option<long>("--steps") { DefaultValueFactory = _ => new TeacherOptions().Steps };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => new TeacherOptions().BatchSize };
        var lr = new Option<double>("--lr") { DefaultValueFactory = _ => new TeacherOptions().LearningRate };
        var hidden = new Option<int>("--hidden") { DefaultValueFactory = _ => new TeacherOptions().Hidden };
        var layers = new Option<int>("--layers") { DefaultValueFactory = _ => new TeacherOptions().Layers };
        var compute = CliSupport.ComputeOption();
        var evalN = new Option<int>("--eval-problems") { DefaultValueFactory = _ => new TeacherOptions().EvalProblems };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/teacher" };
        var device = CliSupport.DeviceOption();
        var slots = new Option<int>("--bottleneck") { Description = "latent slots of the bottleneck trace format (0: full traces only)", DefaultValueFactory = _ => 0 };
        var slotShare = new Option<double>("--bottleneck-fraction") { Description = "share of the thinking traces in bottleneck form", DefaultValueFactory = _ => new TeacherOptions().BottleneckFraction };
        var train = new Command("train", "Train a character-level teacher from scratch on a task's thinking and direct traces (resumes if killed)")
            { task, digits, steps, batch, lr, hidden, layers, compute, evalN, seed, output, device, slots, slotShare };
        train.SetAction(pr => CliSupport.Run(() =>
        {
            var o = new TeacherOptions
            {
                Task = pr.GetValue(task)!, Difficulty = pr.GetValue(digits), Steps = pr.GetValue(steps), BatchSize = pr.GetValue(batch),
                LearningRate = pr.GetValue(lr), Hidden = pr.GetValue(hidden), Layers = pr.GetValue(layers), Compute = pr.GetValue(compute)!,
                EvalProblems = pr.GetValue(evalN), Seed = pr.GetValue(seed), OutDir = pr.GetValue(output)!,
                Device = pr.GetValue(device)!, BottleneckSlots = pr.GetValue(slots), BottleneckFraction = pr.GetValue(slotShare),
            };
            var report = TeacherTraining.Train(o, ConsoleLog.Instance);
            PrintReport(report);
            return 0;
        }));

        var dir = new Argument<string>("dir") { Description = "a teacher run folder (with model/) or a model folder", DefaultValueFactory = _ => "runs/teacher" };
        var evalTask = new Option<string>("--task") { DefaultValueFactory = _ => "addition" };
        var evalDigits = new Option<int?>("--digits", "--difficulty") { Description = "in-distribution length (default: the family's)" };
        var evalProblems = new Option<int>("--n") { DefaultValueFactory = _ => 500 };
        var ood = new Option<int>("--ood") { Description = "longer lengths to test beyond --digits", DefaultValueFactory = _ => 2 };
        var evalSeed = new Option<long>("--seed") { DefaultValueFactory = _ => 0 };
        var evalDevice = CliSupport.DeviceOption();
        var eval = new Command("eval", "Verified accuracy with and without thinking, in distribution and on longer OOD problems (Wilson 95%)")
            { dir, evalTask, evalDigits, evalProblems, ood, evalSeed, evalDevice };
        eval.SetAction(pr => CliSupport.Run(() =>
        {
            var path = pr.GetValue(dir)!;
            var modelDir = CliSupport.ModelDir(path);
            var family = TaskRegistry.Get(pr.GetValue(evalTask)!);
            if (TokenizerLoader.TryLoadFromDirectory(modelDir) is null) throw new UserError($"{modelDir} has no tokenizer.json");
            var fmt = TeacherFormat.ForModel(modelDir, family);
            using var model = Checkpoints.Load(modelDir, device: LatentLab.Tensors.TorchRuntime.ParseDevice(pr.GetValue(evalDevice)!));
            var sw = Stopwatch.StartNew();
            var cells = TeacherTraining.Evaluate(model, fmt, pr.GetValue(evalDigits) ?? family.Difficulty.Default, pr.GetValue(evalProblems), pr.GetValue(ood), pr.GetValue(evalSeed));
            PrintCells(cells);
            Console.WriteLine($"evaluated in {sw.Elapsed.TotalSeconds:F0} s");
            return 0;
        }));
        return new Command("teacher", "A small teacher that reasons in visible <think> traces") { train, eval };
    }

    static Command Demo()
    {
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/demo" };
        var steps = new Option<long>("--steps") { Description = "teacher training steps", DefaultValueFactory = _ => new TeacherOptions().Steps };
        var demoDevice = CliSupport.DeviceOption();
        var teacherOnly = new Option<bool>("--teacher-only") { Description = "stop after the teacher (skip the latent shortcut study)" };
        var demoCompute = CliSupport.ComputeOption();
        var demoSlots = new Option<int>("--bottleneck") { Description = "latent slots of the teacher's bottleneck traces (0: full traces only)", DefaultValueFactory = _ => DemoSlots };
        var demoHidden = new Option<int>("--hidden") { Description = "teacher width", DefaultValueFactory = _ => new TeacherOptions().Hidden };
        var demoLayers = new Option<int>("--layers") { Description = "teacher layers", DefaultValueFactory = _ => new TeacherOptions().Layers };
        var cmd = new Command("demo", "The main job: train a teacher on 4-digit addition, then run the latent shortcut study on it and print the no-go table")
            { output, steps, demoHidden, demoLayers, demoDevice, teacherOnly, demoCompute, demoSlots };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var sw = Stopwatch.StartNew();
            var o = new TeacherOptions
            {
                OutDir = Path.Combine(pr.GetValue(output)!, "teacher"), Steps = pr.GetValue(steps), Device = pr.GetValue(demoDevice)!,
                Hidden = pr.GetValue(demoHidden), Layers = pr.GetValue(demoLayers),
                Compute = pr.GetValue(demoCompute)!, BottleneckSlots = pr.GetValue(demoSlots),
            };
            AnsiConsole.MarkupLine($"[bold]LatentLab demo[/]: training a {o.Layers}-layer d={o.Hidden} teacher on {o.Task} ({o.Steps} steps), then grading it.");
            var report = TeacherTraining.Train(o, ConsoleLog.Instance);
            PrintReport(report);
            if (!pr.GetValue(teacherOnly))
            {
                AnsiConsole.MarkupLine("[bold]Latent shortcut study[/]: can a predictor of the post-thinking state replace the trace?");
                var study = LatentLab.Methods.Shortcut.ShortcutStudy.Run(new LatentLab.Methods.Shortcut.ShortcutStudyOptions
                {
                    ModelDir = report.ModelDir, Task = o.Task, OutDir = Path.Combine(pr.GetValue(output)!, "shortcut"), Device = o.Device,
                    Compute = o.Compute, IgnoreGate = true, // the demo computes every no-go row, past a failed gate if need be
                }, ConsoleLog.Instance);
                ShortcutStudyCommands.PrintNoGo(study);
            }
            AnsiConsole.MarkupLine($"[bold]demo finished in {sw.Elapsed.TotalSeconds:F0} s[/]; run folder: {Markup.Escape(Path.GetFullPath(pr.GetValue(output)!))}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>The demo teacher's bottleneck: 4 slots, one per digit of a 4-digit sum (the fifth, a carry, shares them).</summary>
    public const int DemoSlots = 4;

    static void PrintReport(TeacherReport r)
    {
        PrintCells(r.Cells);
        Console.WriteLine($"trained {r.Steps} steps in {r.TrainSeconds:F0} s (final loss {r.FinalLoss:F4}); evaluated in {r.EvalSeconds:F0} s");
        Console.WriteLine($"model: {r.ModelDir}");
        Console.WriteLine($"report: {Path.Combine(r.RunDir, "report.md")}");
    }

    static void PrintCells(IReadOnlyList<ModeAccuracy> cells)
    {
        var table = new Table().AddColumns("test set", "difficulty", "mode", "verified accuracy [[Wilson 95%]]", "tokens/answer");
        foreach (var c in cells)
            table.AddRow(Markup.Escape(c.Set), c.Difficulty.ToString(), c.Mode,
                Markup.Escape(c.Accuracy.ToString()), c.MeanGeneratedTokens.ToString("F1"));
        AnsiConsole.Write(table);
    }
}
