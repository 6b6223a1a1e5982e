using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;

namespace LatentLab.Methods.Shortcut;

/// <summary>Settings of one shortcut evaluation (written to the report's JSON).</summary>
public sealed record ShortcutEvalOptions
{
    /// <summary>Hook point where h_pre / h_post were read (the store's manifest names it); the delta and LoRA arms act there.</summary>
    public string Point { get; init; } = "blocks.1.resid_post";
    /// <summary>Training budget shared by the distillation student, the soft-token projection and the LoRA student.</summary>
    public int TrainSteps { get; init; } = 150;
    public int TrainBatch { get; init; } = 64;
    public double DistillLearningRate { get; init; } = 1e-3;
    public double ProjectionLearningRate { get; init; } = 3e-3;
    public double LoraLearningRate { get; init; } = 3e-3;
    public int LoraRank { get; init; } = 8;
    /// <summary>Weight of the hidden-state matching term (relative MSE) in the LoRA student's loss.</summary>
    public double LoraLambda { get; init; } = 1.0;
    public double[] Alphas { get; init; } = { 0.25, 0.5, 1, 1.5, 2 };
    public double[] SoftScales { get; init; } = { 0.25, 0.5, 1, 1.5, 2 };
    /// <summary>Test problems used for the edit, intervention and length tests (the first ones of the test set).</summary>
    public int Phase3Problems { get; init; } = 150;
    /// <summary>Lengths beyond the test difficulty for the OOD accuracy-vs-length test.</summary>
    public int OodExtra { get; init; } = 2;
    /// <summary>The latent arm whose numbers go into the no-go table ("soft-tokens" or "residual-delta"); null = the more accurate.</summary>
    public string? PrimaryArm { get; init; }
    public int EvalBatch { get; init; } = 128;
    public long Seed { get; init; }
    public bool Plots { get; init; } = true;
}

/// <summary>One arm's verified accuracy and the compute it spends per answer (forward only), or why it was not run.</summary>
public sealed record ArmResult(string Name, string Description, Proportion? Accuracy, double TokenSteps, double Flops,
    double TrainFlops, double Seconds, string Notes, string? NotRunReason = null)
{
    public static ArmResult NotRun(string name, string description, string reason) => new(name, description, null, 0, 0, 0, 0, "", reason);
}

public sealed record SweepPoint(double Scale, Proportion Accuracy);

/// <summary>Accuracy over an injection scale. Fragility: accuracy at the best scale minus the mean accuracy of its
/// neighbouring scales in the sweep (0 = flat; large = the result lives on a knife's edge).</summary>
public sealed record ScaleSweep(string Arm, string Knob, IReadOnlyList<SweepPoint> Points)
{
    public SweepPoint Best => Points.MaxBy(p => p.Accuracy.Value)!;

    public double Fragility
    {
        get
        {
            int i = Points.ToList().IndexOf(Best);
            var nb = new[] { i - 1, i + 1 }.Where(j => j >= 0 && j < Points.Count).Select(j => Points[j].Accuracy.Value).ToList();
            return nb.Count == 0 ? 0 : Best.Accuracy.Value - nb.Average();
        }
    }
}

public sealed record LengthResult(string Arm, int Difficulty, int Extra, Proportion Accuracy);

/// <summary>A difference of two independent proportions with Newcombe's hybrid-score 95% interval (from the Wilson intervals).</summary>
public sealed record Difference(double Value, double Low, double High)
{
    public static Difference Of(Proportion a, Proportion b)
    {
        double p1 = a.Value, p2 = b.Value, d = p1 - p2;
        return new(d, d - Math.Sqrt(Sq(p1 - a.Low) + Sq(b.High - p2)), d + Math.Sqrt(Sq(a.High - p1) + Sq(p2 - b.Low)));
        static double Sq(double x) => x * x;
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Value * 100:+0.0;-0.0;0.0} pp [{Low * 100:+0.0;-0.0;0.0}, {High * 100:+0.0;-0.0;0.0}]");
}

/// <summary>Every number the no-go table needs, for the primary latent arm.</summary>
public sealed record NoGoNumbers(
    string ShortcutArm,
    Proportion ShortcutAccuracy,
    Proportion DistillationAccuracy,
    Proportion DirectAccuracy,
    Proportion ThinkingAccuracy,
    Difference ShortcutMinusDistillation,
    Difference ShortcutMinusDirect,
    Proportion CounterfactualSuccess,
    Proportion NuisanceStability,
    Proportion LexicalBaselineAccuracy,
    double SeparabilityAccuracy,
    Proportion InterventionSuccess,
    double ScaleFragility,
    double ShortcutFlopsPerAnswer,
    double ThinkingFlopsPerAnswer);

public sealed record ShortcutEvalReport(
    string PredictorName,
    string Point,
    int TrainProblems,
    int TestProblems,
    IReadOnlyList<ArmResult> Arms,
    IReadOnlyList<ScaleSweep> Sweeps,
    IReadOnlyList<EditResult> Edits,
    IReadOnlyList<InterventionResult> Interventions,
    IReadOnlyList<LengthResult> Lengths,
    LexicalResult Lexical,
    SeparabilityResult Separability,
    NoGoNumbers NoGo,
    double Seconds,
    IReadOnlyList<string> Plots)
{
    public ArmResult Arm(string name) => Arms.First(a => a.Name == name);

    static string G(double x) => x.ToString("G3", CultureInfo.InvariantCulture);
    static string P(double x) => double.IsNaN(x) ? "n/a" : (x * 100).ToString("0.0", CultureInfo.InvariantCulture) + " %";

    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Predictor: **{PredictorName}**; states at `{Point}`; {TrainProblems} training / {TestProblems} test problems; evaluation took {Seconds:F0} s.");
        sb.AppendLine();
        sb.AppendLine("### Arms (verified accuracy, Wilson 95%; forward compute per answer)");
        sb.AppendLine();
        sb.AppendLine("| arm | what | accuracy | token-steps | FLOPs | training FLOPs | notes |");
        sb.AppendLine("|---|---|---|---|---|---|---|");
        foreach (var a in Arms)
            sb.AppendLine(a.NotRunReason is null
                ? $"| {a.Name} | {a.Description} | {a.Accuracy} | {a.TokenSteps:F1} | {G(a.Flops)} | {(a.TrainFlops > 0 ? G(a.TrainFlops) : "-")} | {a.Notes} |"
                : $"| {a.Name} | {a.Description} | not run | - | - | - | {a.NotRunReason} |");
        sb.AppendLine();
        sb.AppendLine("### Injection scale sweeps");
        sb.AppendLine();
        foreach (var s in Sweeps)
        {
            sb.AppendLine($"{s.Arm} ({s.Knob}): best {s.Knob} = {G(s.Best.Scale)}, fragility {P(s.Fragility)} (best minus mean of neighbours)");
            sb.AppendLine();
            sb.AppendLine($"| {s.Knob} | accuracy |");
            sb.AppendLine("|---|---|");
            foreach (var p in s.Points) sb.AppendLine($"| {G(p.Scale)} | {p.Accuracy} |");
            sb.AppendLine();
        }
        sb.AppendLine("### Counterfactual and nuisance edits");
        sb.AppendLine();
        sb.AppendLine("| arm | counterfactual: changed and correct | changed at all | nuisance: answer unchanged | nuisance: correct |");
        sb.AppendLine("|---|---|---|---|---|");
        foreach (var e in Edits)
            sb.AppendLine($"| {e.Arm} | {e.CounterfactualSuccess} | {e.CounterfactualChanged} | {e.NuisanceStable} | {e.NuisanceCorrect} |");
        sb.AppendLine();
        sb.AppendLine("### Latent intervention (original prompt, latent predicted for the counterfactual twin)");
        sb.AppendLine();
        sb.AppendLine("| arm | output = twin's answer | output changed | closer to twin's answer |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var i in Interventions) sb.AppendLine($"| {i.Arm} | {i.ToTwin} | {i.Moved} | {i.Closer} |");
        sb.AppendLine();
        sb.AppendLine("### Accuracy vs problem length");
        sb.AppendLine();
        var diffs = Lengths.Select(l => (l.Difficulty, l.Extra)).Distinct().OrderBy(d => d.Difficulty).ToList();
        sb.AppendLine("| arm | " + string.Join(" | ", diffs.Select(d => $"difficulty {d.Difficulty}{(d.Extra > 0 ? $" (+{d.Extra})" : "")}")) + " |");
        sb.AppendLine("|---|" + string.Concat(diffs.Select(_ => "---|")));
        foreach (var arm in Lengths.Select(l => l.Arm).Distinct())
            sb.AppendLine($"| {arm} | " + string.Join(" | ", diffs.Select(d => Lengths.FirstOrDefault(l => l.Arm == arm && l.Difficulty == d.Difficulty)?.Accuracy.ToString() ?? "-")) + " |");
        sb.AppendLine();
        sb.AppendLine($"Shallow lexical baselines: linear per-digit classifier {Lexical.LinearPerDigit}; nearest-neighbour lookup {Lexical.NearestNeighbour}.");
        sb.AppendLine();
        sb.AppendLine($"Separability of h_post vs ĥ_post (linear classifier, held-out): {P(Separability.HeldOutAccuracy)} on {Separability.TestRows} rows (50 % = indistinguishable).");
        sb.AppendLine();
        var n = NoGo;
        sb.AppendLine($"### No-go numbers (primary latent arm: {n.ShortcutArm})");
        sb.AppendLine();
        sb.AppendLine("| quantity | value |");
        sb.AppendLine("|---|---|");
        sb.AppendLine($"| shortcut accuracy | {n.ShortcutAccuracy} |");
        sb.AppendLine($"| answer-only distillation accuracy | {n.DistillationAccuracy} |");
        sb.AppendLine($"| shortcut − distillation | {n.ShortcutMinusDistillation} |");
        sb.AppendLine($"| shortcut − direct answer | {n.ShortcutMinusDirect} |");
        sb.AppendLine($"| counterfactual success | {n.CounterfactualSuccess} |");
        sb.AppendLine($"| nuisance stability | {n.NuisanceStability} |");
        sb.AppendLine($"| lexical baseline accuracy (best) | {n.LexicalBaselineAccuracy} |");
        sb.AppendLine($"| separability accuracy | {P(n.SeparabilityAccuracy)} |");
        sb.AppendLine($"| intervention success (output = twin's answer) | {n.InterventionSuccess} |");
        sb.AppendLine($"| scale fragility | {P(n.ScaleFragility)} |");
        sb.AppendLine($"| FLOPs per answer: shortcut / thinking | {G(n.ShortcutFlopsPerAnswer)} / {G(n.ThinkingFlopsPerAnswer)} |");
        return sb.ToString();
    }

    static JsonNode? Prop(Proportion? p) => p is not { } q ? null : new JsonObject
    {
        ["value"] = q.Trials == 0 ? null : q.Value, ["low"] = q.Low, ["high"] = q.High, ["successes"] = q.Successes, ["trials"] = q.Trials,
    };

    static JsonNode Diff(Difference d) => new JsonObject { ["value"] = d.Value, ["low"] = d.Low, ["high"] = d.High };

    public JsonObject ToJson()
    {
        var n = NoGo;
        return new JsonObject
        {
            ["predictor"] = PredictorName,
            ["point"] = Point,
            ["train_problems"] = TrainProblems,
            ["test_problems"] = TestProblems,
            ["seconds"] = Seconds,
            ["arms"] = new JsonArray(Arms.Select(a => (JsonNode)new JsonObject
            {
                ["name"] = a.Name, ["description"] = a.Description, ["accuracy"] = Prop(a.Accuracy), ["token_steps"] = a.TokenSteps,
                ["flops"] = a.Flops, ["train_flops"] = a.TrainFlops, ["seconds"] = a.Seconds, ["notes"] = a.Notes, ["not_run"] = a.NotRunReason,
            }).ToArray()),
            ["sweeps"] = new JsonArray(Sweeps.Select(s => (JsonNode)new JsonObject
            {
                ["arm"] = s.Arm, ["knob"] = s.Knob, ["best"] = s.Best.Scale, ["fragility"] = s.Fragility,
                ["points"] = new JsonArray(s.Points.Select(p => (JsonNode)new JsonObject { ["scale"] = p.Scale, ["accuracy"] = Prop(p.Accuracy) }).ToArray()),
            }).ToArray()),
            ["edits"] = new JsonArray(Edits.Select(e => (JsonNode)new JsonObject
            {
                ["arm"] = e.Arm, ["counterfactual_success"] = Prop(e.CounterfactualSuccess), ["counterfactual_changed"] = Prop(e.CounterfactualChanged),
                ["nuisance_stable"] = Prop(e.NuisanceStable), ["nuisance_correct"] = Prop(e.NuisanceCorrect), ["nuisance_unsupported"] = e.NuisanceUnsupported,
            }).ToArray()),
            ["interventions"] = new JsonArray(Interventions.Select(i => (JsonNode)new JsonObject
            {
                ["arm"] = i.Arm, ["to_twin"] = Prop(i.ToTwin), ["moved"] = Prop(i.Moved), ["closer"] = Prop(i.Closer),
            }).ToArray()),
            ["lengths"] = new JsonArray(Lengths.Select(l => (JsonNode)new JsonObject
            {
                ["arm"] = l.Arm, ["difficulty"] = l.Difficulty, ["extra"] = l.Extra, ["accuracy"] = Prop(l.Accuracy),
            }).ToArray()),
            ["lexical"] = new JsonObject { ["linear_per_digit"] = Prop(Lexical.LinearPerDigit), ["nearest_neighbour"] = Prop(Lexical.NearestNeighbour) },
            ["separability"] = new JsonObject { ["held_out_accuracy"] = Separability.HeldOutAccuracy, ["test_rows"] = Separability.TestRows },
            ["no_go"] = new JsonObject
            {
                ["shortcut_arm"] = n.ShortcutArm,
                ["shortcut_accuracy"] = Prop(n.ShortcutAccuracy),
                ["distillation_accuracy"] = Prop(n.DistillationAccuracy),
                ["direct_accuracy"] = Prop(n.DirectAccuracy),
                ["thinking_accuracy"] = Prop(n.ThinkingAccuracy),
                ["shortcut_minus_distillation"] = Diff(n.ShortcutMinusDistillation),
                ["shortcut_minus_direct"] = Diff(n.ShortcutMinusDirect),
                ["counterfactual_success"] = Prop(n.CounterfactualSuccess),
                ["nuisance_stability"] = Prop(n.NuisanceStability),
                ["lexical_baseline_accuracy"] = Prop(n.LexicalBaselineAccuracy),
                ["separability_accuracy"] = n.SeparabilityAccuracy,
                ["intervention_success"] = Prop(n.InterventionSuccess),
                ["scale_fragility"] = n.ScaleFragility,
                ["shortcut_flops_per_answer"] = n.ShortcutFlopsPerAnswer,
                ["thinking_flops_per_answer"] = n.ThinkingFlopsPerAnswer,
            },
            ["plots"] = new JsonArray(Plots.Select(p => (JsonNode)JsonValue.Create(p)!).ToArray()),
        };
    }

    public string ToJsonString() => ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true });
}
