using System.CommandLine;
using LatentLab.Methods.Shortcut;
using Spectre.Console;

namespace LatentLab.Cli;

/// <summary>`shortcut eval`: Phases 2 and 3 on stores and a trained predictor (or the oracle / mean controls).</summary>
public static class ShortcutEvalCommands
{
    public static Command Eval()
    {
        var model = new Option<string>("--teacher", "--model") { Description = "the model the stores were extracted from", DefaultValueFactory = _ => "runs/teacher/model" };
        var task = new Option<string>("--task") { DefaultValueFactory = _ => "addition" };
        var train = new Option<string>("--train") { Description = "training latent store", Required = true };
        var test = new Option<string>("--test") { Description = "test latent store", Required = true };
        var predictor = new Option<string>("--predictor")
        {
            Description = "a predictor folder written by shortcut train (…/predictor), or 'oracle' (injects the true h_post: the upper bound) or 'mean' (the mean train h_post: must fail)",
            Required = true,
        };
        var armSteps = new Option<int>("--arm-steps") { DefaultValueFactory = _ => new ShortcutEvalOptions().TrainSteps };
        var phase3 = new Option<int>("--phase3-problems") { DefaultValueFactory = _ => new ShortcutEvalOptions().Phase3Problems };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/shortcut-eval" };
        var device = CliSupport.DeviceOption();
        var compute = CliSupport.ComputeOption();
        var cmd = new Command("eval", "Phases 2 and 3: injection arms at matched compute, scale sweeps, edits, interventions, length, lexical and separability tests")
            { model, task, train, test, predictor, armSteps, phase3, seed, output, device, compute };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var path = pr.GetValue(model)!;
            var modelDir = CliSupport.ModelDir(path);
            var fmt = LatentLab.Teacher.TraceFormat.ForModel(modelDir, LatentLab.Tasks.TaskRegistry.Get(pr.GetValue(task)!));
            using var teacher = LatentLab.Models.Checkpoints.Load(modelDir, device: LatentLab.Tensors.TorchRuntime.ParseDevice(pr.GetValue(device)!));
            LatentLab.Tensors.ComputePolicy.Apply(pr.GetValue(compute)!, teacher, null, Console.Out);
            var trainStore = LatentLab.Latents.LatentStore.Open(pr.GetValue(train)!, teacher, fmt.Tokenizer);
            var testStore = LatentLab.Latents.LatentStore.Open(pr.GetValue(test)!, teacher, fmt.Tokenizer);
            using var preTrain = trainStore.Pre(dtype: TorchSharp.torch.ScalarType.Float32);
            using var postTrain = trainStore.Post(dtype: TorchSharp.torch.ScalarType.Float32);
            using var preTest = testStore.Pre(dtype: TorchSharp.torch.ScalarType.Float32);
            using var postTest = testStore.Post(dtype: TorchSharp.torch.ScalarType.Float32);
            var name = pr.GetValue(predictor)!;
            ILatentPredictor q = name switch
            {
                "oracle" => new OraclePredictor(TorchSharp.torch.cat(new[] { preTrain, preTest }), TorchSharp.torch.cat(new[] { postTrain, postTest })),
                "mean" => new MeanPredictor(postTrain),
                _ => LatentPredictor.Load(Directory.Exists(Path.Combine(name, "predictor")) ? Path.Combine(name, "predictor") : name),
            };
            var o = new ShortcutEvalOptions { Point = trainStore.Point, TrainSteps = pr.GetValue(armSteps), Phase3Problems = pr.GetValue(phase3), Seed = pr.GetValue(seed) };
            var report = ShortcutEvaluation.Run(teacher, fmt, q, trainStore.Samples(), preTrain, postTrain, testStore.Samples(), preTest, postTest,
                o, pr.GetValue(output)!, ConsoleLog.Instance, name);
            var table = new Table().AddColumns("arm", "verified accuracy [[Wilson 95%]]", "FLOPs / answer");
            foreach (var a in report.Arms)
                table.AddRow(Markup.Escape(a.Name), Markup.Escape(a.Accuracy?.ToString() ?? "not run: " + a.NotRunReason), a.Flops > 0 ? a.Flops.ToString("G3") : "-");
            AnsiConsole.Write(table);
            AnsiConsole.MarkupLine($"report: {Markup.Escape(Path.Combine(pr.GetValue(output)!, "report.md"))}");
            if (q is IDisposable d) d.Dispose();
            return 0;
        }));
        return cmd;
    }
}
