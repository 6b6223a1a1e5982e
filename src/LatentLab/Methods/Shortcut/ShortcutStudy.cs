using LatentLab.Tensors;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using LatentLab.Hooks;
using LatentLab.IO;
using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>Everything that defines one shortcut study (written to the study's config.json).</summary>
public sealed record ShortcutStudyOptions
{
    /// <summary>Model folder: the char teacher or a Hugging Face checkpoint with a thinking chat template.</summary>
    public required string ModelDir { get; init; }
    public string Task { get; init; } = "addition";
    public int? Difficulty { get; init; }
    public int TrainProblems { get; init; } = 1500;
    public int TestProblems { get; init; } = 300;
    public string Point { get; init; } = "blocks.-2.resid_post";
    public int K { get; init; } = 1;
    public long Seed { get; init; }
    public int BatchSize { get; init; } = 128;
    /// <summary>Own (the teacher's greedy trace, the protocol) or Reference (the task's steps forced up to the marker).</summary>
    public TraceMode Trace { get; init; } = TraceMode.Own;
    /// <summary>Train on unverified traces too. Only for plumbing checks on untrained models: targets must verify.</summary>
    public bool UseUnverified { get; init; }
    /// <summary>Run Phase 2/3 even when the promotion gate fails (the default stops, as the protocol says).</summary>
    public bool IgnoreGate { get; init; }
    public PredictorConfig Predictor { get; init; } = new() { Steps = 600 };
    /// <summary>The search over hook point × K × predictor kind that picks the study's configuration on a validation split.</summary>
    public ConfigSearchOptions Search { get; init; } = new();
    public ShortcutEvalOptions Eval { get; init; } = new();
    public PromotionGate Gate { get; init; } = new();
    public NoGoThresholds NoGo { get; init; } = new();
    public string OutDir { get; init; } = "runs/shortcut";
    public string Device { get; init; } = "cpu";
    /// <summary>Activation dtype of the teacher's forward passes: auto (measured here, see ComputePolicy), f32 or bf16.</summary>
    public string Compute { get; init; } = "auto";
}

/// <summary>Thresholds of the seed's no-go criteria (each row of the table states its rule).</summary>
public sealed record NoGoThresholds
{
    public double MinCounterfactualSuccess { get; init; } = 0.8;
    public double MinNuisanceStability { get; init; } = 0.8;
    public double MaxSeparability { get; init; } = 0.75;
    public double MinInterventionSuccess { get; init; } = 0.5;
    public double MaxScaleFragility { get; init; } = 0.1;
    public double MinProbeLift { get; init; } = 0.1;
}

/// <param name="Uninformative">The criterion could not have passed even with a perfect predictor (its ceiling is below the
/// rule), or passes only because every arm scores zero: its number measures the setting, not the shortcut.</param>
public sealed record NoGoRow(string Criterion, string Evidence, string Rule, bool? Pass, bool Uninformative = false)
{
    public string Status => Uninformative ? "UNINFORMATIVE" : Pass switch { true => "PASS", false => "FAIL", null => "NOT RUN" };
}

public sealed record ShortcutStudyReport(string OutDir, string ReportPath, bool GatePassed, IReadOnlyList<NoGoRow> NoGo,
    ShortcutEvalReport? Eval, ShortcutDiagnosticsResult Diagnostics, double Seconds)
{
    public bool Accepted => NoGo.All(r => r.Pass == true && !r.Uninformative);
    /// <summary>The configuration search's table and choice (null when the search was off).</summary>
    public ConfigSearchResult? Search { get; init; }
    /// <summary>The configuration the study ran with: hook point, K and predictor kind (the search's choice, or as given).</summary>
    public SearchCandidate Configuration { get; init; } = new("", PredictorKind.Mlp, 1);
}

/// <summary>
/// The latent-shortcut study end to end: Phase 0 (extract h_pre / h_post from the teacher's own verified traces),
/// Phase 1 (train q(h_pre) ≈ stopgrad(h_post), diagnostics, promotion gate), Phase 2/3 (injection arms at matched
/// compute, causal and adversarial tests), then report.md with the seed's no-go criteria computed one by one.
/// A negative answer is a result: every row says which number failed which rule.
/// </summary>
public static class ShortcutStudy
{
    public static ShortcutStudyReport Run(ShortcutStudyOptions o, TextWriter? log = null)
    {
        log ??= Console.Out;
        var total = Stopwatch.StartNew();
        void Say(string s) => log.WriteLine($"[shortcut] {s} ({total.Elapsed.TotalSeconds:F0} s)");
        Directory.CreateDirectory(o.OutDir);
        Tensors.ComputePolicy.Validate(o.Compute);

        var family = TaskRegistry.Get(o.Task);
        int difficulty = o.Difficulty ?? family.Difficulty.Default;
        var fmt = TraceFormat.ForModel(o.ModelDir, family);
        // A bottleneck teacher's post state is its slots: K is their number.
        if (fmt.Slots > 0 && o.K != fmt.Slots)
        {
            if (o.K != 1) throw new ArgumentException($"the teacher has {fmt.Slots} bottleneck slots; K must be {fmt.Slots} (got {o.K})");
            o = o with { K = fmt.Slots };
        }
        using var teacher = Checkpoints.Load(o.ModelDir, device: Tensors.TorchRuntime.ParseDevice(o.Device));
        // Every forward pass of the study (extraction, the arms' copies of the teacher) runs in this dtype; a re-run of
        // the study keeps the one its config.json records, so its resumable stores still match.
        var configPath = Path.Combine(o.OutDir, "config.json");
        var compute = Tensors.ComputePolicy.Apply(o.Compute, teacher, configPath, log);
        var config = JsonSerializer.SerializeToNode(o, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })!.AsObject();
        config[Tensors.ComputePolicy.StudyRecordKey] = compute.ToJson();
        AtomicFile.WriteAllText(configPath, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

        // Phase 0: targets from the teacher's own traces, resumable stores.
        var extraction = new ExtractionOptions { Point = o.Point, K = o.K, BatchSize = o.BatchSize, Trace = o.Trace };
        LatentStore Extract(Split split, int n, string name)
        {
            var problems = TaskSplits.Generate(family, split, n, difficulty, o.Seed);
            var dir = Path.Combine(o.OutDir, "latents", name);
            var m = LatentExtraction.Run(teacher, fmt.Tokenizer, fmt, problems,
                extraction with { Source = new TaskSource(family.Name, difficulty, name, o.Seed, n) }, dir);
            Say($"phase 0: {name}: {m.Rows} traces, {m.Verified} verified, {m.Skipped.Count} skipped");
            return LatentStore.Open(dir, teacher, fmt.Tokenizer);
        }
        var trainStore = Extract(Split.Train, o.TrainProblems, "train");
        var testStore = Extract(Split.Test, o.TestProblems, "test");
        bool verified = !o.UseUnverified;
        var trainSamples = trainStore.Samples(verified);
        var testSamples = testStore.Samples(verified);
        if (trainSamples.Count < 20 || testSamples.Count < 10)
            throw new InvalidOperationException($"too few verified traces to study ({trainSamples.Count} train, {testSamples.Count} test): the teacher does not solve this task with thinking");
        if (o.UseUnverified)
        {
            // Plumbing mode: the arms that learn from the teacher's verified answers learn the reference answers instead.
            trainSamples = trainSamples.Select(x => x with { TeacherAnswer = x.Problem.Answer, Verified = true }).ToList();
        }
        // The configuration search (hook point × K × predictor kind), on a validation split of the training problems only.
        // The chosen point's states are read from the same traces through the store's one path and rule.
        string point = trainStore.Point;
        int k = o.K;
        var predictorConfig = o.Predictor;
        ConfigSearchResult? search = null;
        if (o.Search.Enabled)
        {
            search = ConfigSearch.Run(teacher, fmt, trainSamples, o.K, o.Predictor with { Seed = o.Seed }, o.Search,
                Path.Combine(o.OutDir, "search"), o.BatchSize, log);
            (point, k) = (search.Chosen.Point, search.Chosen.K);
            predictorConfig = predictorConfig with { Kind = search.Chosen.Kind };
            Say($"search: chose {search.Chosen} from {search.Rows.Count} candidates");
        }
        bool fromStore = point == trainStore.Point && k == o.K;
        var (preTrain, postTrain) = fromStore
            ? (trainStore.Pre(verified, ScalarType.Float32), trainStore.Post(verified, ScalarType.Float32))
            : LatentExtraction.States(teacher, trainSamples, point, k, ScalarType.Float32, o.BatchSize, fmt);
        var (preTest, postTest) = fromStore
            ? (testStore.Pre(verified, ScalarType.Float32), testStore.Post(verified, ScalarType.Float32))
            : LatentExtraction.States(teacher, testSamples, point, k, ScalarType.Float32, o.BatchSize, fmt);
        using var _preTrain = preTrain;
        using var _postTrain = postTrain;
        using var _preTest = preTest;
        using var _postTest = postTest;
        int leaks = trainSamples.Concat(testSamples).Count(s => LeakRule.TargetPositions(s, k).Any(p => p >= s.FirstAnswerPosition));

        // Phase 1: the predictor, its diagnostics and the promotion gate.
        var twins = Twins(teacher, fmt, testSamples, point, o.Seed);
        var phase1 = PredictorPromotion.Run(new PredictorData(preTrain, postTrain, trainSamples, preTest, postTest, testSamples, twins),
            predictorConfig with { K = k, Seed = o.Seed }, Path.Combine(o.OutDir, "predictor"),
            new DiagnosticsOptions { Gate = o.Gate, Seed = o.Seed }, log: TextWriter.Null);
        var d = phase1.Diagnostics;
        Say($"phase 1: cosine {d.MeanCosine:F3}, top-1 {d.Top1}, gate {(d.Gate.Pass ? "PASS" : "FAIL")}");

        // Phase 2/3: only past the gate (unless asked), as the protocol says.
        ShortcutEvalReport? eval = null;
        if (d.Gate.Pass || o.IgnoreGate)
        {
            using var predictor = LatentPredictor.Load(phase1.PredictorDir);
            eval = ShortcutEvaluation.Run(teacher, fmt, predictor, trainSamples, preTrain, postTrain, testSamples, preTest, postTest,
                o.Eval with { Point = point, Seed = o.Seed }, Path.Combine(o.OutDir, "eval"), log, "MLP predictor");
            Say("phases 2 and 3 done");
        }
        else Say("promotion gate failed: phases 2 and 3 not run");

        var noGo = NoGoTable(o.NoGo, d, eval, leaks, trainSamples.Count + testSamples.Count);
        var reportPath = Path.Combine(o.OutDir, "report.md");
        var report = new ShortcutStudyReport(Path.GetFullPath(o.OutDir), reportPath, d.Gate.Pass, noGo, eval, d, total.Elapsed.TotalSeconds)
        {
            Search = search, Configuration = new SearchCandidate(point, predictorConfig.Kind, k),
        };
        WriteReport(report, o, family, difficulty, trainStore, testStore, phase1, point, k, search);
        return report;
    }

    /// <summary>h_pre of paraphrased and renamed twins of the test problems (only h_pre is needed: no generation).</summary>
    static IReadOnlyList<TwinSet> Twins(DecoderLM teacher, TraceFormat fmt, IReadOnlyList<TraceSample> test, string point, long seed)
    {
        var sets = new List<TwinSet>();
        foreach (var kind in new[] { EditKind.Paraphrase, EditKind.Rename })
        {
            var pairs = test.Select((s, i) => (s, e: fmt.Family.Edit(s.Problem, kind, seed * 7919 + i))).Where(p => p.e.Supported).ToList();
            if (pairs.Count < 10) continue;
            var original = PromptStates(teacher, pairs.Select(p => p.s.PromptIds).ToList(), point);
            var edited = PromptStates(teacher, pairs.Select(p => fmt.PromptIds(p.e.Edited)).ToList(), point);
            sets.Add(new TwinSet(kind, original, edited));
        }
        return sets;
    }

    /// <summary>The hook point's state at each prompt's last token, [N, D] float32 (read through <see cref="KvInput.Prompts"/>).</summary>
    public static Tensor PromptStates(DecoderLM model, IReadOnlyList<int[]> prompts, string point, int batch = 128)
    {
        using var all = KvInput.Prompts(model, prompts, point, batch);
        return all.LastStates();
    }

    static string P(double x) => double.IsNaN(x) ? "n/a" : (x * 100).ToString("0.0", CultureInfo.InvariantCulture) + "%";

    /// <summary>The seed's no-go criteria, each with its number and rule. Rows that need Phase 2/3 are NOT RUN when the gate stopped the study.</summary>
    public static IReadOnlyList<NoGoRow> NoGoTable(NoGoThresholds t, ShortcutDiagnosticsResult d, ShortcutEvalReport? eval, int leaks, int samples)
    {
        var rows = new List<NoGoRow>();
        var n = eval?.NoGo;
        NoGoRow Needs(string criterion, string rule) => new(criterion, "phase 2/3 not run (promotion gate failed)", rule, null);

        // Each criterion that a perfect predictor could not meet either is UNINFORMATIVE, with the ceiling in its evidence.
        var ceil = n?.Ceiling;
        string C() => ceil is { } c ? $"; ceiling ({n!.CeilingArm}) {c}" : "";
        rows.Add(n is null ? Needs("shortcut beats direct-answer distillation", "difference's 95% interval above 0")
            : new("shortcut beats direct-answer distillation",
                $"{n.ShortcutArm} {n.ShortcutAccuracy} vs distillation {n.DistillationAccuracy}: {n.ShortcutMinusDistillation}{C()}",
                "difference's 95% interval above 0", n.ShortcutMinusDistillation.Low > 0,
                ceil is { } c1 && Difference.Of(c1, n.DistillationAccuracy).Low <= 0));
        rows.Add(n is null ? Needs("gains survive counterfactual / execution checks", "")
            : new("gains survive counterfactual / execution checks",
                $"verified accuracy {n.ShortcutAccuracy}; counterfactual edits answered right {n.CounterfactualSuccess}; nuisance edits unchanged {n.NuisanceStability}{C()}",
                $"counterfactual ≥ {P(t.MinCounterfactualSuccess)} and nuisance ≥ {P(t.MinNuisanceStability)}",
                n.CounterfactualSuccess.Value >= t.MinCounterfactualSuccess && n.NuisanceStability.Value >= t.MinNuisanceStability,
                ceil is { } c2 && c2.Value < t.MinCounterfactualSuccess));
        rows.Add(n is null ? Needs("shallow baseline not competitive", "lexical upper bound below the shortcut's lower bound")
            : new("shallow baseline not competitive", $"lexical baseline {n.LexicalBaselineAccuracy} vs shortcut {n.ShortcutAccuracy}{C()}",
                "lexical upper bound below the shortcut's lower bound", n.LexicalBaselineAccuracy.High < n.ShortcutAccuracy.Low,
                ceil is { } c3 && n.LexicalBaselineAccuracy.High >= c3.Low));
        rows.Add(n is null ? Needs("train/inference states not easily separable", $"≤ {P(t.MaxSeparability)}")
            : new("train/inference states not easily separable", $"linear classifier tells h_post from ĥ_post apart {P(n.SeparabilityAccuracy)} of the time (50% = indistinguishable)",
                $"≤ {P(t.MaxSeparability)}", n.SeparabilityAccuracy <= t.MaxSeparability));
        rows.Add(new("no answer leak into the target", $"{leaks} of {samples} samples have a target position at or after the first answer token",
            "0 (targets are read from a forward pass cut at the boundary)", leaks == 0));
        rows.Add(n is null ? Needs("latent interventions causally move the answer", $"≥ {P(t.MinInterventionSuccess)}")
            : new("latent interventions causally move the answer", $"swapping in the twin's predicted latent gives the twin's answer {n.InterventionSuccess}{C()}",
                $"≥ {P(t.MinInterventionSuccess)}", n.InterventionSuccess.Value >= t.MinInterventionSuccess,
                ceil is { } c4 && c4.Value < t.MinInterventionSuccess));
        rows.Add(n is null ? Needs("no fragile injection scale", $"≤ {P(t.MaxScaleFragility)}")
            : new("no fragile injection scale", $"best scale minus its neighbours' mean accuracy: {P(n.ScaleFragility)}; best scale's accuracy {P(n.BestScaleAccuracy)}" +
                    (n.Floor is { } f ? $"; floor ({n.ShortcutArm} mean) {f}" : ""),
                $"≤ {P(t.MaxScaleFragility)}", n.ScaleFragility <= t.MaxScaleFragility,
                // A sweep that never rises above the arm's floor (its 95% upper bound) is flat because nothing works.
                n.BestScaleAccuracy == 0 || (n.Floor is { } fl && n.BestScaleAccuracy <= fl.High)));
        var predProbes = d.Probes.Where(p => p.Source.Contains("pred", StringComparison.OrdinalIgnoreCase)).ToList();
        var best = predProbes.MaxBy(p => p.Lift);
        rows.Add(new("the latent artefact is inspectable",
            best is null ? "no probe targets" : $"{predProbes.Count(p => p.Lift >= t.MinProbeLift)} of {predProbes.Count} intermediate values read from ĥ_post above the majority baseline; best {best.Target}: {P(best.Accuracy)} vs {P(best.Majority)}",
            $"at least one probe ≥ {P(t.MinProbeLift)} above baseline", best is not null && best.Lift >= t.MinProbeLift));
        return rows;
    }

    static void WriteReport(ShortcutStudyReport r, ShortcutStudyOptions o, ITaskFamily family, int difficulty,
        LatentStore train, LatentStore test, PromotionReport phase1, string point, int k, ConfigSearchResult? search)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# Latent shortcut study: {family.Name} (difficulty {difficulty})");
        sb.AppendLine();
        sb.AppendLine($"Question: can a learned predictor amortise this model's reasoning on this task, verified, at matched compute? " +
                      $"Model `{Path.GetFullPath(o.ModelDir)}`, states at `{point}`, K = {k}{(search is null ? "" : " (chosen by the configuration search below)")}. The study took {r.Seconds:F0} s.");
        sb.AppendLine();
        sb.AppendLine($"**Verdict: {(r.Accepted ? "shortcut ACCEPTED: every no-go criterion passes" : "shortcut NOT accepted")}.** " +
                      (r.GatePassed ? "" : r.Eval is null ? "The promotion gate failed, so the injection arms were not run. "
                          : "The promotion gate failed; phases 2 and 3 ran past it (ignore-gate) and are reported as past a failed gate. ") +
                      string.Join(" ", r.NoGo.Where(x => x.Pass == false).Select(x => $"Failed: {x.Criterion} ({x.Evidence})."))); 
        sb.AppendLine();
        sb.AppendLine("## No-go criteria");
        sb.AppendLine();
        sb.AppendLine("| criterion | evidence | rule | status |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var x in r.NoGo) sb.AppendLine($"| {x.Criterion} | {x.Evidence} | {x.Rule} | {x.Status} |");
        sb.AppendLine();
        sb.AppendLine("## Phase 0: targets");
        sb.AppendLine();
        sb.AppendLine($"Train: {train.Count} traces ({train.VerifiedCount} verified, used as targets); test: {test.Count} ({test.VerifiedCount} verified). " +
                      $"h_pre is read at the last prompt token, h_post at the end-of-thinking marker of the teacher's own greedy trace, " +
                      $"from a forward pass cut right after the marker. Stores: `latents/train`, `latents/test`.");
        sb.AppendLine();
        if (search is not null) sb.Append(search.ToMarkdown());
        sb.AppendLine(r.Diagnostics.ToMarkdown());
        sb.AppendLine($"Predictor run: `{Path.GetRelativePath(o.OutDir, phase1.RunDir)}` (curves.png, std_hist.png).");
        sb.AppendLine();
        if (r.Eval is { } e)
        {
            sb.AppendLine("## Phases 2 and 3: injection at matched compute, causal and adversarial tests");
            sb.AppendLine();
            sb.AppendLine(e.ToMarkdown());
            foreach (var plot in e.Plots) sb.AppendLine($"![{Path.GetFileNameWithoutExtension(plot)}]({Path.GetRelativePath(o.OutDir, plot)})");
        }
        AtomicFile.WriteAllText(r.ReportPath, sb.ToString());
        var json = new JsonObject
        {
            ["accepted"] = r.Accepted,
            ["gate_passed"] = r.GatePassed,
            ["seconds"] = r.Seconds,
            ["configuration"] = new JsonObject
            {
                ["point"] = r.Configuration.Point, ["k"] = r.Configuration.K, ["predictor"] = r.Configuration.Kind.ToString().ToLowerInvariant(),
                ["searched"] = r.Search is not null,
            },
            ["no_go"] = new JsonArray(r.NoGo.Select(x => (JsonNode)new JsonObject
            {
                ["criterion"] = x.Criterion, ["evidence"] = x.Evidence, ["rule"] = x.Rule, ["status"] = x.Status,
            }).ToArray()),
        };
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "study.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
