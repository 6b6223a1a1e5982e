using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using ScottPlot;

namespace LatentLab.Methods.Recurrence;

/// <summary>
/// Everything the study writes, through the shared Evaluation layer: results.json (the study's arms, each also with
/// {name, k, correct, total, flops}), report.md with the arms table (ceiling and floor marked, Wilson 95%), the paired
/// differences and the goal check, and four PNGs: accuracy vs K, accuracy vs p over training, loss vs p, and the
/// per-latent-step gradient norms. Only the recurrence-specific rows and plots are written here.
/// </summary>
public static class RecurrenceReport
{
    public const string AccuracyVsK = "accuracy_vs_k.png", AccuracyVsP = "accuracy_vs_p.png", LossVsP = "loss_vs_p.png", GradNorms = "latent_grad_norms.png";

    public static void Write(RecurrenceStudyOptions o, IReadOnlyList<RecurrenceResult> arms, double seconds)
    {
        var study = ToStudy(arms);
        var json = study.ToJson();
        json["options"] = o.ToJson();
        json["seconds"] = seconds;
        // The issue's contract: every arm also carries {name, k, correct, total, flops} at its top level.
        foreach (var (node, a) in json["arms"]!.AsArray().Zip(arms))
        {
            var row = node!.AsObject();
            row["k"] = a.K; row["mode"] = a.Mode; row["pause"] = a.Pause;
            row["correct"] = a.Accuracy.Successes; row["total"] = a.Accuracy.Trials;
            row["final_loss"] = double.IsFinite(a.FinalLoss) ? a.FinalLoss : null; row["run_dir"] = a.RunDir;
            row["curve"] = a.ToJson()["curve"]!.DeepClone();
        }
        var trained = arms.Where(a => a.RunDir is not null).ToList();
        PlotAccuracyVsK(Path.Combine(o.OutDir, AccuracyVsK), arms);
        StudyPlots.Lines(Path.Combine(o.OutDir, AccuracyVsP), "Validation accuracy vs p over training", "p (1 = token path, 0 = pure latent)",
            "accuracy (%)", trained.Where(a => a.Curve.Count > 0)
                .Select(a => new Curve(a.Name, a.Curve.Select(c => c.P).ToArray(), a.Curve.Select(c => 100 * c.Accuracy.Value).ToArray())).ToList(),
            yRange: (-2, 102), markerSize: 6, legend: Alignment.UpperRight, width: 800, height: 550);
        StudyPlots.Lines(Path.Combine(o.OutDir, LossVsP), "Training loss (answer tokens) vs p", "p", "cross-entropy",
            trained.Select(a => (a, rows: Rows(a))).Where(x => x.rows.Count > 0)
                .Select(x => new Curve(x.a.Name, x.rows.Select(r => r["p"]!.GetValue<double>()).ToArray(), x.rows.Select(r => r["loss"]!.GetValue<double>()).ToArray())).ToList(),
            markerSize: 2, legend: Alignment.UpperRight, width: 800, height: 550);
        StudyPlots.Lines(Path.Combine(o.OutDir, GradNorms), "‖∂L/∂latent_k‖ by latent step (mean over the last half of training)",
            "k (0 = encoded question, K = bridged latent)", "log10 gradient norm", GradNormCurves(trained),
            markerSize: 7, legend: Alignment.UpperLeft, width: 800, height: 550);
        StudyFiles.Write(o.OutDir, Markdown(o, study, arms, seconds), json);
    }

    /// <summary>
    /// The arms as a study on the same problems: the teacher's own explicit trace is the ceiling, its direct answer the
    /// floor, K = 0 (answers only) and the pause tokens are the references, every latent arm is a method arm.
    /// </summary>
    public static Study ToStudy(IReadOnlyList<RecurrenceResult> arms) => new("latent recurrence", arms.Select(a => new Arm(
        a.Name, Describe(a), Role(a), a.Accuracy, Flops: a.FlopsPerAnswer, Seconds: a.TrainSeconds,
        Notes: Notes(a))).ToList());

    static string Notes(RecurrenceResult a)
    {
        if (a.RunDir is null) return "the model as given, untrained here";
        var loss = double.IsFinite(a.FinalLoss) ? a.FinalLoss.ToString("F4", CultureInfo.InvariantCulture) : "—";
        var notes = string.Create(CultureInfo.InvariantCulture, $"K = {a.K}; final train loss {loss}; {a.TrainSeconds:F0} s training");
        return a.AtPReached is { } r ? notes + string.Create(CultureInfo.InvariantCulture, $"; training stopped at p = {a.PReached:F3}, where it answers {r}") : notes;
    }

    static ArmRole Role(RecurrenceResult a) => a.Mode switch
    {
        "thinking" => ArmRole.Ceiling,
        "direct" => ArmRole.Floor,
        _ when a.Pause || a.K == 0 => ArmRole.Reference,
        _ => ArmRole.Method,
    };

    static string Describe(RecurrenceResult a) => a.Mode switch
    {
        "thinking" => "teacher, its own explicit trace",
        "direct" => "teacher, direct answer",
        _ when a.Pause => $"{a.K} learned pause embeddings, no recurrence",
        _ when a.K == 0 => "fine-tuned on answers only, no latent step",
        _ => $"{a.K} latent steps ({a.Mode} mode), bridge, frozen decoder",
    };

    /// <summary>The issue's goal: at some K ≥ 4 latent recurrence beats K = 0 by ≥ 15 points with the intervals apart.</summary>
    public static string GoalCheck(IReadOnlyList<RecurrenceResult> arms)
    {
        var k0 = arms.FirstOrDefault(a => a.RunDir is not null && a.K == 0 && a.Mode == "append" && !a.Pause);
        var big = arms.Where(a => a.RunDir is not null && a.K >= 4 && !a.Pause).OrderByDescending(a => a.Accuracy.Value).FirstOrDefault();
        if (k0 is null || big is null) return "The goal needs the K = 0 arm and a latent arm with K ≥ 4; one of them did not run.";
        double gap = 100 * (big.Accuracy.Value - k0.Accuracy.Value);
        bool apart = big.Accuracy.Low > k0.Accuracy.High;
        bool met = gap >= 15 && apart;
        return string.Create(CultureInfo.InvariantCulture,
            $"Best K ≥ 4 arm: **{big.Name}** at {big.Accuracy.Value:P1} vs K = 0 at {k0.Accuracy.Value:P1}: {gap:+0.0;-0.0} points, " +
            $"intervals {(apart ? "apart" : "overlapping")}. Goal (≥ +15 points, intervals apart): **{(met ? "met" : "not met")}**.");
    }

    static string Markdown(RecurrenceStudyOptions o, Study study, IReadOnlyList<RecurrenceResult> arms, double seconds)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Latent recurrence study");
        sb.AppendLine();
        sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"Model `{o.Model}`, task {o.Task}, {o.TestProblems} held-out test problems per arm (the same problems for every arm). " +
            $"Every trained arm: {o.Steps} updates of batch {o.BatchSize} on the same batches (matched training data and steps; " +
            $"per-update FLOPs grow with K), lr {o.LearningRate}, answer-only cross-entropy, p {Describe(o.P)}, K curriculum " +
            $"{(o.KCurriculum.Curriculum ? $"from {o.KCurriculum.Start}" : "off")}, " +
            $"{(o.LoraRank > 0 ? $"LoRA rank {o.LoraRank}" : "full latent-phase copy")}, checkpointing {(o.Checkpointing ? "on" : "off")}, " +
            $"{(o.MarkerDecode ? "append arms decode from the end-of-thinking marker with the latent steps as the cache (at p = 1 and K = the thought's length: the teacher's own trace)" : "decoding from a bridged position before the marker")}" +
            $"{(o.DepthK > 0 ? $"; the depth arm decodes from bridged states, p {Describe(o.DepthP)}" : "")}. " +
            $"Evaluation at p = {o.P.End} and the arm's K, greedy answers checked by the task's exact verifier. Study time {seconds:F0} s."));
        sb.AppendLine();
        sb.Append(study.ArmsTable());
        sb.AppendLine();
        sb.Append(study.PairedTable());
        sb.AppendLine();
        sb.AppendLine(GoalCheck(arms));
        sb.AppendLine();
        sb.AppendLine("The teacher arms are the model as given (no training here): direct answer (floor) and its own explicit trace (ceiling).");
        sb.AppendLine("Pause tokens: K learned input embeddings after the question, no recurrence (more positions without latent feedback).");
        sb.AppendLine();
        sb.AppendLine($"![accuracy vs K]({AccuracyVsK})  ![accuracy vs p]({AccuracyVsP})");
        sb.AppendLine();
        sb.AppendLine($"![loss vs p]({LossVsP})  ![latent gradient norms]({GradNorms})");
        sb.AppendLine();
        sb.AppendLine("## Accuracy during training (validation problems, at the schedules' p and K of that update)");
        sb.AppendLine();
        sb.AppendLine("| arm | step | p | K | accuracy |");
        sb.AppendLine("|---|---|---|---|---|");
        foreach (var a in arms)
            foreach (var c in a.Curve)
                sb.AppendLine(string.Create(CultureInfo.InvariantCulture, $"| {a.Name} | {c.Step} | {c.P:F2} | {c.K} | {c.Accuracy} |"));
        return sb.ToString();
    }

    static string Describe(PSchedule p)
    {
        var ci = CultureInfo.InvariantCulture;
        string gate = p.Kind switch
        {
            PAnnealing.Gated => string.Create(ci, $" (falls only while the loss is under {p.GateLoss})"),
            PAnnealing.Tracking => string.Create(ci, $" (falls while the loss is under {p.GateLoss}, rises while above)"),
            _ => "",
        };
        string deadline = p.Deadline is { } d ? string.Create(ci, $", at {p.End} by {d:P0} of training at the latest") : "";
        return string.Create(ci, $"{p.Kind.ToString().ToLowerInvariant()}{gate} {p.Start} → {p.End} over the first {p.AnnealFraction:P0} of training{deadline}");
    }

    /// <summary>Accuracy against K with Wilson bars; the untrained ceiling and floor as dashed lines across the K range.</summary>
    static void PlotAccuracyVsK(string path, IReadOnlyList<RecurrenceResult> arms)
    {
        var plt = new Plot();
        var latent = arms.Where(a => a.RunDir is not null && a.Mode == "append" && !a.Pause).OrderBy(a => a.K).ToList();
        void Series(IReadOnlyList<RecurrenceResult> xs, string label, bool line)
        {
            if (xs.Count == 0) return;
            double[] x = xs.Select(a => (double)a.K).ToArray(), y = xs.Select(a => 100 * a.Accuracy.Value).ToArray();
            var s = plt.Add.Scatter(x, y);
            s.LegendText = label;
            s.MarkerSize = 8;
            if (!line) s.LineWidth = 0;
            var err = plt.Add.ErrorBar(x, y, xs.Select(a => 100 * (a.Accuracy.Value - a.Accuracy.Low)).ToArray());
            err.YErrorNegative = xs.Select(a => 100 * (a.Accuracy.Value - a.Accuracy.Low)).ToArray();
            err.YErrorPositive = xs.Select(a => 100 * (a.Accuracy.High - a.Accuracy.Value)).ToArray();
            err.Color = s.Color;
        }
        Series(latent, "latent recurrence (append)", true);
        Series(arms.Where(a => a.Mode == "depth").ToList(), "latent recurrence (depth)", false);
        Series(arms.Where(a => a.Pause).ToList(), "pause tokens", false);
        foreach (var a in arms.Where(a => a.RunDir is null))
        {
            var h = plt.Add.HorizontalLine(100 * a.Accuracy.Value);
            h.LegendText = a.Name;
            h.LinePattern = LinePattern.Dashed;
        }
        plt.Title("Verified accuracy vs latent steps K (Wilson 95%)");
        plt.XLabel("K");
        plt.YLabel("accuracy (%)");
        plt.Axes.SetLimitsY(-2, 102);
        plt.ShowLegend(Alignment.UpperLeft);
        StudyPlots.Save(plt, path, 800, 550);
    }

    /// <summary>(step, p, loss, grad_latent_i…) rows of an arm's metrics.jsonl.</summary>
    static List<JsonObject> Rows(RecurrenceResult a)
    {
        var file = Path.Combine(a.RunDir!, "train", "metrics.jsonl");
        if (!File.Exists(file)) return new();
        return File.ReadLines(file).Where(l => l.Length > 0).Select(l => JsonNode.Parse(l)!.AsObject()).Where(r => r["p"] is not null).ToList();
    }

    /// <summary>Mean log10 ‖∂L/∂latent_k‖ per k over the last half of training (where K and p have reached their end values).</summary>
    static List<Curve> GradNormCurves(IReadOnlyList<RecurrenceResult> arms)
    {
        var curves = new List<Curve>();
        foreach (var a in arms.Where(a => a.K > 0 && !a.Pause))
        {
            var rows = Rows(a);
            var late = rows.Skip(rows.Count / 2).ToList();
            var points = Enumerable.Range(0, a.K + 1)
                .Select(i => (i, v: late.Select(r => r[$"grad_latent_{i}"]).Where(n => n is not null).Select(n => n!.GetValue<double>()).ToList()))
                .Where(p => p.v.Count > 0).ToList();
            if (points.Count > 0)
                curves.Add(new Curve(a.Name, points.Select(p => (double)p.i).ToArray(), points.Select(p => Math.Log10(Math.Max(1e-12, p.v.Average()))).ToArray()));
        }
        return curves;
    }
}
