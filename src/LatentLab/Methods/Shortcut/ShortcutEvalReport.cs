using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;

namespace LatentLab.Methods.Shortcut;

/// <summary>Settings of one shortcut evaluation (written to the report's JSON).</summary>
public sealed record ShortcutEvalOptions
{
    /// <summary>Hook point where h_pre / h_post were read (the store's manifest names it); the delta and LoRA arms act there.</summary>
    public string Point { get; init; } = "blocks.1.resid_post";
    /// <summary>Training budget shared by the distillation student, the soft-token projection and the LoRA student.</summary>
    /// <remarks>600: at 150 the distillation control was unconverged (8.0% on the demo teacher; 83.3% at 600, as the LoRA
    /// student went from 0% to 75.7% and the soft-token oracle from 10% to 98.7%), and controls at chance compare nothing.</remarks>
    public int TrainSteps { get; init; } = 600;
    public int TrainBatch { get; init; } = 64;
    public double DistillLearningRate { get; init; } = 1e-3;
    public double ProjectionLearningRate { get; init; } = 3e-3;
    public double LoraLearningRate { get; init; } = 3e-3;
    public int LoraRank { get; init; } = 8;
    /// <summary>Weight of the hidden-state matching term (relative MSE) in the LoRA student's loss.</summary>
    public double LoraLambda { get; init; } = 1.0;
    /// <summary>Learning rate of the KV-prefix predictor (bottleneck teachers).</summary>
    public double KvLearningRate { get; init; } = 1e-3;
    /// <summary>Weight of the cache-matching term (MSE of the standardised slot cache) in the KV-prefix predictor's loss.</summary>
    public double KvLambda { get; init; } = 0.1;
    public double[] Alphas { get; init; } = { 0.25, 0.5, 1, 1.5, 2 };
    public double[] SoftScales { get; init; } = { 0.25, 0.5, 1, 1.5, 2 };
    /// <summary>Test problems used for the edit, intervention and length tests (the first ones of the test set).</summary>
    public int Phase3Problems { get; init; } = 150;
    /// <summary>Lengths beyond the test difficulty for the OOD accuracy-vs-length test.</summary>
    public int OodExtra { get; init; } = 2;
    /// <summary>The latent arm whose numbers go into the no-go table ("soft-tokens", "residual-delta" or, on a bottleneck
    /// teacher, "kv-prefix"); null = the most accurate (ties: the one whose oracle scores higher).</summary>
    public string? PrimaryArm { get; init; }
    public int EvalBatch { get; init; } = 128;
    public long Seed { get; init; }
    public bool Plots { get; init; } = true;
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
    double ThinkingFlopsPerAnswer)
{
    /// <summary>The injection ceiling (an oracle arm on the same problems): a rule it cannot meet makes its criterion uninformative.</summary>
    public Proportion? Ceiling { get; init; }
    public string? CeilingArm { get; init; }
    /// <summary>The primary arm's best accuracy over its scale sweep (0: the sweep is flat at zero and says nothing).</summary>
    public double BestScaleAccuracy { get; init; } = double.NaN;
    /// <summary>The primary arm's floor (its mean-latent control): a sweep whose best point does not rise above it says nothing.</summary>
    public Proportion? Floor { get; init; }
}

/// <summary>
/// The shortcut evaluation: the arms, sweeps and length rows live in the shared <see cref="Evaluation.Study"/>; this
/// record adds only what is the shortcut's own (edits, interventions, lexical baselines, separability, no-go numbers).
/// </summary>
public sealed record ShortcutEvalReport(
    string PredictorName,
    string Point,
    int TrainProblems,
    int TestProblems,
    Study Study,
    IReadOnlyList<EditResult> Edits,
    IReadOnlyList<InterventionResult> Interventions,
    LexicalResult Lexical,
    SeparabilityResult Separability,
    NoGoNumbers NoGo,
    double Seconds,
    IReadOnlyList<string> Plots)
{
    public IReadOnlyList<Arm> Arms => Study.Arms;
    public IReadOnlyList<ScaleSweep> Sweeps => Study.Sweeps;
    public IReadOnlyList<LengthResult> Lengths => Study.Lengths;
    public Arm Arm(string name) => Study.Get(name);

    static string G(double x) => x.ToString("G3", CultureInfo.InvariantCulture);
    static string P(double x) => double.IsNaN(x) ? "n/a" : (x * 100).ToString("0.0", CultureInfo.InvariantCulture) + " %";

    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Predictor: **{PredictorName}**; states at `{Point}`; {TrainProblems} training / {TestProblems} test problems; evaluation took {Seconds:F0} s.");
        sb.AppendLine();
        sb.AppendLine("### Arms (verified accuracy, Wilson 95%; forward compute per answer)");
        sb.AppendLine();
        sb.Append(Study.ArmsTable());
        sb.AppendLine();
        sb.AppendLine("### Paired differences (same test problems, Newcombe 95%)");
        sb.AppendLine();
        sb.Append(Study.PairedTable());
        sb.AppendLine();
        sb.AppendLine("### Injection scale sweeps");
        sb.AppendLine();
        sb.Append(Study.SweepTables());
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
        sb.Append(Study.LengthTable());
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
        if (n.Ceiling is { } ceil) sb.AppendLine($"| injection ceiling ({n.CeilingArm}) | {ceil} |");
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

    static JsonNode? Prop(Proportion? p) => StudyFiles.Json(p);

    public JsonObject ToJson()
    {
        var n = NoGo;
        var study = Study.ToJson();
        JsonNode? Take(string key) { var v = study[key]; study.Remove(key); return v; }
        return new JsonObject
        {
            ["predictor"] = PredictorName,
            ["point"] = Point,
            ["train_problems"] = TrainProblems,
            ["test_problems"] = TestProblems,
            ["seconds"] = Seconds,
            ["arms"] = Take("arms"),
            ["paired"] = Take("paired"),
            ["sweeps"] = Take("sweeps"),
            ["edits"] = new JsonArray(Edits.Select(e => (JsonNode)new JsonObject
            {
                ["arm"] = e.Arm, ["counterfactual_success"] = Prop(e.CounterfactualSuccess), ["counterfactual_changed"] = Prop(e.CounterfactualChanged),
                ["nuisance_stable"] = Prop(e.NuisanceStable), ["nuisance_correct"] = Prop(e.NuisanceCorrect), ["nuisance_unsupported"] = e.NuisanceUnsupported,
            }).ToArray()),
            ["interventions"] = new JsonArray(Interventions.Select(i => (JsonNode)new JsonObject
            {
                ["arm"] = i.Arm, ["to_twin"] = Prop(i.ToTwin), ["moved"] = Prop(i.Moved), ["closer"] = Prop(i.Closer),
            }).ToArray()),
            ["lengths"] = Take("lengths"),
            ["lexical"] = new JsonObject { ["linear_per_digit"] = Prop(Lexical.LinearPerDigit), ["nearest_neighbour"] = Prop(Lexical.NearestNeighbour) },
            ["separability"] = new JsonObject { ["held_out_accuracy"] = Separability.HeldOutAccuracy, ["test_rows"] = Separability.TestRows },
            ["no_go"] = new JsonObject
            {
                ["shortcut_arm"] = n.ShortcutArm,
                ["shortcut_accuracy"] = Prop(n.ShortcutAccuracy),
                ["distillation_accuracy"] = Prop(n.DistillationAccuracy),
                ["direct_accuracy"] = Prop(n.DirectAccuracy),
                ["thinking_accuracy"] = Prop(n.ThinkingAccuracy),
                ["shortcut_minus_distillation"] = StudyFiles.Json(n.ShortcutMinusDistillation),
                ["shortcut_minus_direct"] = StudyFiles.Json(n.ShortcutMinusDirect),
                ["counterfactual_success"] = Prop(n.CounterfactualSuccess),
                ["nuisance_stability"] = Prop(n.NuisanceStability),
                ["lexical_baseline_accuracy"] = Prop(n.LexicalBaselineAccuracy),
                ["separability_accuracy"] = n.SeparabilityAccuracy,
                ["intervention_success"] = Prop(n.InterventionSuccess),
                ["scale_fragility"] = n.ScaleFragility,
                ["shortcut_flops_per_answer"] = n.ShortcutFlopsPerAnswer,
                ["thinking_flops_per_answer"] = n.ThinkingFlopsPerAnswer,
                ["ceiling_arm"] = n.CeilingArm,
                ["ceiling_accuracy"] = Prop(n.Ceiling),
            },
            ["plots"] = new JsonArray(Plots.Select(p => (JsonNode)JsonValue.Create(p)!).ToArray()),
        };
    }
}
