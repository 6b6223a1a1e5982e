using System.CommandLine;
using LatentLab.Methods.Shortcut;
using Spectre.Console;

namespace LatentLab.Cli;

/// <summary>`shortcut study`: all phases in one resumable run, ending with the no-go table.</summary>
public static class ShortcutStudyCommands
{
    public static Command Study()
    {
        var model = new Option<string>("--teacher", "--model") { Description = "model folder (the char teacher, or a HF checkpoint with a thinking template)", DefaultValueFactory = _ => "runs/teacher/model" };
        var task = new Option<string>("--task") { DefaultValueFactory = _ => "addition" };
        var difficulty = new Option<int?>("--difficulty", "--digits");
        var trainN = new Option<int>("--train-problems") { DefaultValueFactory = _ => new ShortcutStudyOptions { ModelDir = "" }.TrainProblems };
        var testN = new Option<int>("--test-problems") { DefaultValueFactory = _ => new ShortcutStudyOptions { ModelDir = "" }.TestProblems };
        var point = new Option<string>("--point") { DefaultValueFactory = _ => new ShortcutStudyOptions { ModelDir = "" }.Point };
        var k = new Option<int>("--k") { DefaultValueFactory = _ => 1 };
        var predictorSteps = new Option<long>("--predictor-steps") { DefaultValueFactory = _ => new ShortcutStudyOptions { ModelDir = "" }.Predictor.Steps };
        var armSteps = new Option<int>("--arm-steps") { Description = "training budget of the distillation, soft-token and LoRA arms", DefaultValueFactory = _ => new ShortcutEvalOptions().TrainSteps };
        var kvLambda = new Option<double>("--kv-lambda") { Description = "weight of the cache-matching term in the KV-prefix predictors' loss", DefaultValueFactory = _ => new ShortcutEvalOptions().KvLambda };
        var noSearch = new Option<bool>("--no-search") { Description = "skip the configuration search: use --point, --k and the MLP predictor as given" };
        var searchPoints = new Option<string>("--search-points") { Description = "comma-separated hook points the search tries", DefaultValueFactory = _ => string.Join(",", new ConfigSearchOptions().Points) };
        var searchSteps = new Option<long>("--search-steps") { Description = "training steps of each candidate predictor in the search", DefaultValueFactory = _ => new ConfigSearchOptions().Steps };
        var ignoreGate = new Option<bool>("--ignore-gate") { Description = "run the injection arms even if the promotion gate fails" };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/shortcut" };
        var device = CliSupport.DeviceOption();
        var compute = CliSupport.ComputeOption();
        var cmd = new Command("study", "All phases: extract, train the predictor, gate, injection arms, causal tests, and the no-go report")
            { model, task, difficulty, trainN, testN, point, k, predictorSteps, armSteps, kvLambda, noSearch, searchPoints, searchSteps, ignoreGate, seed, output, device, compute };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var path = pr.GetValue(model)!;
            var o = new ShortcutStudyOptions
            {
                ModelDir = CliSupport.ModelDir(path),
                Task = pr.GetValue(task)!, Difficulty = pr.GetValue(difficulty), TrainProblems = pr.GetValue(trainN),
                TestProblems = pr.GetValue(testN), Point = pr.GetValue(point)!, K = pr.GetValue(k), IgnoreGate = pr.GetValue(ignoreGate),
                Seed = pr.GetValue(seed), OutDir = pr.GetValue(output)!, Device = pr.GetValue(device)!, Compute = pr.GetValue(compute)!,
            };
            o = o with
            {
                Predictor = o.Predictor with { Steps = pr.GetValue(predictorSteps) },
                Eval = o.Eval with { TrainSteps = pr.GetValue(armSteps), KvLambda = pr.GetValue(kvLambda) },
                Search = o.Search with
                {
                    Enabled = !pr.GetValue(noSearch), Steps = pr.GetValue(searchSteps),
                    Points = pr.GetValue(searchPoints)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                },
            };
            var report = ShortcutStudy.Run(o, ConsoleLog.Instance);
            PrintNoGo(report);
            return 0;
        }));
        return cmd;
    }

    public static void PrintNoGo(ShortcutStudyReport r)
    {
        var table = new Table().AddColumns("no-go criterion", "evidence", "rule", "status");
        foreach (var x in r.NoGo)
        {
            var colour = x.Pass switch { true => "green", false => "red", null => "grey" };
            table.AddRow(Markup.Escape(x.Criterion), Markup.Escape(x.Evidence), Markup.Escape(x.Rule), $"[{colour}]{x.Status}[/]");
        }
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine(r.Accepted ? "[green]shortcut accepted[/]" : "[red]shortcut not accepted[/] (a negative result is a result: see the report)");
        AnsiConsole.MarkupLine($"report: {Markup.Escape(r.ReportPath)}");
    }
}
