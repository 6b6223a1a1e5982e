using System.CommandLine;
using LatentLab.Tasks;
using Spectre.Console;

namespace LatentLab.Cli;

/// <summary>`tasks list`, `tasks sample`, `data check`: see exactly what models are trained and tested on.</summary>
public static class TaskCommands
{
    public static IEnumerable<Command> Create() => new[] { Tasks(), Data() };

    static Command Tasks()
    {
        var list = new Command("list", "List the task families with their difficulty knobs");
        list.SetAction(pr => CliSupport.Run(() =>
        {
            var table = new Table().AddColumns("family", "difficulty knob", "default", "range", "what it does");
            foreach (var f in TaskRegistry.All)
                table.AddRow(Markup.Escape(f.Name), Markup.Escape($"{f.Difficulty.Name}: {f.Difficulty.Meaning}"),
                    f.Difficulty.Default.ToString(), $"{f.Difficulty.Min}..{f.Difficulty.Max}", Markup.Escape(f.Description));
            AnsiConsole.Write(table);
            return 0;
        }));

        var task = new Option<string>("--task") { Description = "family name (see tasks list); cfg:noise=0.1 sets CFG noise", Required = true };
        var n = new Option<int>("--n") { DefaultValueFactory = _ => 10 };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 1 };
        var difficulty = new Option<int?>("--difficulty") { Description = "length knob (default: the family's)" };
        var split = new Option<string>("--split") { Description = "train, validation or test", DefaultValueFactory = _ => "test" };
        var edit = new Option<string?>("--edit") { Description = "counterfactual, nuisance, paraphrase or rename: print each problem with its edited twin" };
        var format = new Option<string>("--format") { Description = "jsonl or text", DefaultValueFactory = _ => "text" };
        var sample = new Command("sample", "Print problems with prompt, steps, answer and intermediates") { task, n, seed, difficulty, split, edit, format };
        sample.SetAction(pr => CliSupport.Run(() =>
        {
            var family = TaskRegistry.Get(pr.GetValue(task)!);
            int d = pr.GetValue(difficulty) ?? family.Difficulty.Default;
            if (d < family.Difficulty.Min || d > family.Difficulty.Max)
                throw new UserError($"{family.Name}: {family.Difficulty.Name} must be in {family.Difficulty.Min}..{family.Difficulty.Max}");
            var sp = pr.GetValue(split)!.ToLowerInvariant() switch
            {
                "train" => Split.Train,
                "validation" or "val" => Split.Validation,
                "test" => Split.Test,
                var s => throw new UserError($"unknown split '{s}': use train, validation or test"),
            };
            var fmt = pr.GetValue(format)!;
            if (fmt is not ("jsonl" or "text")) throw new UserError($"unknown format '{fmt}': use jsonl or text");
            var problems = TaskSplits.Generate(family, sp, pr.GetValue(n), d, pr.GetValue(seed));
            if (pr.GetValue(edit) is { } e)
            {
                var kind = Enum.TryParse<EditKind>(e, ignoreCase: true, out var k) ? k
                    : throw new UserError($"unknown edit '{e}': use counterfactual, nuisance, paraphrase or rename");
                var edits = problems.Select((p, i) => family.Edit(p, kind, pr.GetValue(seed) * 1000 + i)).ToList();
                Console.Write(fmt == "jsonl" ? TaskSampleFormatter.ToJsonl(edits) : string.Join("\n", edits.Select(TaskSampleFormatter.ToText)));
            }
            else
                Console.Write(fmt == "jsonl" ? TaskSampleFormatter.ToJsonl(problems) : string.Join("\n", problems.Select(TaskSampleFormatter.ToText)));
            return 0;
        }));
        return new Command("tasks", "Synthetic reasoning task families with exact verifiers") { list, sample };
    }

    static Command Data()
    {
        var file = new Argument<string>("file") { Description = "a dataset file (jsonl, json or parquet)" };
        var format = new Option<string>("--format") { Description = "gsm8k, math or bigmath", Required = true };
        var check = new Command("check", "Parse a whole dataset file and report rows, malformed lines and unreadable answers") { file, format };
        check.SetAction(pr => CliSupport.Run(() =>
        {
            var report = DataCheck.Run(pr.GetValue(file)!, pr.GetValue(format)!);
            Console.Write(report.ToText());
            return report.Clean ? 0 : 3;
        }));
        return new Command("data", "Real dataset files (GSM8K, MATH, Big-Math)") { check };
    }
}
