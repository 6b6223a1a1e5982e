using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using LatentLab.Training;
using LatentLab.Evaluation;
using LatentLab.IO;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Tensors;
using static TorchSharp.torch;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>What an experiment wrote: its folder, report and headline numbers (also in results.json).</summary>
public sealed record ExperimentResult(string RunDir, string ReportPath, JsonObject Results);

/// <summary>
/// The paper's experiments at laptop scale. Each trains (or resumes) all four phases in its run folder, evaluates,
/// and writes report.md, results.json and PNG plots there. Defaults are sized for about ten minutes on two CPU cores;
/// <see cref="ReasonerOptions.Scaled"/> makes bigger runs.
/// </summary>
public static class ReasonerExperiments
{
    /// <summary>Sizes that fit the ten-minute budget on two (shared) CPU cores.</summary>
    static ReasonerOptions Small { get; } = new()
    {
        Hidden = 64, Layers = 3, Heads = 4, TalkerHidden = 64, TalkerLayers = 2, BatchSize = 32,
        PretrainSteps = 400, SstSteps = 150, TalkerSteps = 200, TalkerPool = 1024,
    };

    /// <summary>Tree search at depth 2 (3 entries, 4 leaves).</summary>
    public static ReasonerOptions TreeDefaults { get; } = Small with { Task = "tree", Difficulty = 2, OutDir = "runs/reasoner-tree" };

    /// <summary>Dyck-2 completion of 10-token prefixes (shorter ones leave too few distinct held-out problems), trained clean, tested under noise.</summary>
    public static ReasonerOptions CfgDefaults { get; } = Small with { Task = "cfg", Difficulty = 10, OutDir = "runs/reasoner-cfg" };

    /// <summary>GSM8K-format text: a tiny character-level model, so only the harness is exercised at this scale.</summary>
    public static ReasonerOptions Gsm8kDefaults { get; } = new()
    {
        Task = "gsm8k", Hidden = 64, Layers = 2, Heads = 4, TalkerHidden = 64, BatchSize = 8,
        PretrainSteps = 120, SstSteps = 60, TalkerSteps = 80, TalkerPool = 32, OutDir = "runs/reasoner-gsm8k",
    };

    static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    /// <summary>All four phases (each resumes or returns at once when already done).</summary>
    public static IReadOnlyList<PhaseResult> TrainAll(ReasonerOptions o, TextWriter log) =>
    [
        ReasonerPhases.RunPretrain(o, log),
        ReasonerPhases.RunSst(o, log),
        ReasonerPhases.RunTalker(o, log),
        ReasonerPhases.RunBaseline(o, log),
    ];

    static string PhaseTable(IReadOnlyList<PhaseResult> phases)
    {
        var sb = new StringBuilder("| phase | steps | final loss | seconds |\n|---|---|---|---|\n");
        foreach (var p in phases) sb.AppendLine(Inv($"| {p.Phase} | {p.Train.Steps} | {p.Train.FinalLoss:F4} | {p.Seconds:F0} |"));
        return sb.ToString();
    }

    public const string JepaArm = "jepa-reasoner", CoupledArm = "coupled-baseline";

    /// <summary>The two arms every experiment compares, graded on the same problems (JEPA-Reasoner − coupled is the paired difference).</summary>
    static IReadOnlyList<Arm> Arms(IReadOnlyList<GradedItem> jepa, IReadOnlyList<GradedItem> coupled, string talker, string suffix = "", string notes = "") =>
    [
        Arm.Graded(JepaArm + suffix, $"JEPA-Reasoner + {talker} Talker", ArmRole.Method, jepa.Select(g => g.Correct).ToList(), notes: notes),
        Arm.Graded(CoupledArm + suffix, "the same pre-trained transformer trained on as an LM", ArmRole.Reference, coupled.Select(g => g.Correct).ToList(), notes: notes),
    ];

    static ExperimentResult Write(ReasonerOptions o, string report, JsonObject results) =>
        new(Path.GetFullPath(o.OutDir), StudyFiles.Write(o.OutDir, report, results), results);

    // ----------------------------------------------------------------------------------------------------------------
    // Tree search
    // ----------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// Binary-tree routing: verified accuracy of Reasoner + Talker vs the coupled baseline on held-out trees, a PCA of
    /// the latents (coloured by the token each one should say, vocabulary directions drawn in), and the mixed-latent
    /// analysis: at every latent whose token is a branch letter (l or r), NNLS over the (unit) vocabulary embeddings,
    /// how often the correct branch carries the larger weight and how many branches carry non-trivial weight (≥ 5% of
    /// the total non-negative weight).
    /// </summary>
    public static ExperimentResult TreeSearch(ReasonerOptions o, int evalProblems = 200, TextWriter? log = null)
    {
        log ??= Console.Out;
        var sw = Stopwatch.StartNew();
        var phases = TrainAll(o, log);
        var data = (TaskReasonerData)ReasonerPhases.Data(o);
        var test = data.Test(evalProblems, o.Seed + 99);
        using var reasoner = Reasoner.Load(o.ModelDir(ReasonerPhases.Sst));
        using var talker = Talker.Load(o.ModelDir(ReasonerPhases.TalkerPhase));
        using var baseline = Checkpoints.Load(o.ModelDir(ReasonerPhases.Baseline));
        var study = new Study("tree search", Arms(ReasonerEval.GradePipeline(reasoner, talker, data, test), ReasonerEval.GradeBaseline(baseline, data, test), o.Talker))
        {
            Pairs = [(JepaArm, CoupledArm)],
        };
        var (jepa, coupled) = (study.Get(JepaArm).Accuracy, study.Get(CoupledArm).Accuracy);
        log.WriteLine($"tree-search: JEPA-Reasoner + {o.Talker} Talker {jepa}; coupled baseline {coupled}");

        var mixed = MixedLatents(reasoner, data, test.Take(Math.Min(200, test.Count)).ToList(), Path.Combine(o.OutDir, "latents_pca.png"));
        var results = new JsonObject
        {
            ["experiment"] = "tree-search", ["task"] = data.Name, ["options"] = o.ToJson(),
            ["study"] = study.ToJson(), ["mixed_latents"] = mixed.ToJson(),
            ["reasoner_parameters"] = reasoner.Model.ParameterCount(), ["talker_parameters"] = talker.parameters().Sum(p => p.numel()),
            ["seconds"] = sw.Elapsed.TotalSeconds,
        };
        var report = Inv($"""
            # JEPA-Reasoner: tree search ({data.Name})

            Reasoner: Qwen3-layout decoder (QK-norm, tied embeddings) d={o.Hidden}, {o.Layers} layers ({reasoner.Model.ParameterCount():N0} parameters),
            {reasoner.Settings.LatentSteps} latents per problem; {o.Talker} Talker d={o.TalkerHidden}, {o.TalkerLayers} layers
            ({talker.parameters().Sum(p => p.numel()):N0} parameters). Coupled baseline: the same pre-trained transformer trained on as an LM on
            the same batches for as many steps as SST. Greedy decoding; answers checked by the task's exact verifier; Wilson 95% intervals.

            Verified accuracy on {test.Count} held-out trees:

            {study.ArmsTable()}
            {study.PairedTable()}
            ## Mixed latents

            {mixed.ToMarkdown()}

            ![PCA of latents](latents_pca.png)

            ## Training

            {PhaseTable(phases)}
            Total time {sw.Elapsed.TotalSeconds:F0} s. Metrics per phase: `<phase>/train/metrics.jsonl` (SST logs eval_effective_rank and eval_dim_std).
            """);
        return Write(o, report, results);
    }

    /// <summary>The mixed-latent statistics of the tree experiment.</summary>
    public sealed record MixedLatentStats(int Latents, int CorrectLarger, int[] BranchesNonTrivial, double MeanFitR2, double MeanCorrectShare)
    {
        public double CorrectLargerRate => Latents == 0 ? double.NaN : (double)CorrectLarger / Latents;

        public JsonObject ToJson() => new()
        {
            ["branch_latents"] = Latents, ["correct_branch_larger"] = CorrectLarger, ["correct_branch_larger_rate"] = CorrectLargerRate,
            ["branches_with_nontrivial_weight"] = new JsonObject { ["0"] = BranchesNonTrivial[0], ["1"] = BranchesNonTrivial[1], ["2"] = BranchesNonTrivial[2] },
            ["mean_nnls_r2"] = MeanFitR2, ["mean_correct_share_of_branch_weight"] = MeanCorrectShare,
        };

        public string ToMarkdown() => Inv($"""
            Every latent whose token is a branch letter (l or r; {Latents} latents over the held-out trees) decomposed as a
            non-negative combination of the unit vocabulary embeddings (NNLS; mean R² of the fit {MeanFitR2:F3}).

            | statistic | value |
            |---|---|
            | correct branch carries the larger weight | {CorrectLarger} / {Latents} = {CorrectLargerRate:P2} |
            | mean share of the correct branch in w_l + w_r | {MeanCorrectShare:F3} |
            | latents with 0 / 1 / 2 branches of non-trivial weight (≥ 5% of all weight) | {BranchesNonTrivial[0]} / {BranchesNonTrivial[1]} / {BranchesNonTrivial[2]} |
            """);
    }

    static MixedLatentStats MixedLatents(Reasoner reasoner, TaskReasonerData data, IReadOnlyList<ReasonerExample> xs, string pngPath)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var tok = data.Tokenizer;
        int pad = tok.PadId ?? 0;
        using var batch = ReasonerBatch.Of(xs, pad);
        long c = batch.Continuation.shape[1];
        var chain = reasoner.Reason(batch.PromptIds, batch.PromptMask, (int)Math.Max(c, 1)).narrow(1, 0, c);
        // The alphabet's embedding directions (specials excluded: they are not branches or content).
        var vocabIds = tok.Alphabet.Select(ch => tok.TokenToId(ch.ToString())!.Value).ToArray();
        var emb = nn.functional.normalize(reasoner.Model.EmbeddingWeight.to(ScalarType.Float32).index_select(0, tensor(vocabIds.Select(i => (long)i).ToArray(), device: reasoner.Model.Device)), p: 2, dim: -1);
        var basis = Enumerable.Range(0, vocabIds.Length).Select(i => emb[i].data<float>().ToArray()).ToList();
        int l = tok.TokenToId("l")!.Value, r = tok.TokenToId("r")!.Value;
        int li = Array.IndexOf(vocabIds, l), ri = Array.IndexOf(vocabIds, r);

        var cont = batch.Continuation.data<long>().ToArray();
        var mask = batch.ContinuationMask.data<long>().ToArray();
        var lat = chain.contiguous().data<float>().ToArray();
        long d = chain.shape[2];
        int n = 0, larger = 0;
        var nonTrivial = new int[3];
        double r2Sum = 0, shareSum = 0;
        var pointsX = new List<int>();  // indices of valid latents (for the PCA)
        var category = new List<string>();
        for (int i = 0; i < xs.Count; i++)
            for (int j = 0; j < c; j++)
            {
                long at = i * c + j;
                if (mask[at] == 0) continue;
                int want = (int)cont[at];
                pointsX.Add((int)at);
                category.Add(want == l ? "l" : want == r ? "r" : char.IsDigit(tok.IdToToken(want)![0]) ? "digit" : "other");
                if (want != l && want != r) continue;
                var y = new float[d];
                Array.Copy(lat, at * d, y, 0, d);
                var w = LatentAnalysis.Nnls(basis, y);
                double total = w.Sum();
                double wl = w[li], wr = w[ri];
                double wc = want == l ? wl : wr, wo = want == l ? wr : wl;
                n++;
                if (wc > wo) larger++;
                int count = (total > 0 && wl >= 0.05 * total ? 1 : 0) + (total > 0 && wr >= 0.05 * total ? 1 : 0);
                nonTrivial[count]++;
                shareSum += wl + wr > 0 ? wc / (wl + wr) : 0;
                // R² of the fit: 1 − ‖y − Bw‖² / ‖y − ȳ‖².
                double ss = 0, st = 0, mean = y.Average(v => (double)v);
                for (int t = 0; t < d; t++)
                {
                    double fit = 0;
                    for (int k = 0; k < w.Length; k++) fit += w[k] * basis[k][t];
                    ss += (y[t] - fit) * (y[t] - fit);
                    st += (y[t] - mean) * (y[t] - mean);
                }
                r2Sum += st > 0 ? 1 - ss / st : 0;
            }

        var flat = chain.reshape(-1, d).index_select(0, tensor(pointsX.Select(i => (long)i).ToArray(), device: chain.device));
        var (fx, fy, ex, ey, explained) = LatentAnalysis.Pca2With(flat, emb);
        ReasonerPlots.LatentPca(pngPath, fx, fy, category, ex, ey, tok.Alphabet.Select(ch => ch.ToString()).ToArray(), explained);
        return new MixedLatentStats(n, larger, nonTrivial, n == 0 ? double.NaN : r2Sum / n, n == 0 ? double.NaN : shareSum / n);
    }

    // ----------------------------------------------------------------------------------------------------------------
    // CFG robustness
    // ----------------------------------------------------------------------------------------------------------------

    public static readonly double[] DefaultNoiseRates = [0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30];

    /// <summary>
    /// Trained on clean Dyck-2 prefixes; tested on held-out prefixes whose tokens are each replaced with probability r
    /// (answer = the clean prefix's completion). Accuracy and normalised accuracy (acc(r) / acc(0)) of both models per
    /// rate, on one plot.
    /// </summary>
    public static ExperimentResult CfgNoise(ReasonerOptions o, int evalProblems = 200, IReadOnlyList<double>? rates = null, TextWriter? log = null)
    {
        log ??= Console.Out;
        rates ??= DefaultNoiseRates;
        var sw = Stopwatch.StartNew();
        var phases = TrainAll(o, log);
        var data = (TaskReasonerData)ReasonerPhases.Data(o);
        if (data.Family is not CfgFamily) throw new ArgumentException($"cfg-noise needs the cfg task family, got '{o.Task}'");
        using var reasoner = Reasoner.Load(o.ModelDir(ReasonerPhases.Sst));
        using var talker = Talker.Load(o.ModelDir(ReasonerPhases.TalkerPhase));
        using var baseline = Checkpoints.Load(o.ModelDir(ReasonerPhases.Baseline));
        var rows = new List<(double Rate, Proportion Jepa, Proportion Coupled)>();
        IReadOnlyList<Arm>? clean = null;
        foreach (var rate in rates)
        {
            // The same seed at every rate: the same clean problems, only the corruption differs.
            var test = data.Test(evalProblems, o.Seed + 77, new CfgFamily(rate));
            var arms = Arms(ReasonerEval.GradePipeline(reasoner, talker, data, test), ReasonerEval.GradeBaseline(baseline, data, test), o.Talker);
            clean ??= arms;
            var (j, b) = (arms[0].Accuracy!.Value, arms[1].Accuracy!.Value);
            rows.Add((rate, j, b));
            log.WriteLine(Inv($"cfg-noise {rate:P0}: JEPA-Reasoner {j}; coupled baseline {b}"));
        }
        // The arms at the first rate (0: clean) are the study; the rates are a knob swept over both.
        var study = new Study("cfg noise", clean!)
        {
            Pairs = [(JepaArm, CoupledArm)],
            Sweeps =
            [
                new ScaleSweep(JepaArm, "token noise", rows.Select(x => new SweepPoint(x.Rate, x.Jepa)).ToList()),
                new ScaleSweep(CoupledArm, "token noise", rows.Select(x => new SweepPoint(x.Rate, x.Coupled)).ToList()),
            ],
        };
        double j0 = rows[0].Jepa.Value, b0 = rows[0].Coupled.Value;
        double Norm(double v, double at0) => at0 > 0 ? v / at0 : double.NaN;
        ReasonerPlots.NoiseCurves(Path.Combine(o.OutDir, "cfg_noise.png"), rows.Select(x => x.Rate).ToArray(),
            rows.Select(x => Norm(x.Jepa.Value, j0)).ToArray(), rows.Select(x => Norm(x.Coupled.Value, b0)).ToArray());

        var table = new StringBuilder("| token noise | JEPA-Reasoner accuracy | coupled accuracy | JEPA normalised | coupled normalised |\n|---|---|---|---|---|\n");
        foreach (var (rate, j, b) in rows)
            table.AppendLine(Inv($"| {rate:P0} | {j} | {b} | {Norm(j.Value, j0):F3} | {Norm(b.Value, b0):F3} |"));
        var results = new JsonObject
        {
            ["experiment"] = "cfg-noise", ["task"] = data.Name, ["options"] = o.ToJson(), ["seconds"] = sw.Elapsed.TotalSeconds,
            ["study"] = study.ToJson(),
            ["normalised"] = new JsonArray(rows.Select(x => (JsonNode)new JsonObject
            {
                ["noise"] = x.Rate, ["jepa_normalised"] = Norm(x.Jepa.Value, j0), ["coupled_normalised"] = Norm(x.Coupled.Value, b0),
            }).ToArray()),
        };
        var report = Inv($"""
            # JEPA-Reasoner: CFG robustness ({data.Name})

            Both models are trained on clean prefixes only. At test time each prompt token is replaced, independently with
            probability r, by another bracket; the expected answer stays the clean prefix's completion. Normalised accuracy
            = accuracy at r / accuracy at 0. {evalProblems} held-out problems per rate (the same clean problems at every rate);
            Wilson 95% intervals.

            Clean prefixes (r = 0):

            {study.ArmsTable()}
            {study.PairedTable()}
            Under noise:

            {table}
            ![normalised accuracy under token noise](cfg_noise.png)

            ## Training

            {PhaseTable(phases)}
            Total time {sw.Elapsed.TotalSeconds:F0} s.
            """);
        return Write(o, report, results);
    }

    // ----------------------------------------------------------------------------------------------------------------
    // GSM8K few-shot
    // ----------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// GSM8K-format few-shot evaluation: k solved training examples in front of each test question, final answers taken
    /// after '####' (else the last number) and compared numerically. With no test file the last HoldOut examples of the
    /// training file (a fifth when HoldOut is 0) are the test set.
    /// </summary>
    public static ExperimentResult Gsm8k(ReasonerOptions o, string? testFile = null, IReadOnlyList<int>? shots = null, int maxTest = 200, TextWriter? log = null)
    {
        log ??= Console.Out;
        shots = (shots ?? [0, 5, 8]).Distinct().ToList();
        if (o.TrainFile is null) throw new ArgumentException("gsm8k needs a training file (TrainFile: GSM8K jsonl)");
        var all = Gsm8kReasonerData.Load(o.TrainFile);
        IReadOnlyList<MathExample> testExamples;
        if (testFile is null)
        {
            int hold = o.HoldOut > 0 ? o.HoldOut : Math.Max(1, all.Count / 5);
            o = o with { HoldOut = hold };
            testExamples = all.Skip(all.Count - hold).ToList();
        }
        else testExamples = Gsm8kReasonerData.Load(testFile);
        testExamples = testExamples.Take(maxTest).ToList();
        o = o with { Task = "gsm8k" };

        var sw = Stopwatch.StartNew();
        var phases = TrainAll(o, log);
        var data = (Gsm8kReasonerData)ReasonerPhases.Data(o);
        using var reasoner = Reasoner.Load(o.ModelDir(ReasonerPhases.Sst));
        using var talker = Talker.Load(o.ModelDir(ReasonerPhases.TalkerPhase));
        using var baseline = Checkpoints.Load(o.ModelDir(ReasonerPhases.Baseline));
        var arms = new List<Arm>();
        var samples = new JsonArray();
        foreach (int k in shots)
        {
            if (k > data.TrainExamples.Count) throw new ArgumentException($"{k}-shot needs {k} training examples; {o.TrainFile} has {data.TrainExamples.Count} after the hold-out");
            var rng = new Random(unchecked((int)o.Seed) + k);
            var xs = testExamples.Select(e => data.Example(e, data.TrainExamples.OrderBy(_ => rng.Next()).Take(k).ToList())).ToList();
            var jg = ReasonerEval.GradePipeline(reasoner, talker, data, xs, batchSize: 8);
            var bg = ReasonerEval.GradeBaseline(baseline, data, xs, batchSize: 8);
            var pair = Arms(jg, bg, o.Talker, $" {k}-shot", Inv($"{k} shots; mean prompt {(int)xs.Average(x => x.Prompt.Length)} tokens"));
            arms.AddRange(pair);
            var (j, b) = (pair[0].Accuracy, pair[1].Accuracy);
            // What each model said, with the answer the grader extracted: accuracy on free text needs eyes on it.
            foreach (var (who, graded) in new[] { ("jepa_reasoner", jg), ("coupled_baseline", bg) })
                foreach (var g in graded)
                {
                    var text = data.Tokenizer.Decode(g.Generated.Where(t => t != data.Tokenizer.EosId));
                    samples.Add(new JsonObject { ["k"] = k, ["model"] = who, ["reference"] = g.Example.Reference,
                        ["extracted"] = AnswerNormalizer.ExtractFinalAnswer(text), ["correct"] = g.Correct, ["output"] = text });
                }
            log.WriteLine($"gsm8k {k}-shot: JEPA-Reasoner {j}; coupled baseline {b}");
        }
        // Every (model, shot count) answered the same test questions: one study, the shot count a knob swept over both models.
        var study = new Study("gsm8k few-shot", arms)
        {
            Pairs = shots.Select(k => ($"{JepaArm} {k}-shot", $"{CoupledArm} {k}-shot")).ToList(),
            Sweeps = new[] { JepaArm, CoupledArm }.Select(m => new ScaleSweep(m, "shots",
                shots.Select(k => new SweepPoint(k, At(m, k))).ToList())).ToList(),
        };
        Proportion At(string model, int k) => arms.First(a => a.Name == $"{model} {k}-shot").Accuracy!.Value;
        var results = new JsonObject
        {
            ["experiment"] = "gsm8k", ["train_file"] = Path.GetFullPath(o.TrainFile), ["test_file"] = testFile is null ? null : Path.GetFullPath(testFile),
            ["test_examples"] = testExamples.Count, ["options"] = o.ToJson(), ["seconds"] = sw.Elapsed.TotalSeconds,
            ["study"] = study.ToJson(),
        };
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "outputs.json"), samples.ToJsonString(ReasonerOptions.Json) + "\n");
        var report = Inv($"""
            # JEPA-Reasoner: GSM8K-format few-shot evaluation

            Training file `{o.TrainFile}` ({data.TrainExamples.Count} examples), test {(testFile is null ? $"the last {o.HoldOut} examples of the training file (held out of training)" : $"`{testFile}`")}
            ({testExamples.Count} examples). Character-level models (Reasoner d={o.Hidden}, {o.Layers} layers; {o.Talker} Talker); k solved
            training examples precede each question; the answer after '####' (else the last number) is compared numerically.
            Wilson 95% intervals. Every output with its extracted answer: `outputs.json`.

            {study.ArmsTable()}
            {study.PairedTable()}
            ## Training

            {PhaseTable(phases)}
            Total time {sw.Elapsed.TotalSeconds:F0} s.
            """);
        return Write(o, report, results);
    }
}
