using System.CommandLine;
using System.Globalization;
using LatentLab.Training;
using LatentLab.Methods.JepaReasoner;

namespace LatentLab.Cli;

/// <summary>
/// `reasoner pretrain | sst | talker | baseline` (one phase each, resumable) and
/// `reasoner experiment tree-search | cfg-noise | cfg-slips | gsm8k` (all phases, then the evaluation and report).
/// </summary>
public static class ReasonerCommands
{
    public static IEnumerable<Command> Create() => new[] { Reasoner() };

    /// <summary>Options shared by every reasoner command; each is optional and overrides the command's defaults only when given.</summary>
    sealed class Shared
    {
        public readonly Option<string?> Task = new("--task") { Description = "task family (see `tasks list`) or gsm8k" };
        public readonly Option<int?> Difficulty = new("--difficulty") { Description = "the family's difficulty knob (tree: depth; cfg: prefix length)" };
        public readonly Option<int?> TrainMinDifficulty = new("--train-min-difficulty") { Description = "curriculum: train on every difficulty from this up to --difficulty (tests stay at --difficulty)" };
        public readonly Option<string?> Train = new("--train") { Description = "GSM8K-format jsonl for task gsm8k" };
        public readonly Option<int?> HoldOut = new("--hold-out") { Description = "gsm8k: examples at the end of --train kept out of training" };
        public readonly Option<int?> Hidden = new("--hidden") { Description = "Reasoner width" };
        public readonly Option<int?> Layers = new("--layers") { Description = "Reasoner layers" };
        public readonly Option<int?> Heads = new("--heads") { Description = "Reasoner attention heads" };
        public readonly Option<string?> Talker = new("--talker") { Description = "mono (decoder reading the chain as a prefix) or dual (encoder + cross-attention decoder); tree-search and cfg-noise train and report both" };
        public readonly Option<int?> TalkerHidden = new("--talker-hidden") { Description = "Talker width" };
        public readonly Option<int?> TalkerLayers = new("--talker-layers") { Description = "Talker decoder layers" };
        public readonly Option<int?> Batch = new("--batch") { Description = "batch size of every phase" };
        public readonly Option<long?> PretrainSteps = new("--pretrain-steps");
        public readonly Option<long?> SstSteps = new("--sst-steps") { Description = "SST steps (also the baseline's)" };
        public readonly Option<long?> TalkerSteps = new("--talker-steps");
        public readonly Option<double?> TrainSlips = new("--train-slips") { Description = "slip-augmented training of the Talkers and the baseline alike: share of their trace input tokens replaced by other trace tokens (targets unchanged; default 0)" };
        public readonly Option<double?> Momentum = new("--momentum") { Description = "EMA momentum of the SST target encoder (default 0.98, the paper's; the tree-search and cfg-noise experiments default to 0.999)" };
        public readonly Option<double?> K = new("--k") { Description = "scale k of the SST loss k·(1 − cos) (default 4)" };
        public readonly Option<double?> Rollout = new("--rollout") { Description = "share of each SST batch trained on the Reasoner's own free-running chain (0 = teacher-forced SST; experiments default 0.5)" };
        public readonly Option<string?> Compute = new("--compute") { Description = "activation dtype: auto (default: bf16 only where a short probe measures it ≥ 1.2× faster than f32 here), f32 or bf16" };
        public readonly Option<long?> Seed = new("--seed");
        public readonly Option<double> Scale = new("--scale") { Description = "bigger run: steps × scale, widths × √scale", DefaultValueFactory = _ => 1.0 };
        public readonly Option<string?> Out = new("--out") { Description = "run folder" };
        public readonly Option<string?> Config = new("--config") { Description = "JSON file of options (snake_case keys, e.g. examples/reasoner-tree.json); command-line options override it" };

        public IEnumerable<Option> All => new Option[]
        {
            Task, Difficulty, TrainMinDifficulty, Train, HoldOut, Hidden, Layers, Heads, Talker, TalkerHidden, TalkerLayers, Batch,
            PretrainSteps, SstSteps, TalkerSteps, TrainSlips, Momentum, K, Rollout, Compute, Seed, Scale, Out, Config,
        };

        public ReasonerOptions Resolve(ParseResult pr, ReasonerOptions defaults)
        {
            if (pr.GetValue(Config) is { } file) defaults = ReasonerOptions.Load(file) with { OutDir = defaults.OutDir };
            if (pr.GetValue(Scale) is var scale && !(scale > 0 && double.IsFinite(scale))) throw new UserError($"--scale must be a positive number (got {scale})");
            var o = defaults.Scaled(scale);
            o = o with
            {
                Task = pr.GetValue(Task) ?? o.Task, Difficulty = pr.GetValue(Difficulty) ?? o.Difficulty,
                TrainMinDifficulty = pr.GetValue(TrainMinDifficulty) ?? o.TrainMinDifficulty,
                TrainFile = pr.GetValue(Train) ?? o.TrainFile, HoldOut = pr.GetValue(HoldOut) ?? o.HoldOut,
                Hidden = pr.GetValue(Hidden) ?? o.Hidden, Layers = pr.GetValue(Layers) ?? o.Layers, Heads = pr.GetValue(Heads) ?? o.Heads,
                Talker = pr.GetValue(Talker)?.Trim().ToLowerInvariant() ?? o.Talker,
                TalkerHidden = pr.GetValue(TalkerHidden) ?? o.TalkerHidden, TalkerLayers = pr.GetValue(TalkerLayers) ?? o.TalkerLayers,
                BatchSize = pr.GetValue(Batch) ?? o.BatchSize, PretrainSteps = pr.GetValue(PretrainSteps) ?? o.PretrainSteps,
                SstSteps = pr.GetValue(SstSteps) ?? o.SstSteps, TalkerSteps = pr.GetValue(TalkerSteps) ?? o.TalkerSteps, TrainSlips = pr.GetValue(TrainSlips) ?? o.TrainSlips,
                Momentum = pr.GetValue(Momentum) ?? o.Momentum, LossScale = pr.GetValue(K) ?? o.LossScale, Rollout = pr.GetValue(Rollout) ?? o.Rollout,
                Compute = pr.GetValue(Compute) ?? o.Compute, Seed = pr.GetValue(Seed) ?? o.Seed, OutDir = pr.GetValue(Out) ?? o.OutDir,
            };
            if (o.Task == "gsm8k" && o.TrainFile is null) throw new UserError("gsm8k: give --train FILE (GSM8K jsonl; e.g. tests/LatentLab.Tests/Fixtures/data/gsm8k_test_excerpt.jsonl)");
            o.Validate();
            return o;
        }
    }

    static Command Reasoner()
    {
        var root = new Command("reasoner", "JEPA-Reasoner (arXiv 2512.19171): latent reasoning decoupled from token generation");
        root.Add(Phase("pretrain", "Phase 1: pre-train the Reasoner as an LM (tied embeddings, L2 off); resumes if killed", ReasonerPhases.RunPretrain));
        root.Add(Phase("sst", "Phase 2: self-supervised training (L2 on, k·(1 − cos) vs an EMA target encoder, loss on reasoning positions); resumes if killed", ReasonerPhases.RunSst));
        root.Add(Phase("talker", "Phase 3: freeze the Reasoner, train a Mono or Dual Talker on its latent chains; resumes if killed", ReasonerPhases.RunTalker));
        root.Add(Phase("baseline", "The coupled baseline: the pre-trained transformer trained on as an LM on SST's batches and step count; resumes if killed", ReasonerPhases.RunBaseline));
        root.Add(Experiments());
        return root;
    }

    static Command Phase(string name, string description, Func<ReasonerOptions, TextWriter?, CancellationToken, PhaseResult> run)
    {
        var shared = new Shared();
        var cmd = new Command(name, description);
        foreach (var o in shared.All) cmd.Add(o);
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var o = shared.Resolve(pr, new ReasonerOptions());
            var r = run(o, ConsoleLog.Instance, default);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{r.Phase}: {r.Train.Steps} steps, final loss {r.Train.FinalLoss:F4}, {r.Seconds:F0} s"));
            Console.WriteLine($"model: {r.ModelDir}");
            return 0;
        }));
        return cmd;
    }

    static Command Experiments()
    {
        var exp = new Command("experiment", "The paper's experiments at laptop scale; each writes report.md, results.json and plots into its run folder");

        var tree = new Shared();
        var treeN = new Option<int>("--eval-problems") { DefaultValueFactory = _ => 200 };
        var treeCmd = new Command("tree-search", "Binary-tree routing: accuracy vs the coupled baseline, latent PCA, mixed-latent (NNLS) analysis") { treeN };
        foreach (var o in tree.All) treeCmd.Add(o);
        treeCmd.SetAction(pr => CliSupport.Run(() =>
        {
            var r = ReasonerExperiments.TreeSearch(tree.Resolve(pr, ReasonerExperiments.TreeDefaults), pr.GetValue(treeN), ConsoleLog.Instance);
            Console.WriteLine($"report: {r.ReportPath}");
            return 0;
        }));
        exp.Add(treeCmd);

        var cfg = new Shared();
        var cfgN = new Option<int>("--eval-problems") { DefaultValueFactory = _ => 200 };
        var rates = new Option<string>("--rates") { Description = "comma-separated noise rates", DefaultValueFactory = _ => Join(ReasonerExperiments.DefaultNoiseRates) };
        var cfgCmd = new Command("cfg-noise", "CFG completion with 0-30% input token noise: normalised accuracy of JEPA-Reasoner vs the coupled baseline") { cfgN, rates };
        foreach (var o in cfg.All) cfgCmd.Add(o);
        static List<double> Rates(string text)
        {
            var rs = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(s => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v is >= 0 and <= 1 ? v : throw new UserError($"--rates: '{s}' is not a rate in [0, 1]"))
                .ToList();
            if (rs.Count == 0 || rs[0] != 0) throw new UserError("--rates must start with 0 (the normalising rate)");
            return rs;
        }
        static string Join(double[] rs) => string.Join(",", rs.Select(r => r.ToString(CultureInfo.InvariantCulture)));
        cfgCmd.SetAction(pr => CliSupport.Run(() =>
        {
            var r = ReasonerExperiments.CfgNoise(cfg.Resolve(pr, ReasonerExperiments.CfgDefaults), pr.GetValue(cfgN), Rates(pr.GetValue(rates)!), ConsoleLog.Instance);
            Console.WriteLine($"report: {r.ReportPath}");
            return 0;
        }));
        exp.Add(cfgCmd);

        var slip = new Shared();
        var slipN = new Option<int>("--eval-problems") { DefaultValueFactory = _ => 200 };
        var slipRates = new Option<string>("--rates") { Description = "comma-separated slip rates per trace token", DefaultValueFactory = _ => Join(ReasonerExperiments.DefaultSlipRates) };
        var slipCmd = new Command("cfg-slips", "CFG completion with 0-30% token slips while thinking (the errors the decoupling contains): same models and --out as cfg-noise, report in <out>/generation-slips/") { slipN, slipRates };
        foreach (var o in slip.All) slipCmd.Add(o);
        slipCmd.SetAction(pr => CliSupport.Run(() =>
        {
            var r = ReasonerExperiments.CfgSlips(slip.Resolve(pr, ReasonerExperiments.CfgDefaults), pr.GetValue(slipN), Rates(pr.GetValue(slipRates)!), ConsoleLog.Instance);
            Console.WriteLine($"report: {r.ReportPath}");
            return 0;
        }));
        exp.Add(slipCmd);

        var gsm = new Shared();
        var test = new Option<string?>("--test") { Description = "GSM8K-format jsonl to evaluate on (default: the held-out end of --train)" };
        var shots = new Option<string>("--shots") { Description = "comma-separated shot counts", DefaultValueFactory = _ => "0,5,8" };
        var maxTest = new Option<int>("--max-test") { Description = "evaluate at most this many test examples", DefaultValueFactory = _ => 200 };
        var gsmCmd = new Command("gsm8k", "GSM8K-format few-shot evaluation of JEPA-Reasoner vs the coupled baseline (--train FILE, optional --test FILE)") { test, shots, maxTest };
        foreach (var o in gsm.All) gsmCmd.Add(o);
        gsmCmd.SetAction(pr => CliSupport.Run(() =>
        {
            var ks = pr.GetValue(shots)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(s => int.TryParse(s, out var v) && v >= 0 ? v : throw new UserError($"--shots: '{s}' is not a count")).ToList();
            var o = gsm.Resolve(pr, ReasonerExperiments.Gsm8kDefaults);
            var r = ReasonerExperiments.Gsm8k(o, pr.GetValue(test), ks, pr.GetValue(maxTest), ConsoleLog.Instance);
            Console.WriteLine($"report: {r.ReportPath}");
            return 0;
        }));
        exp.Add(gsmCmd);
        return exp;
    }
}
