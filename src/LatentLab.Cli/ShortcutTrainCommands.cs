using System.CommandLine;
using LatentLab.Latents;
using LatentLab.Methods.Shortcut;
using LatentLab.Tasks;
using LatentLab.Tensors;
using Spectre.Console;
using static TorchSharp.torch;

namespace LatentLab.Cli;

/// <summary>`shortcut train`: Phase 1 of the latent shortcut study (predictor, diagnostics, promotion gate) on Phase 0 stores.</summary>
public static class ShortcutTrainCommands
{
    public static Command Train()
    {
        var train = new Option<string>("--train") { Description = "latent store to train on (verified rows)", Required = true };
        var test = new Option<string>("--test") { Description = "latent store to measure on (verified rows)", Required = true };
        var paraphrase = new Option<string?>("--paraphrase")
            { Description = "store of paraphrased twins: row i (all rows) is the twin of --test's row i (all rows)" };
        var rename = new Option<string?>("--rename") { Description = "store of renamed twins, aligned with --test like --paraphrase" };
        var config = new Option<string?>("--config") { Description = "predictor config JSON (snake_case keys); flags given on the command line override it" };
        var kind = new Option<PredictorKind?>("--kind") { Description = "mlp or transformer" };
        var hidden = new Option<int?>("--hidden");
        var layers = new Option<int?>("--layers");
        var heads = new Option<int?>("--heads");
        var loss = new Option<PredictorLoss?>("--loss") { Description = "cosine, mse or smoothl1" };
        var varW = new Option<double?>("--var-weight") { Description = "VICReg variance weight" };
        var covW = new Option<double?>("--cov-weight") { Description = "VICReg covariance weight" };
        var projDim = new Option<int?>("--projector-dim") { Description = "0 = no projector" };
        var ema = new Option<bool?>("--ema-projector") { Description = "EMA target projector (needs --projector-dim)" };
        var emaM = new Option<double?>("--ema-momentum");
        var steps = new Option<long?>("--steps");
        var batch = new Option<int?>("--batch");
        var lr = new Option<double?>("--lr");
        var seed = new Option<long?>("--seed");
        var standardize = new Option<bool?>("--standardize") { Description = "per-dimension standardisation from the train set (default true)" };
        var minTop5 = new Option<double>("--min-top5") { DefaultValueFactory = _ => new PromotionGate().MinTop5 };
        var minOverChance = new Option<double>("--min-top5-over-chance") { DefaultValueFactory = _ => new PromotionGate().MinTop5OverChance };
        var maxPara = new Option<double>("--max-paraphrase-ratio") { DefaultValueFactory = _ => new PromotionGate().MaxParaphraseRatio };
        var maxRename = new Option<double>("--max-rename-ratio") { DefaultValueFactory = _ => new PromotionGate().MaxRenameRatio };
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/shortcut-predictor" };
        var threads = CliSupport.ThreadsOption();

        var cmd = new Command("train", "Phase 1: train q(h_pre) → ĥ_post on a latent store, measure retrieval, probes, stability and collapse, " +
            "and decide the promotion gate (report.md in the run folder; resumes if killed)")
        {
            train, test, paraphrase, rename, config, kind, hidden, layers, heads, loss, varW, covW, projDim, ema, emaM,
            steps, batch, lr, seed, standardize, minTop5, minOverChance, maxPara, maxRename, output, threads,
        };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            TorchRuntime.Initialize(pr.GetValue(threads));
            var trainStore = LatentStore.Open(pr.GetValue(train)!);
            var testStore = LatentStore.Open(pr.GetValue(test)!);
            if (trainStore.HiddenSize != testStore.HiddenSize || trainStore.K != testStore.K || trainStore.Point != testStore.Point)
                throw new UserError($"--train ({trainStore.Point}, K {trainStore.K}, D {trainStore.HiddenSize}) and --test " +
                    $"({testStore.Point}, K {testStore.K}, D {testStore.HiddenSize}) hold different kinds of states");

            var cfgPath = pr.GetValue(config);
            var cfg = cfgPath is null ? new PredictorConfig()
                : PredictorConfig.FromJson(File.Exists(cfgPath) ? File.ReadAllText(cfgPath) : throw new FileNotFoundException($"config not found: {cfgPath}", cfgPath), cfgPath);
            cfg = cfg with
            {
                K = trainStore.K,
                Kind = pr.GetValue(kind) ?? cfg.Kind, Hidden = pr.GetValue(hidden) ?? cfg.Hidden, Layers = pr.GetValue(layers) ?? cfg.Layers,
                Heads = pr.GetValue(heads) ?? cfg.Heads, Loss = pr.GetValue(loss) ?? cfg.Loss, VarWeight = pr.GetValue(varW) ?? cfg.VarWeight,
                CovWeight = pr.GetValue(covW) ?? cfg.CovWeight, ProjectorDim = pr.GetValue(projDim) ?? cfg.ProjectorDim,
                EmaProjector = pr.GetValue(ema) ?? cfg.EmaProjector, EmaMomentum = pr.GetValue(emaM) ?? cfg.EmaMomentum,
                Steps = pr.GetValue(steps) ?? cfg.Steps, BatchSize = pr.GetValue(batch) ?? cfg.BatchSize,
                LearningRate = pr.GetValue(lr) ?? cfg.LearningRate, Seed = pr.GetValue(seed) ?? cfg.Seed,
                Standardize = pr.GetValue(standardize) ?? cfg.Standardize,
            };

            var twins = new List<TwinSet>();
            foreach (var (opt, editKind) in new[] { (paraphrase, EditKind.Paraphrase), (rename, EditKind.Rename) })
            {
                var path = pr.GetValue(opt);
                if (path is null) continue;
                var twinStore = LatentStore.Open(path);
                // h_pre does not depend on whether the teacher later got the answer right, so all rows pair up.
                var original = testStore.Pre(verifiedOnly: false, ScalarType.Float32);
                var edited = twinStore.Pre(verifiedOnly: false, ScalarType.Float32);
                if (!original.shape.SequenceEqual(edited.shape))
                    throw new UserError($"{path}: {edited.shape[0]} rows of size {edited.shape[1]}, but --test has {original.shape[0]} of size {original.shape[1]}; a twin store must be row-aligned with --test");
                twins.Add(new TwinSet(editKind, original, edited));
            }

            var data = new PredictorData(
                trainStore.Pre(dtype: ScalarType.Float32), trainStore.Post(dtype: ScalarType.Float32), trainStore.Samples(),
                testStore.Pre(dtype: ScalarType.Float32), testStore.Post(dtype: ScalarType.Float32), testStore.Samples(), twins);
            var gate = new PromotionGate
            {
                MinTop5 = pr.GetValue(minTop5), MinTop5OverChance = pr.GetValue(minOverChance),
                MaxParaphraseRatio = pr.GetValue(maxPara), MaxRenameRatio = pr.GetValue(maxRename),
            };
            var report = PredictorPromotion.Run(data, cfg, pr.GetValue(output)!, new DiagnosticsOptions { Gate = gate, Seed = cfg.Seed },
                log: ConsoleLog.Instance, progressBar: null);

            var d = report.Diagnostics;
            AnsiConsole.MarkupLine($"cosine {d.MeanCosine:F3} (standardised), top-1 {Markup.Escape(d.Top1.ToString())}, top-5 {Markup.Escape(d.Top5.ToString())}");
            foreach (var c in d.Gate.Criteria)
                AnsiConsole.MarkupLine($"  {Markup.Escape(c.Name)}: {c.Value:G3} {Markup.Escape(c.Comparison)} {c.Threshold:G3} → {c.Status.ToString().ToUpperInvariant()}");
            AnsiConsole.MarkupLine(d.Gate.Pass ? "[green]gate PASS[/]: " + Markup.Escape(d.Gate.Reason) : "[red]gate FAIL[/]: " + Markup.Escape(d.Gate.Reason));
            AnsiConsole.MarkupLine($"report: {Markup.Escape(report.ReportPath)}");
            return 0;
        }));
        return cmd;
    }
}
