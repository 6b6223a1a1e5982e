using System.CommandLine;
using System.Diagnostics;
using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using Spectre.Console;

namespace LatentLab.Cli;

/// <summary>`shortcut extract` and `shortcut merge`: Phase 0 of the shortcut study, the latent store of (h_pre, h_post) targets.</summary>
public static class ShortcutExtractCommands
{
    public static Command Extract()
    {
        var teacher = new Option<string>("--teacher", "--model")
        {
            Description = "model folder (Hugging Face layout: the char teacher or a Qwen3/Gemma checkpoint), or a teacher run folder with model/",
            DefaultValueFactory = _ => "runs/teacher/model",
        };
        var task = new Option<string>("--task") { Description = "task family (see tasks list)", DefaultValueFactory = _ => "addition" };
        var difficulty = new Option<int?>("--difficulty", "--digits") { Description = "difficulty knob (default: the family's)" };
        var split = new Option<string>("--split") { Description = "train, validation or test", DefaultValueFactory = _ => "train" };
        var n = new Option<int>("--n") { Description = "problems", DefaultValueFactory = _ => 2000 };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0 };
        var point = new Option<string>("--point") { Description = "hook point (blocks.{i}.resid_post, ...; negative i counts from the end)", DefaultValueFactory = _ => new ExtractionOptions().Point };
        var k = new Option<int>("--k") { Description = "post states ending at the </think> boundary", DefaultValueFactory = _ => 1 };
        var dtype = new Option<string>("--dtype") { Description = "stored dtype: f32, bf16 or f16", DefaultValueFactory = _ => "f32" };
        var compute = CliSupport.ComputeOption();
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => new ExtractionOptions().BatchSize };
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/latents/train" };
        var shard = new Option<string>("--shard") { Description = "extract only slice i of N of the problems (i/N); join the outputs with shortcut merge", DefaultValueFactory = _ => "0/1" };
        var trace = new Option<string>("--trace") { Description = "own (the teacher's greedy trace) or reference (the task's steps, teacher-forced to </think>)", DefaultValueFactory = _ => "own" };
        var rowsPerFile = new Option<int>("--rows-per-file") { Description = "problems per safetensors file (the unit of resuming)", DefaultValueFactory = _ => new ExtractionOptions().RowsPerFile };
        var maxNew = new Option<int?>("--max-new-tokens") { Description = "generation budget per trace (default: the reference length + 16)" };
        var edit = new Option<string?>("--edit")
        {
            Description = "paraphrase or rename: store the edited twin of each problem instead (row-aligned with the same command " +
                          "without --edit; uses reference traces so no row is skipped), for shortcut train --paraphrase/--rename",
        };
        var device = CliSupport.DeviceOption();
        var threads = CliSupport.ThreadsOption();

        var cmd = new Command("extract", "Run the teacher on a task and store h_pre (last prompt token) and h_post (</think> boundary) for every problem; resumes if killed")
            { teacher, task, difficulty, split, n, seed, point, k, dtype, compute, batch, output, shard, trace, rowsPerFile, maxNew, edit, device, threads };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var path = pr.GetValue(teacher)!;
            var modelDir = CliSupport.ModelDir(path);
            var family = TaskRegistry.Get(pr.GetValue(task)!);
            int diff = pr.GetValue(difficulty) ?? family.Difficulty.Default;
            var splitName = pr.GetValue(split)!;
            var splitValue = Enum.TryParse<Split>(splitName, ignoreCase: true, out var sv) ? sv : throw new UserError($"unknown split '{splitName}': use train, validation or test");
            int count = pr.GetValue(n);
            long s = pr.GetValue(seed);
            var traceName = pr.GetValue(trace)!;
            var traceValue = Enum.TryParse<TraceMode>(traceName, ignoreCase: true, out var tv) ? tv : throw new UserError($"unknown trace '{traceName}': use own or reference");
            EditKind? editKind = pr.GetValue(edit) switch
            {
                null => null,
                "paraphrase" => EditKind.Paraphrase,
                "rename" => EditKind.Rename,
                var e => throw new UserError($"unknown edit '{e}': use paraphrase or rename"),
            };
            if (editKind is not null) traceValue = TraceMode.Reference;
            var o = new ExtractionOptions
            {
                Point = pr.GetValue(point)!, K = pr.GetValue(k), DType = pr.GetValue(dtype)!, Compute = pr.GetValue(compute),
                BatchSize = pr.GetValue(batch), Trace = traceValue, RowsPerFile = pr.GetValue(rowsPerFile), MaxNewTokens = pr.GetValue(maxNew),
                Shard = ShardSpec.Parse(pr.GetValue(shard)!),
                Source = new TaskSource(family.Name, diff, splitValue.ToString().ToLowerInvariant(), s, count),
            };
            o.Validate();
            var outDir = pr.GetValue(output)!;

            TorchRuntime.Initialize(pr.GetValue(threads));
            var fmt = TraceFormat.ForModel(modelDir, family);
            using var model = Checkpoints.Load(modelDir, device: TorchRuntime.ParseDevice(pr.GetValue(device)!));
            var problems = TaskSplits.Generate(family, splitValue, count, diff, s);
            if (editKind is { } ek)
            {
                var edits = problems.Select((p, i) => family.Edit(p, ek, s * 7919 + i)).ToList();
                if (edits.FirstOrDefault(e => !e.Supported) is { } unsupported)
                    throw new UserError($"{family.Name} cannot make a {ek.ToString().ToLowerInvariant()} twin: {unsupported.Description}");
                problems = edits.Select(e => e.Edited).ToList();
            }
            var (start, end) = o.Shard.Range(problems.Count);
            Console.WriteLine($"extracting {o.Point} (K={o.K}, {o.DType}) from {modelDir} ({fmt.Chat.Family} format) on {end - start} {splitValue.ToString().ToLowerInvariant()} " +
                $"problems of {family.Name} (difficulty {diff}, shard {o.Shard}), {o.Trace.ToString().ToLowerInvariant()} traces → {outDir}");

            var sw = Stopwatch.StartNew();
            var manifest = WithProgress(end - start, report => LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o, outDir, report));
            Console.WriteLine($"{manifest.Rows} rows ({manifest.Verified} verified, {manifest.Skipped.Count} skipped) in {sw.Elapsed.TotalSeconds:F1} s; " +
                $"store: {Path.GetFullPath(outDir)}");
            return 0;
        }));
        return cmd;
    }

    public static Command Merge()
    {
        var output = new Argument<string>("out") { Description = "new (or empty) folder for the merged store" };
        var inputs = new Argument<string[]>("inputs") { Description = "stores written by extract --shard i/N", Arity = ArgumentArity.OneOrMore };
        var cmd = new Command("merge", "Join the stores of sharded extract jobs into one store") { output, inputs };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            TorchRuntime.Initialize();
            var m = LatentStore.Merge(pr.GetValue(output)!, pr.GetValue(inputs)!);
            Console.WriteLine($"merged shards {string.Join(", ", m.Shards)}: {m.Rows} rows ({m.Verified} verified, {m.Skipped.Count} skipped) → {Path.GetFullPath(pr.GetValue(output)!)}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>A progress bar on a terminal (<see cref="ConsoleLog"/>), one plain line per written file otherwise; notes (a damaged file) are always lines.</summary>
    static LatentManifest WithProgress(int total, Func<Action<ExtractionProgress>, LatentManifest> body) =>
        ConsoleLog.Instance.WithProgress("extract", total, 0, bar => body(p =>
        {
            if (p.Note is not null) ConsoleLog.Instance.WriteLine($"{(p.Stage == "damaged" ? "warning" : p.Stage)}: {p.Note}");
            else if (bar is not null) bar(p.Done, $"{p.Stage} {p.Done}/{p.Total} ({p.Verified} verified)");
            else if (p.Stage != "traces") Console.WriteLine($"{p.Stage}: {p.Done}/{p.Total} problems, {p.Verified} verified, {p.Skipped} skipped");
        }));
}
