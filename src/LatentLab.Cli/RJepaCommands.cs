using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using LatentLab.IO;
using LatentLab.Latents;
using LatentLab.Methods.WorldModel;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;

namespace LatentLab.Cli;

/// <summary>`rjepa extract | train | score | rerank | nudge | calibrate | study`: a world model of reasoning steps in latent space (seed 003).</summary>
public static class RJepaCommands
{
    public static Command Create()
    {
        var root = new Command("rjepa", "R-JEPA: a JEPA over the hidden states of a model's own reasoning steps; score, RERANK, NUDGE and PLAN");
        root.Add(Extract());
        root.Add(Train());
        root.Add(Score());
        root.Add(RerankCmd());
        root.Add(Nudge());
        root.Add(PlanCmd());
        root.Add(Calibrate());
        root.Add(StudyCmd());
        return root;
    }

    static Option<string> ModelOpt(bool required = true) => new("--model") { Description = "Hugging Face model folder, or a teacher run folder (with model/)", Required = required };
    static Option<string> TaskOpt() => new("--task") { Description = "task family (see tasks list)", DefaultValueFactory = _ => "addition" };
    static Option<int?> DifficultyOpt() => new("--difficulty", "--digits") { Description = "the family's difficulty (default: its own)" };
    static Option<string> PointOpt() => new("--point") { Description = "hook point whose states are averaged per step", DefaultValueFactory = _ => "blocks.-2.resid_post" };
    static Option<long> SeedOpt() => new("--seed") { DefaultValueFactory = _ => 0 };

    static (DecoderLM Model, TraceFormat Fmt, ITaskFamily Family, int Difficulty) Load(string modelDir, string task, int? difficulty)
    {
        TorchRuntime.Initialize();
        var family = TaskRegistry.Get(task);
        var dir = CliSupport.ModelDir(modelDir);
        var fmt = TraceFormat.ForModel(dir, family);
        var model = Checkpoints.Load(dir);
        model.eval();
        return (model, fmt, family, difficulty ?? family.Difficulty.Default);
    }

    static Split ParseSplit(string s) => s.Trim().ToLowerInvariant() switch
    {
        "train" => Split.Train, "validation" or "val" => Split.Validation, "test" => Split.Test,
        _ => throw new UserError($"--split '{s}': expected train, val or test"),
    };

    static Command Extract()
    {
        var model = ModelOpt(); var task = TaskOpt(); var diff = DifficultyOpt(); var point = PointOpt(); var seed = SeedOpt();
        var split = new Option<string>("--split") { DefaultValueFactory = _ => "train" };
        var n = new Option<int>("--n") { Description = "problems", DefaultValueFactory = _ => 300 };
        var samples = new Option<int>("--samples") { Description = "sampled traces per problem (plus the greedy one)", DefaultValueFactory = _ => 8 };
        var temp = new Option<double>("--temperature") { DefaultValueFactory = _ => 1.0 };
        var rule = new Option<string>("--steps") { Description = "step rule: auto | semicolon | lines | sep:A|B", DefaultValueFactory = _ => "auto" };
        var trace = new Option<string>("--trace") { Description = "own (sampled from the model) | reference (the task's own trace, one per problem)", DefaultValueFactory = _ => "own" };
        var output = new Option<string>("--out") { Required = true };
        var cmd = new Command("extract", "Sample traces, cut them into steps, check each step, and store one latent per step (resumes if killed)")
            { model, task, diff, point, seed, split, n, samples, temp, rule, trace, output };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var (m, fmt, family, d) = Load(pr.GetValue(model)!, pr.GetValue(task)!, pr.GetValue(diff));
            using var _ = m;
            var sp = ParseSplit(pr.GetValue(split)!);
            int count = pr.GetValue(n);
            long s = pr.GetValue(seed);
            var problems = TaskSplits.Generate(family, sp, count, d, s);
            var o = new StepOptions
            {
                Point = pr.GetValue(point)!, Samples = pr.GetValue(samples), Temperature = pr.GetValue(temp), Seed = s, StepRule = pr.GetValue(rule),
                Trace = pr.GetValue(trace) == "reference" ? TraceMode.Reference : TraceMode.Own,
                Source = new TaskSource(family.Name, d, sp.ToString().ToLowerInvariant(), s, count),
            };
            var man = StepStore.Run(m, fmt, problems, o, pr.GetValue(output)!, Console.WriteLine);
            Console.WriteLine($"{man.Rows} traces, {man.Verified} verified, in {pr.GetValue(output)}");
            return 0;
        }));
        return cmd;
    }

    /// <param name="steps">The command's own default: the library's for `rjepa train`, the study's for `rjepa study`.</param>
    sealed class WorldOptions(long steps)
    {
        public readonly Option<long> Steps = new("--train-steps") { Description = "world-model updates", DefaultValueFactory = _ => steps };
        public readonly Option<int> Width = new("--width") { DefaultValueFactory = _ => 128 };
        public readonly Option<int> Layers = new("--layers") { DefaultValueFactory = _ => 2 };
        public readonly Option<string> Loss = new("--loss") { Description = "l1 | smooth_l1 | cosine", DefaultValueFactory = _ => "l1" };
        public readonly Option<double> Variance = new("--variance-weight") { DefaultValueFactory = _ => 0.01 };
        public readonly Option<double> InfoNce = new("--infonce-weight") { DefaultValueFactory = _ => 0.0 };
        public readonly Option<bool> All = new("--all-traces") { Description = "train on wrong traces too (default: correct ones only)" };
        public IEnumerable<Option> Options => [Steps, Width, Layers, Loss, Variance, InfoNce, All];

        public WorldTrainOptions Read(ParseResult pr, string outDir, long seed) => new()
        {
            Steps = pr.GetValue(Steps), Seed = seed, OutDir = outDir, CorrectOnly = !pr.GetValue(All),
            Model = new WorldModelConfig
            {
                Width = pr.GetValue(Width), Layers = pr.GetValue(Layers), PredictorLayers = pr.GetValue(Layers), VarianceWeight = pr.GetValue(Variance),
                InfoNceWeight = pr.GetValue(InfoNce),
                Loss = pr.GetValue(Loss) switch { "l1" => WorldLoss.L1, "smooth_l1" => WorldLoss.SmoothL1, "cosine" => WorldLoss.Cosine, var x => throw new UserError($"--loss '{x}': expected l1, smooth_l1 or cosine") },
            },
        };
    }

    static Command Train()
    {
        var w = new WorldOptions(new WorldTrainOptions().Steps);
        var train = new Option<string>("--train") { Description = "step store to learn from", Required = true };
        var val = new Option<string?>("--val") { Description = "step store for the held-out loss on right vs wrong traces" };
        var seed = SeedOpt();
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/rjepa/world" };
        var cmd = new Command("train", "Train the world model (context encoder, predictor, EMA target) through the one Trainer; resumes if killed") { train, val, seed, output };
        foreach (var o in w.Options) cmd.Add(o);
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            TorchRuntime.Initialize();
            using var tr = StepStore.Open(pr.GetValue(train)!);
            using var va = pr.GetValue(val) is { } v ? StepStore.Open(v) : null;
            var (wm, r) = WorldModelTraining.Train(tr, va, w.Read(pr, pr.GetValue(output)!, pr.GetValue(seed)));
            wm.Dispose();
            Console.WriteLine($"world model in {r.Dir}: {r.TrainTraces} traces, final loss {r.FinalLoss:F4}; " + string.Join(", ", r.Eval.Select(kv => $"{kv.Key} {kv.Value:F3}")));
            return 0;
        }));
        return cmd;
    }

    static Option<string> WorldOpt() => new("--world") { Description = "a world model folder (`rjepa train --out DIR` writes DIR/model)", Required = true };

    static WorldModel LoadWorld(string dir) => WorldModel.Load(Directory.Exists(Path.Combine(dir, "model")) ? Path.Combine(dir, "model") : dir);

    static Command Score()
    {
        var world = WorldOpt();
        var store = new Option<string>("--store") { Required = true };
        var output = new Option<string?>("--out") { Description = "write per-trace scores (jsonl) here" };
        var cmd = new Command("score", "Coherence of every trace in a store (mean and max next-step error) and the AUROCs for wrong vs right traces and the first wrong step") { world, store, output };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            TorchRuntime.Initialize();
            using var wm = LoadWorld(pr.GetValue(world)!);
            using var set = StepStore.Open(pr.GetValue(store)!);
            var scores = WorldScoring.Score(wm, set);
            var (t, tm, st) = WorldScoring.Aurocs(set.Samples, scores);
            Console.WriteLine($"AUROC wrong vs right: mean error {t}; max error {tm}; −logprob {RJepaStudy.LogProbAuroc(set.Samples)}");
            Console.WriteLine($"AUROC first wrong step vs the right steps before it: {st}");
            if (pr.GetValue(output) is { } path)
                AtomicFile.WriteAllText(path, string.Concat(set.Samples.Select((s, i) => new JsonObject
                {
                    ["index"] = s.Index, ["problem"] = s.ProblemIndex, ["draw"] = s.Draw, ["verified"] = s.Verified, ["first_wrong_step"] = s.FirstWrongStep,
                    ["mean_error"] = scores[i].Mean, ["max_error"] = scores[i].Max, ["logprob"] = s.LogProb,
                    ["step_errors"] = new JsonArray(scores[i].StepErrors.Select(e => (JsonNode)e).ToArray()),
                }.ToJsonString() + "\n")));
            return 0;
        }));
        return cmd;
    }

    static Command RerankCmd()
    {
        var world = WorldOpt();
        var val = new Option<string>("--val") { Description = "step store the weights are fitted on", Required = true };
        var test = new Option<string>("--test") { Description = "step store the arms are graded on", Required = true };
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/rjepa/rerank" };
        var cmd = new Command("rerank", "Best-of-N arms on the same samples: greedy, one sample, logprob, majority vote, R-JEPA, R-JEPA + logprob, oracle") { world, val, test, output };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            TorchRuntime.Initialize();
            using var wm = LoadWorld(pr.GetValue(world)!);
            using var v = StepStore.Open(pr.GetValue(val)!);
            using var t = StepStore.Open(pr.GetValue(test)!);
            int Problems(StepLatents s) => s.Samples.Count == 0 ? 0 : s.Samples.Max(x => x.ProblemIndex) - s.Samples.Min(x => x.ProblemIndex) + 1;
            var (study, jw, mw) = RJepaStudy.RerankStudy(v, WorldScoring.Score(wm, v), t, WorldScoring.Score(wm, t), Problems(v), Problems(t));
            var md = "# R-JEPA rerank\n\n" + study.ArmsTable() + "\n" + study.PairedTable() + $"\nWeights (fitted on {pr.GetValue(val)}): R-JEPA {jw}; R-JEPA + logprob {mw}.\n";
            Console.WriteLine(md);
            StudyFiles.Write(pr.GetValue(output)!, md, study.ToJson());
            StudyPlots.AccuracyPerArm(study, Path.Combine(pr.GetValue(output)!, "rerank_accuracy.png"), "RERANK: verified accuracy per arm (Wilson 95%)");
            return 0;
        }));
        return cmd;
    }

    static Command Nudge()
    {
        var model = ModelOpt(); var task = TaskOpt(); var diff = DifficultyOpt(); var point = PointOpt(); var seed = SeedOpt();
        var world = WorldOpt();
        var n = new Option<int>("--n") { Description = "test problems", DefaultValueFactory = _ => 150 };
        var lambdas = new Option<string>("--lambdas") { Description = "residual steering strengths", DefaultValueFactory = _ => "0,0.1,0.25,0.5" };
        var ms = new Option<string>("--candidates") { Description = "candidate counts m (1 = none)", DefaultValueFactory = _ => "4" };
        var temp = new Option<double>("--temperature") { DefaultValueFactory = _ => 1.0 };
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/rjepa/nudge" };
        var cmd = new Command("nudge", "Generate with the world model in the loop: residual steering at λ and candidate steering with m samples per step; accuracy with intervals and compute")
            { model, task, diff, point, seed, world, n, lambdas, ms, temp, output };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var (m, fmt, family, d) = Load(pr.GetValue(model)!, pr.GetValue(task)!, pr.GetValue(diff));
            using var _ = m;
            using var wm = LoadWorld(pr.GetValue(world)!);
            var problems = TaskSplits.Generate(family, Split.Test, pr.GetValue(n), d, pr.GetValue(seed) + 13);
            var gen = new StepGenerator(m, fmt, wm, pr.GetValue(point)!);
            var md = new System.Text.StringBuilder("| arm | accuracy | tokens drawn / answer | tokens re-read / answer |\n|---|---|---|---|\n");
            void Row(string name, NudgeOptions o)
            {
                var r = gen.Run(problems, o);
                var acc = Proportion.Wilson(r.Correct.Count(c => c), r.Correct.Count);
                md.AppendLine($"| {name} | {acc} | {r.TokensSampled / (double)problems.Count:F1} | {r.TokensRead / (double)problems.Count:F1} |");
                Console.WriteLine($"{name}: {acc}");
            }
            foreach (var l in Doubles(pr.GetValue(lambdas)!)) Row($"λ = {l.ToString(CultureInfo.InvariantCulture)}", new NudgeOptions { Lambda = l, Temperature = pr.GetValue(temp), Seed = pr.GetValue(seed) + 17 });
            foreach (var c in Doubles(pr.GetValue(ms)!).Select(x => (int)x).Where(x => x > 1)) Row($"m = {c}", new NudgeOptions { Candidates = c, Temperature = pr.GetValue(temp), Seed = pr.GetValue(seed) + 17 });
            Directory.CreateDirectory(pr.GetValue(output)!);
            AtomicFile.WriteAllText(Path.Combine(pr.GetValue(output)!, StudyFiles.ReportFile), "# R-JEPA nudge\n\n" + md);
            return 0;
        }));
        return cmd;
    }

    static Command PlanCmd()
    {
        var model = ModelOpt(); var task = TaskOpt(); var point = PointOpt(); var seed = SeedOpt(); var world = WorldOpt();
        var test = new Option<string>("--test") { Description = "step store whose good traces (every step right) get a step deleted", Required = true };
        var calib = new Option<string>("--calibration") { Description = "step store whose good traces calibrate the gap threshold (e.g. the validation store)", Required = true };
        var n = new Option<int>("--n") { Description = "gapped traces (at most)", DefaultValueFactory = _ => new RJepaStudyOptions().PlanCases };
        var lambdas = new Option<string>("--lambdas") { Description = "strengths the predicted step latent is injected with",
            DefaultValueFactory = _ => string.Join(",", new RJepaStudyOptions().PlanLambdas.Select(x => x.ToString(CultureInfo.InvariantCulture))) };
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "runs/rjepa/plan" };
        var cmd = new Command("plan", "PLAN: delete one interior step of good traces, detect the gap by next-step error, predict the missing step latent and write the step with it injected; graded by the task's step checker")
            { model, task, point, seed, world, test, calib, n, lambdas, output };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var (m, fmt, _, _) = Load(pr.GetValue(model)!, pr.GetValue(task)!, null);
            using var _m = m;
            using var wm = LoadWorld(pr.GetValue(world)!);
            using var testSet = StepStore.Open(pr.GetValue(test)!, m, fmt.Tokenizer);
            using var calibSet = StepStore.Open(pr.GetValue(calib)!, m, fmt.Tokenizer);
            var o = new RJepaStudyOptions { Point = pr.GetValue(point)!, Seed = pr.GetValue(seed), PlanCases = pr.GetValue(n), PlanLambdas = Doubles(pr.GetValue(lambdas)!) };
            var (plan, detection) = RJepaStudy.PlanStudy(m, fmt, wm, o, calibSet, WorldScoring.Score(wm, calibSet), testSet, WorldScoring.Score(wm, testSet), Console.Out);
            if (plan is null || detection is null) throw new UserError($"{pr.GetValue(test)}: no trace with three or more right steps to delete one from");
            Console.WriteLine(plan.ArmsTable());
            var json = plan.ToJson();
            var gaps = detection.ToJson();
            gaps["auroc"] = RJepaStudy.Json(detection.Auroc);
            json["gap_detection"] = gaps;
            StudyFiles.Write(pr.GetValue(output)!, $"# R-JEPA plan\n\nGap detection AUROC {detection.Auroc}; flagged {detection.Detected} " +
                $"at threshold {detection.Threshold:F3} (false alarms {detection.FalseAlarms}).\n\n{plan.ArmsTable()}\n{plan.PairedTable()}", json);
            return 0;
        }));
        return cmd;
    }

    static Command Calibrate()
    {
        var a = new Option<string>("--model-a") { Description = "the model the world model was trained on", Required = true };
        var b = new Option<string>("--model-b") { Description = "the model to calibrate (same tokenizer)", Required = true };
        var store = new Option<string>("--store") { Description = "step store of model B's traces (the calibration set)", Required = true };
        var point = PointOpt(); var task = TaskOpt();
        var n = new Option<int>("--n") { Description = "calibration traces", DefaultValueFactory = _ => 200 };
        var output = new Option<string>("--out") { Required = true };
        var cmd = new Command("calibrate", "Fit an affine map from model B's step latents to model A's on B's traces read by both (ridge least squares)") { a, b, store, point, task, n, output };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var (ma, fmt, _, _) = Load(pr.GetValue(a)!, pr.GetValue(task)!, null);
            using var _a = ma;
            using var setB = StepStore.Open(pr.GetValue(store)!);
            using var calib = setB.Where(s => s.Index < pr.GetValue(n));
            var drawn = calib.Samples.Select(s => new StepExtraction.Drawn(s.ProblemIndex, s.Draw, s.Problem, s.PromptIds, s.TraceIds, s.GeneratedTokens)).ToList();
            using var setA = StepExtraction.Read(ma, fmt, drawn, new StepOptions { Point = pr.GetValue(point)! });
            if (setA.Latents.shape[0] != calib.Latents.shape[0]) throw new InvalidDataException("calibration: the two models cut the traces into different steps");
            using var map = AffineMap.Fit(calib.Latents, setA.Latents);
            map.Save(pr.GetValue(output)!);
            Console.WriteLine($"affine map B→A fitted on {calib.Samples.Count} traces ({calib.Latents.shape[0]} rows), R² = {map.R2(calib.Latents, setA.Latents):F3}; {pr.GetValue(output)}");
            return 0;
        }));
        return cmd;
    }

    static Command StudyCmd()
    {
        var model = ModelOpt(required: false);
        model.Description = "Hugging Face model folder or teacher run (default: the study trains its own short teacher)";
        var task = TaskOpt(); var diff = DifficultyOpt(); var point = PointOpt(); var seed = SeedOpt();
        var d = new RJepaStudyOptions();
        var teacherSteps = new Option<long>("--teacher-steps") { DefaultValueFactory = _ => d.TeacherSteps };
        var teacherHidden = new Option<int>("--teacher-hidden") { Description = "without --model: width of the study's own teachers", DefaultValueFactory = _ => d.TeacherHidden };
        var teacherLayers = new Option<int>("--teacher-layers") { Description = "without --model: depth of the study's own teachers", DefaultValueFactory = _ => d.TeacherLayers };
        var samples = new Option<int>("--samples") { Description = "N of best-of-N", DefaultValueFactory = _ => d.Samples };
        var temp = new Option<double>("--temperature") { DefaultValueFactory = _ => d.Temperature };
        var trainN = new Option<int>("--train-problems") { DefaultValueFactory = _ => d.TrainProblems };
        var valN = new Option<int>("--val-problems") { DefaultValueFactory = _ => d.ValProblems };
        var testN = new Option<int>("--test-problems") { DefaultValueFactory = _ => d.TestProblems };
        var nudgeN = new Option<int>("--nudge-problems") { DefaultValueFactory = _ => d.NudgeProblems };
        var planN = new Option<int>("--plan-cases") { Description = "gapped test traces for PLAN (0: no PLAN)", DefaultValueFactory = _ => d.PlanCases };
        var modelB = new Option<string?>("--model-b") { Description = "cross-model calibration: model B (same tokenizer) whose traces A's world model reranks through an affine map (default, when the study trains its own teacher: a second teacher from seed + 1)" };
        var noCross = new Option<bool>("--no-cross-model") { Description = "skip the cross-model calibration" };
        var calibN = new Option<int>("--calibration-traces") { Description = "B's training traces the affine map is fitted on", DefaultValueFactory = _ => d.CalibrationTraces };
        var planLambdas = new Option<string>("--plan-lambdas") { DefaultValueFactory = _ => string.Join(",", d.PlanLambdas.Select(x => x.ToString(CultureInfo.InvariantCulture))) };
        var lambdas = new Option<string>("--lambdas") { DefaultValueFactory = _ => string.Join(",", d.Lambdas.Select(x => x.ToString(CultureInfo.InvariantCulture))) };
        var ms = new Option<string>("--candidates") { DefaultValueFactory = _ => string.Join(",", d.CandidateCounts) };
        var compute = CliSupport.ComputeOption();
        var w = new WorldOptions(d.World.Steps);
        var output = new Option<string>("--out") { DefaultValueFactory = _ => d.OutDir };
        var cmd = new Command("study", "The whole protocol: sampled step stores, world model, score AUROCs, RERANK arms, NUDGE over λ and m, PLAN, cross-model calibration; writes report.md, results.json and plots")
            { model, task, diff, point, seed, teacherSteps, teacherHidden, teacherLayers, samples, temp, trainN, valN, testN, nudgeN, lambdas, ms, planN, planLambdas, modelB, noCross, calibN, compute, output };
        foreach (var o in w.Options) cmd.Add(o);
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var o = new RJepaStudyOptions
            {
                Model = pr.GetValue(model) is { } m ? CliSupport.ModelDir(m) : null, Task = pr.GetValue(task)!, Difficulty = pr.GetValue(diff),
                Point = pr.GetValue(point)!, Seed = pr.GetValue(seed), TeacherSteps = pr.GetValue(teacherSteps),
                TeacherHidden = pr.GetValue(teacherHidden), TeacherLayers = pr.GetValue(teacherLayers), Samples = pr.GetValue(samples),
                Temperature = pr.GetValue(temp), TrainProblems = pr.GetValue(trainN), ValProblems = pr.GetValue(valN), TestProblems = pr.GetValue(testN),
                NudgeProblems = pr.GetValue(nudgeN), Lambdas = Doubles(pr.GetValue(lambdas)!), CandidateCounts = Doubles(pr.GetValue(ms)!).Select(x => (int)x).ToList(),
                PlanCases = pr.GetValue(planN), PlanLambdas = Doubles(pr.GetValue(planLambdas)!),
                ModelB = pr.GetValue(modelB) is { } mb ? CliSupport.ModelDir(mb) : null, CrossModel = !pr.GetValue(noCross), CalibrationTraces = pr.GetValue(calibN),
                Compute = pr.GetValue(compute)!, OutDir = pr.GetValue(output)!,
            };
            o = o with { World = w.Read(pr, Path.Combine(o.OutDir, "world"), o.Seed) };
            RJepaStudy.Run(o);
            return 0;
        }));
        return cmd;
    }

    static List<double> Doubles(string s) =>
        s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToList();
}
