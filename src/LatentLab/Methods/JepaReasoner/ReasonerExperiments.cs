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
/// The paper's experiments at laptop scale. Each trains (or resumes) every phase in its run folder (both Talkers),
/// evaluates, and writes report.md, results.json and PNG plots there. Defaults are sized for about ten minutes on two
/// CPU cores; <see cref="ReasonerOptions.Scaled"/> (`--scale`) makes bigger runs.
/// </summary>
public static class ReasonerExperiments
{
    /// <summary>
    /// Sizes meant for the ten-minute budget on two CPU cores. Four layers, not three: at d=64 a 3-layer Reasoner
    /// plateaus at continuation loss 0.22 on depth-2 trees after 1,200 steps (the label look-up needs one more hop);
    /// a 4-layer one is at 0.22 by step 300 and 0.11 by step 2,000, still unconverged (README, "Diagnosis").
    /// EMA momentum 0.999, not the paper's 0.98: on the converged tree model, SST at 0.98 lets the target encoder drift
    /// off the token embeddings (free-running read-out accuracy 0.91 after 300 steps, 0.69 after 1,200; routing 93.5 %,
    /// then 69 %), where 0.999 keeps it there (read-out 1.00, routing 99.5 %).
    /// </summary>
    static ReasonerOptions Small { get; } = new()
    {
        Hidden = 64, Layers = 4, Heads = 4, TalkerHidden = 64, TalkerLayers = 2, BatchSize = 32,
        PretrainSteps = 1500, SstSteps = 300, TalkerSteps = 300, TalkerPool = 1024, Rollout = 0.5, Momentum = 0.999,
    };

    /// <summary>
    /// Tree search at depth 2 (6 edges, 4 leaves) in the <c>tree:hops</c> rendering, trained on depths 1 and 2 mixed, with
    /// 3,000 pre-training steps. Measured (README, "Diagnosis"): no d = 64 model learned the depth-2 look-up in the
    /// nested or edge-list renderings (6,000 steps: chance), nor in tree:hops at depth 2 alone (3,000 steps: chance);
    /// tree:hops with depths 1–2 mixed reached loss 0.0001 by step 2,400 and 100 % on 200 held-out depth-2 trees. The
    /// depth-1 trees (two edges) teach the exact look-up a depth-2 tree then reuses.
    /// </summary>
    public static ReasonerOptions TreeDefaults { get; } = Small with
    {
        Task = "tree:hops", Difficulty = 2, TrainMinDifficulty = 1, PretrainSteps = 3000, OutDir = "runs/reasoner-tree",
    };

    /// <summary>
    /// Dyck-2 completion of 10-token prefixes (shorter ones leave too few distinct held-out problems), trained clean,
    /// tested under noise. 800 pre-training and 200 SST (and baseline) steps, to fit the ten minutes on the 2-core AVX2
    /// EPYC: with 1,500 and 300 the run took 723 s (the loss was below 0.003 from step 900 on), with 800 and 300 it
    /// took 613 s (the ~70-latent chains make an SST step cost about 0.6 s).
    /// </summary>
    public static ReasonerOptions CfgDefaults { get; } = Small with { Task = "cfg", Difficulty = 10, PretrainSteps = 800, SstSteps = 200, OutDir = "runs/reasoner-cfg" };

    /// <summary>GSM8K-format text: a tiny character-level model, so only the harness is exercised at this scale.</summary>
    public static ReasonerOptions Gsm8kDefaults { get; } = new()
    {
        Task = "gsm8k", Hidden = 64, Layers = 2, Heads = 4, TalkerHidden = 64, BatchSize = 8,
        PretrainSteps = 120, SstSteps = 60, TalkerSteps = 80, TalkerPool = 32, OutDir = "runs/reasoner-gsm8k",
    };

    static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    public static readonly string[] BothTalkers = ["mono", "dual"];

    /// <summary>
    /// Every phase (each resumes, or returns at once when already done): pre-training, SST, one Talker per kind in
    /// <paramref name="talkers"/> (default both) and the baseline. The shared phases record the first Talker kind, so
    /// the run folder does not depend on which Talker the options named.
    /// </summary>
    public static IReadOnlyList<PhaseResult> TrainAll(ReasonerOptions o, TextWriter log, IReadOnlyList<string>? talkers = null)
    {
        talkers ??= BothTalkers;
        var shared = o with { Talker = talkers[0] };
        var phases = new List<PhaseResult> { ReasonerPhases.RunPretrain(shared, log), ReasonerPhases.RunSst(shared, log) };
        phases.AddRange(talkers.Select(kind => ReasonerPhases.RunTalker(shared with { Talker = kind }, log)));
        phases.Add(ReasonerPhases.RunBaseline(shared, log));
        return phases;
    }

    static string PhaseTable(IReadOnlyList<PhaseResult> phases)
    {
        var sb = new StringBuilder("| phase | steps | final loss | seconds |\n|---|---|---|---|\n");
        // A phase found finished in the run folder took no time in this call: say so rather than print 0 s.
        foreach (var p in phases)
            sb.AppendLine(Inv($"| {p.Phase} | {p.Train.Steps} | {p.Train.FinalLoss:F4} | {(p.Train.ResumedFrom >= p.Train.Steps ? "trained before" : Inv($"{p.Seconds:F0}"))} |"));
        return sb.ToString();
    }

    /// <summary>The loss curves of the run: pre-training and baseline LM loss, SST loss and its free-running chain diagnostics.</summary>
    static IReadOnlyList<string> TrainingCurves(ReasonerOptions o)
    {
        string Metrics(string phase) => Path.Combine(o.PhaseDir(phase), "train", "metrics.jsonl");
        return
        [
            StudyPlots.MetricsCurves(Metrics(ReasonerPhases.Pretrain), Path.Combine(o.OutDir, "curve_pretrain.png"), "pre-training (LM loss on the continuation)",
                [("loss", "train loss"), ("eval_lm_loss", "held-out-seed batch")], yLabel: "cross-entropy (nats/token)"),
            StudyPlots.MetricsCurves(Metrics(ReasonerPhases.Baseline), Path.Combine(o.OutDir, "curve_baseline.png"), "coupled baseline (LM training continued)",
                [("loss", "train loss"), ("eval_lm_loss", "held-out-seed batch")], yLabel: "cross-entropy (nats/token)"),
            StudyPlots.MetricsCurves(Metrics(ReasonerPhases.Sst), Path.Combine(o.OutDir, "curve_sst.png"), "SST: loss and the free-running chain",
                [("loss", "train loss k(1-cos)"), ("eval_loss_teacher_forced", "teacher-forced loss"), ("eval_chain_cos", "chain cosine to targets"), ("eval_chain_readout_acc", "chain read-out accuracy")],
                dashed: new HashSet<string> { "eval_chain_cos", "eval_chain_readout_acc" }),
        ];
    }

    public const string MonoArm = "jepa-reasoner-mono", DualArm = "jepa-reasoner-dual", CoupledArm = "coupled-baseline",
        OracleArm = "oracle-chain-mono", OracleDualArm = "oracle-chain-dual", FloorArm = "other-problem-chain";

    /// <summary>The trained models of a run folder.</summary>
    sealed class RunModels : IDisposable
    {
        public required Reasoner Reasoner { get; init; }
        public required Talker Mono { get; init; }
        public required Talker Dual { get; init; }
        public required DecoderLM Baseline { get; init; }

        public static RunModels Load(ReasonerOptions o) => new()
        {
            Reasoner = Reasoner.Load(o.ModelDir(ReasonerPhases.Sst)),
            Mono = Talker.Load(o.ModelDir(ReasonerPhases.TalkerPhase("mono"))),
            Dual = Talker.Load(o.ModelDir(ReasonerPhases.TalkerPhase("dual"))),
            Baseline = Checkpoints.Load(o.ModelDir(ReasonerPhases.Baseline)),
        };

        public void Dispose() { Reasoner.Dispose(); Mono.Dispose(); Dual.Dispose(); Baseline.Dispose(); }
    }

    /// <summary>
    /// The arms every experiment grades on the same problems: the JEPA-Reasoner with each Talker (methods), the coupled
    /// baseline (reference), the Mono Talker reading the oracle chain (ceiling: the Reasoner's latents of the true
    /// continuation, no drift) and another problem's chain (floor: a read-out with no information about the problem),
    /// and the Dual Talker on the oracle chain (reference: whether the Dual read-out is the bottleneck).
    /// With <paramref name="bounds"/> false only the three deployable arms are graded (the noise sweep).
    /// </summary>
    static IReadOnlyList<Arm> Arms(RunModels m, IReasonerData data, IReadOnlyList<ReasonerExample> xs, bool bounds = true, GenerationSlips? slips = null)
    {
        Arm Pipe(string name, string what, ArmRole role, Talker talker, ChainSource source)
        {
            var sw = Stopwatch.StartNew();
            var graded = ReasonerEval.GradePipeline(m.Reasoner, talker, data, xs, source: source, slips: slips);
            return Arm.Graded(name, what, role, graded.Select(g => g.Correct).ToList(), seconds: sw.Elapsed.TotalSeconds);
        }
        var arms = new List<Arm>
        {
            Pipe(MonoArm, "JEPA-Reasoner (free-running chain) + Mono Talker", ArmRole.Method, m.Mono, ChainSource.FreeRunning),
            Pipe(DualArm, "JEPA-Reasoner (free-running chain) + Dual Talker", ArmRole.Method, m.Dual, ChainSource.FreeRunning),
        };
        var swb = Stopwatch.StartNew();
        var coupled = ReasonerEval.GradeBaseline(m.Baseline, data, xs, slips: slips);
        arms.Add(Arm.Graded(CoupledArm, "the same pre-trained transformer trained on as an LM (greedy)", ArmRole.Reference,
            coupled.Select(g => g.Correct).ToList(), seconds: swb.Elapsed.TotalSeconds));
        if (!bounds) return arms;
        arms.Add(Pipe(OracleArm, "Mono Talker reading the Reasoner's latents of the true continuation (teacher-forced: no drift), free-running past its end", ArmRole.Ceiling, m.Mono, ChainSource.Oracle));
        arms.Add(Pipe(OracleDualArm, "Dual Talker reading the same oracle chain", ArmRole.Reference, m.Dual, ChainSource.Oracle));
        arms.Add(Pipe(FloorArm, "Mono Talker reading another problem's chain (no information about this one)", ArmRole.Floor, m.Mono, ChainSource.OtherProblem));
        return arms;
    }

    static readonly IReadOnlyList<(string A, string B)> StandardPairs =
    [
        (MonoArm, CoupledArm), (DualArm, CoupledArm), (MonoArm, OracleArm), (DualArm, OracleArm), (CoupledArm, OracleArm),
        (MonoArm, FloorArm), (DualArm, FloorArm), (CoupledArm, FloorArm),
    ];

    /// <summary>The drift table: free-running chain vs oracle chain per continuation position (cosine, read-out accuracy), and its plot.</summary>
    static (string Markdown, JsonArray Json) Drift(RunModels m, IReasonerData data, IReadOnlyList<ReasonerExample> xs, string pngPath)
    {
        var drift = ReasonerEval.ChainDrift(m.Reasoner, data, xs);
        StudyPlots.Lines(pngPath, "free-running chain against the oracle chain", "continuation position", "value",
            [new Curve("cosine to the oracle latent", drift.Select(d => (double)d.Position).ToArray(), drift.Select(d => d.Cosine).ToArray()),
             new Curve("read-out accuracy (argmax latent·embᵀ)", drift.Select(d => (double)d.Position).ToArray(), drift.Select(d => d.ReadoutAccuracy).ToArray(), Dashed: true)],
            yRange: (0, 1.05));
        var sb = new StringBuilder("| positions | cosine to oracle | read-out accuracy | latents |\n|---|---|---|---|\n");
        int bucket = Math.Max(1, (int)Math.Ceiling(drift.Count / 8.0));
        foreach (var g in drift.Chunk(bucket))
        {
            int n = g.Sum(d => d.Count);
            sb.AppendLine(Inv($"| {g[0].Position}–{g[^1].Position} | {g.Sum(d => d.Cosine * d.Count) / n:F3} | {g.Sum(d => d.ReadoutAccuracy * d.Count) / n:F3} | {n} |"));
        }
        var json = new JsonArray(drift.Select(d => (JsonNode)new JsonObject { ["position"] = d.Position, ["cosine"] = d.Cosine, ["readout_accuracy"] = d.ReadoutAccuracy, ["count"] = d.Count }).ToArray());
        return (sb.ToString(), json);
    }

    static string Describe(ReasonerOptions o, RunModels m) => Inv($"""
        Reasoner: Qwen3-layout decoder (QK-norm, tied embeddings) d={o.Hidden}, {o.Layers} layers ({m.Reasoner.Model.ParameterCount():N0} parameters),
        {m.Reasoner.Settings.LatentSteps} latents per problem; SST k={o.LossScale}, EMA momentum {o.Momentum}, rollout share {o.Rollout}
        (rows of each SST batch fed the Reasoner's own chain). Talkers d={o.TalkerHidden}, {o.TalkerLayers} decoder layers: Mono
        ({m.Mono.parameters().Sum(p => p.numel()):N0} parameters), Dual ({m.Dual.parameters().Sum(p => p.numel()):N0}, {o.TalkerEncoderLayers} encoder layer),
        both trained on the Reasoner's free-running chains and decoded greedily with a KV cache. Coupled baseline: the same
        pre-trained transformer trained on as an LM on the same batches for as many steps as SST.{(o.TrainSlips > 0 ? $" Slip-augmented training: {o.TrainSlips:P0} of the trace input tokens of both the Talkers and the baseline slipped (targets clean)." : "")} Steps: pre-training
        {o.PretrainSteps}, SST {o.SstSteps}, Talkers {o.TalkerSteps}, batch {o.BatchSize}.
        """);

    static ExperimentResult Write(ReasonerOptions o, string report, JsonObject results) =>
        new(Path.GetFullPath(o.OutDir), StudyFiles.Write(o.OutDir, report, results), results);

    // ----------------------------------------------------------------------------------------------------------------
    // Tree search
    // ----------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// Binary-tree routing: verified accuracy of Reasoner + each Talker vs the coupled baseline on held-out trees, between
    /// the oracle-chain ceiling and the other-problem floor; a PCA of the latents (coloured by the token each one should
    /// say, vocabulary directions drawn in); the mixed-latent analysis: at every latent whose token is a branch letter
    /// (l or r), NNLS over the (unit) vocabulary embeddings, how often the correct branch carries the larger weight and
    /// how many branches carry non-trivial weight (≥ 5% of the total non-negative weight); the chain's drift.
    /// </summary>
    public static ExperimentResult TreeSearch(ReasonerOptions o, int evalProblems = 200, TextWriter? log = null)
    {
        log ??= Console.Out;
        var sw = Stopwatch.StartNew();
        var phases = TrainAll(o, log);
        var data = (TaskReasonerData)ReasonerPhases.Data(o);
        var test = data.Test(evalProblems, o.Seed + 99);
        using var m = RunModels.Load(o);
        var study = new Study("tree search", Arms(m, data, test)) { Pairs = StandardPairs };
        foreach (var a in study.Arms) log.WriteLine($"tree-search: {a.Name} {a.Accuracy}");

        var mixed = MixedLatents(m.Reasoner, data, test.Take(Math.Min(200, test.Count)).ToList(), Path.Combine(o.OutDir, "latents_pca.png"));
        var (driftMd, driftJson) = Drift(m, data, test, Path.Combine(o.OutDir, "chain_drift.png"));
        TrainingCurves(o);
        var results = new JsonObject
        {
            ["experiment"] = "tree-search", ["task"] = data.Name, ["options"] = o.ToJson(),
            ["study"] = study.ToJson(), ["mixed_latents"] = mixed.ToJson(), ["chain_drift"] = driftJson,
            ["reasoner_parameters"] = m.Reasoner.Model.ParameterCount(),
            ["seconds"] = sw.Elapsed.TotalSeconds,
        };
        var report = Inv($"""
            # JEPA-Reasoner: tree search ({data.Name})

            {Describe(o, m)}
            Answers checked by the task's exact verifier; Wilson 95% intervals; paired differences on the same problems.

            Verified accuracy on {test.Count} held-out trees:

            {study.ArmsTable()}
            {study.PairedTable()}
            ## Mixed latents

            {mixed.ToMarkdown()}

            ![PCA of latents](latents_pca.png)

            ## Chain drift (free-running vs oracle chain, per continuation position)

            {driftMd}
            ![chain drift](chain_drift.png)

            ## Training

            {PhaseTable(phases)}
            Total time {sw.Elapsed.TotalSeconds:F0} s. Curves: `curve_pretrain.png`, `curve_baseline.png`, `curve_sst.png` (from
            `<phase>/train/metrics.jsonl`; SST also logs eval_effective_rank and eval_dim_std).

            ![pre-training](curve_pretrain.png) ![SST](curve_sst.png)
            """);
        return Write(o, report, results);
    }

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

    // ----------------------------------------------------------------------------------------------------------------
    // CFG robustness
    // ----------------------------------------------------------------------------------------------------------------

    public static readonly double[] DefaultNoiseRates = [0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30];

    /// <summary>
    /// Trained on clean Dyck-2 prefixes; tested on held-out prefixes whose tokens are each replaced with probability r
    /// (answer = the clean prefix's completion). The clean rate is a full study (ceiling and floor included); every rate
    /// grades the three deployable arms; accuracy and normalised accuracy (acc(r) / acc(0)) per rate, on one plot.
    /// </summary>
    public static ExperimentResult CfgNoise(ReasonerOptions o, int evalProblems = 200, IReadOnlyList<double>? rates = null, TextWriter? log = null)
    {
        log ??= Console.Out;
        rates ??= DefaultNoiseRates;
        var sw = Stopwatch.StartNew();
        var (phases, data) = CfgSweepStart("cfg-noise", o, rates, log);
        using var m = RunModels.Load(o);
        // The exact posterior is exponential in the prefix length: beyond its reach the sweep has no ceiling column.
        bool bayesExact = data.Difficulty <= CfgFamily.MaxPosteriorLength;
        string[] swept = bayesExact ? [MonoArm, DualArm, CoupledArm, BayesArm] : [MonoArm, DualArm, CoupledArm];
        var rows = new List<(double Rate, Proportion[] Acc)>();
        IReadOnlyList<Arm>? clean = null;
        IReadOnlyList<ReasonerExample>? cleanTest = null;
        foreach (var rate in rates)
        {
            // The same seed at every rate: the same clean problems, only the corruption differs.
            var noisy = new CfgFamily(rate);
            var test = data.Test(evalProblems, o.Seed + 77, noisy);
            var arms = Arms(m, data, test, bounds: rate == 0);
            if (rate == 0) { clean = arms; cleanTest = test; }
            // The ceiling under noise: the exact posterior's answer, knowing the prefix sampler and the noise model.
            Proportion Bayes() => Proportion.Wilson(test.Count(x => data.Family.Verify(x.Problem!, noisy.MostLikelyCompletion(x.Problem!.Prompt))), test.Count);
            var acc = swept.Select(n => n == BayesArm ? Bayes() : arms.First(a => a.Name == n).Accuracy!.Value).ToArray();
            rows.Add((rate, acc));
            log.WriteLine(Inv($"cfg-noise {rate:P0}: {string.Join("; ", swept.Zip(acc, (n, a) => $"{n} {a}"))}"));
        }
        // The arms at rate 0 are the study; the rates are a knob swept over the deployable arms.
        var study = new Study("cfg noise", clean!)
        {
            Pairs = StandardPairs,
            Sweeps = Sweeps("token noise", swept, rows),
        };
        SweepPlot(Path.Combine(o.OutDir, "cfg_noise.png"), "CFG completion under input token noise", "token noise (%)", swept, rows);
        var (driftMd, driftJson) = Drift(m, data, cleanTest!, Path.Combine(o.OutDir, "chain_drift.png"));
        TrainingCurves(o);
        var results = new JsonObject
        {
            ["experiment"] = "cfg-noise", ["task"] = data.Name, ["options"] = o.ToJson(), ["seconds"] = sw.Elapsed.TotalSeconds,
            ["study"] = study.ToJson(), ["chain_drift"] = driftJson, ["normalised"] = SweepJson("noise", swept, rows),
        };
        var table = SweepTable("token noise", swept, rows, headroomOf: bayesExact ? BayesArm : null);
        var report = Inv($"""
            # JEPA-Reasoner: CFG robustness ({data.Name})

            {Describe(o, m)}
            Both models are trained on clean prefixes only. At test time each prompt token is replaced, independently with
            probability r, by another bracket; the expected answer stays the clean prefix's completion. Normalised accuracy
            = accuracy at r / accuracy at 0. {evalProblems} held-out problems per rate (the same clean problems at every rate);
            Wilson 95% intervals. {(bayesExact ? $"""
            `{BayesArm}` is the ceiling under noise: the answer with the largest exact posterior given
            the noisy prompt, knowing the prefix sampler and the noise model (no model reading only the noisy prompt does
            better in expectation). The last column is its headroom over the coupled baseline, in points of normalised
            accuracy. An arm with clean accuracy a₀ can reach at most {BayesArm}(r) / a₀ normalised, so an arm as accurate
            clean as the baseline can be ahead of it by at most that column; a weaker clean arm is capped higher (it can look
            flatter), which is why the comparison needs matched clean accuracy.
            """ : $"No ceiling under noise: the exact posterior is out of reach beyond {CfgFamily.MaxPosteriorLength} prefix tokens.")}

            Clean prefixes (r = 0):

            {study.ArmsTable()}
            {study.PairedTable()}
            Under noise:

            {table}
            ![normalised accuracy under token noise](cfg_noise.png)

            ## Chain drift on the clean problems (free-running vs oracle chain, per continuation position)

            {driftMd}
            ![chain drift](chain_drift.png)

            ## Training

            {PhaseTable(phases)}
            Total time {sw.Elapsed.TotalSeconds:F0} s. Curves: `curve_pretrain.png`, `curve_baseline.png`, `curve_sst.png`.
            """);
        return Write(o, report, results);
    }

    /// <summary>Where both CFG sweeps start: the rates and the task checked before anything trains, then every phase trained or found.</summary>
    static (IReadOnlyList<PhaseResult> Phases, TaskReasonerData Data) CfgSweepStart(string experiment, ReasonerOptions o, IReadOnlyList<double> rates, TextWriter log)
    {
        if (rates.Count == 0 || rates[0] != 0) throw new ArgumentException($"{experiment}: the rates must start with 0 (the normalising rate)");
        if (ReasonerPhases.Data(o) is not TaskReasonerData { Family: CfgFamily } data)
            throw new ArgumentException($"{experiment} needs the cfg task family, got '{o.Task}'");
        return (TrainAll(o, log), data);
    }

    public static readonly double[] DefaultSlipRates = [0, 0.02, 0.05, 0.10, 0.20, 0.30];

    /// <summary>
    /// Token slips during generation (<see cref="GenerationSlips"/>), the errors the decoupling contains by
    /// construction: the clean held-out prefixes of cfg-noise at every rate; while thinking, each trace token either
    /// model emits is replaced with probability r by another trace token, which it then reads. The coupled LM reads its
    /// slips back into its state; the JEPA-Reasoner's chain never sees them, only its Talker does. The answer is never
    /// slipped, so each model's own slip-free accuracy is its ceiling (normalised 1: a model that contained every slip
    /// stays there). Same models and run folder as cfg-noise (trained if missing); the report goes to
    /// <c>&lt;out&gt;/generation-slips/</c>.
    /// </summary>
    public static ExperimentResult CfgSlips(ReasonerOptions o, int evalProblems = 200, IReadOnlyList<double>? rates = null, TextWriter? log = null)
    {
        log ??= Console.Out;
        rates ??= DefaultSlipRates;
        var sw = Stopwatch.StartNew();
        var (phases, data) = CfgSweepStart("cfg-slips", o, rates, log);
        using var m = RunModels.Load(o);
        var test = data.Test(evalProblems, o.Seed + 77);
        string[] swept = [MonoArm, DualArm, CoupledArm];
        var rows = new List<(double Rate, Proportion[] Acc)>();
        IReadOnlyList<Arm>? clean = null;
        var slips = GenerationSlips.For(data, 0, o.Seed + 78);   // the trace alphabet, read once; each rate reuses it
        foreach (var rate in rates)
        {
            slips = slips.WithRate(rate);
            var arms = Arms(m, data, test, bounds: rate == 0, slips: rate == 0 ? null : slips);
            if (rate == 0) clean = arms;
            var acc = swept.Select(n => arms.First(a => a.Name == n).Accuracy!.Value).ToArray();
            rows.Add((rate, acc));
            log.WriteLine(Inv($"cfg-slips {rate:P0}: {string.Join("; ", swept.Zip(acc, (n, a) => $"{n} {a}"))}"));
        }
        var study = new Study("cfg slips", clean!)
        {
            Pairs = StandardPairs,
            Sweeps = Sweeps("slip rate", swept, rows),
        };
        string dir = Path.Combine(o.OutDir, "generation-slips");
        Directory.CreateDirectory(dir);
        SweepPlot(Path.Combine(dir, "cfg_slips.png"), "CFG completion with token slips while thinking", "slip rate per trace token (%)", swept, rows);
        double traceLength = test.Average(x => x.Continuation.TakeWhile(t => t != slips.ThinkEnd).Count());
        var results = new JsonObject
        {
            ["experiment"] = "cfg-slips", ["task"] = data.Name, ["options"] = o.ToJson(), ["seconds"] = sw.Elapsed.TotalSeconds,
            ["mean_trace_tokens"] = traceLength, ["study"] = study.ToJson(), ["normalised"] = SweepJson("slip_rate", swept, rows),
        };
        var report = Inv($"""
            # JEPA-Reasoner: CFG with token slips during generation ({data.Name})

            {Describe(o, m)}
            The same {evalProblems} clean held-out prefixes at every rate. While a model is thinking, each trace token it emits
            is replaced with probability r by another of the {slips.Alphabet.Count} trace tokens (uniformly), and the slipped
            token is what it reads next; the thinking marker, the answer and &lt;eos&gt; are never slipped. Traces are
            {traceLength:F1} tokens on average, so about {traceLength:F0}·r slips per problem. The coupled LM reads its slips back
            into its state. The JEPA-Reasoner's chain never sees them (∂chain/∂token = 0, tested); only its Talker does. So
            any answer lost was lost to slips that travelled. Each model's ceiling is its own slip-free accuracy (normalised
            1). Normalised accuracy = accuracy at r / accuracy at 0; Wilson 95% intervals.

            Slip-free (r = 0):

            {study.ArmsTable()}
            {study.PairedTable()}
            With slips:

            {SweepTable("slip rate", swept, rows)}
            ![normalised accuracy with token slips](cfg_slips.png)

            ## Training

            {PhaseTable(phases)}
            Total time {sw.Elapsed.TotalSeconds:F0} s.
            """);
        return new(Path.GetFullPath(dir), StudyFiles.Write(dir, report, results), results);
    }

    const string BayesArm = "bayes-optimal";

    static double Norm(double v, double zero) => zero > 0 ? v / zero : double.NaN;

    /// <summary>Each swept arm's accuracy over the rates, as the study's sweeps.</summary>
    static IReadOnlyList<ScaleSweep> Sweeps(string knob, string[] swept, IReadOnlyList<(double Rate, Proportion[] Acc)> rows) =>
        swept.Select((n, i) => new ScaleSweep(n, knob, rows.Select(x => new SweepPoint(x.Rate, x.Acc[i])).ToList())).ToList();

    /// <summary>Each swept arm's accuracy over the rates, normalised by its own accuracy at rate 0.</summary>
    static void SweepPlot(string path, string title, string xLabel, string[] swept, IReadOnlyList<(double Rate, Proportion[] Acc)> rows)
    {
        var xs = rows.Select(r => 100 * r.Rate).ToArray();
        StudyPlots.Lines(path, title, xLabel, "normalised accuracy (acc / acc at 0%)",
            swept.Select((n, i) => new Curve(n == BayesArm ? n + " (ceiling)" : n, xs, rows.Select(x => Norm(x.Acc[i].Value, rows[0].Acc[i].Value)).ToArray(), Dashed: n == CoupledArm)).ToList(),
            markerSize: 7, legend: ScottPlot.Alignment.UpperRight, width: 800, height: 550);
    }

    /// <summary>
    /// Accuracy and normalised accuracy per rate for every swept arm; with <paramref name="headroomOf"/>, a last column
    /// with that arm's normalised lead over the coupled baseline, in points.
    /// </summary>
    static string SweepTable(string knob, string[] swept, IReadOnlyList<(double Rate, Proportion[] Acc)> rows, string? headroomOf = null)
    {
        var at0 = rows[0].Acc.Select(p => p.Value).ToArray();
        int c = Array.IndexOf(swept, CoupledArm), h = headroomOf is null ? -1 : Array.IndexOf(swept, headroomOf);
        var table = new StringBuilder($"| {knob} | " + string.Join(" | ", swept) + " | " + string.Join(" | ", swept.Select(n => n + " normalised"))
            + (h >= 0 ? " | headroom over the baseline" : "") + " |\n|---|" + string.Concat(Enumerable.Repeat("---|", 2 * swept.Length + (h >= 0 ? 1 : 0))) + "\n");
        static string F(double v, string format) => double.IsNaN(v) ? "n/a" : v.ToString(format, CultureInfo.InvariantCulture);
        foreach (var (rate, acc) in rows)
            table.AppendLine(Inv($"| {rate:P0} | {string.Join(" | ", acc.Select(a => a.ToString()))} | {string.Join(" | ", acc.Select((a, i) => F(Norm(a.Value, at0[i]), "F3")))} |")
                + (h >= 0 ? $" {F(100 * (Norm(acc[h].Value, at0[h]) - Norm(acc[c].Value, at0[c])), "+0.0;-0.0;0.0")} |" : ""));
        return table.ToString();
    }

    /// <summary>Per rate: each swept arm's accuracy and normalised accuracy (keys from the arm names).</summary>
    static JsonArray SweepJson(string knob, string[] swept, IReadOnlyList<(double Rate, Proportion[] Acc)> rows) =>
        new(rows.Select(x =>
        {
            var row = new JsonObject { [knob] = x.Rate };
            for (int i = 0; i < swept.Length; i++)
            {
                string key = swept[i] switch { MonoArm => "mono", DualArm => "dual", CoupledArm => "coupled", BayesArm => "bayes", var n => n };
                row[key + "_accuracy"] = x.Acc[i].Value;
                row[key + "_normalised"] = Norm(x.Acc[i].Value, rows[0].Acc[i].Value);
            }
            return (JsonNode)row;
        }).ToArray());

    // GSM8K few-shot
    // ----------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// GSM8K-format few-shot evaluation: k solved training examples in front of each test question, final answers taken
    /// after '####' (else the last number) and compared numerically. With no test file the last HoldOut examples of the
    /// training file (a fifth when HoldOut is 0) are the test set.
    /// </summary>
    const string JepaArm = "jepa-reasoner";

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
        var phases = TrainAll(o, log, [o.Talker]);
        var data = (Gsm8kReasonerData)ReasonerPhases.Data(o);
        using var reasoner = Reasoner.Load(o.ModelDir(ReasonerPhases.Sst));
        using var talker = Talker.Load(o.ModelDir(ReasonerPhases.TalkerPhase(o.Talker)));
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
            var notes = Inv($"{k} shots; mean prompt {(int)xs.Average(x => x.Prompt.Length)} tokens");
            Arm[] pair =
            [
                Arm.Graded($"{JepaArm} {k}-shot", $"JEPA-Reasoner + {o.Talker} Talker", ArmRole.Method, jg.Select(g => g.Correct).ToList(), notes: notes),
                Arm.Graded($"{CoupledArm} {k}-shot", "the same pre-trained transformer trained on as an LM", ArmRole.Reference, bg.Select(g => g.Correct).ToList(), notes: notes),
            ];
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
