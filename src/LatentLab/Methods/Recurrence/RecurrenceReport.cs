using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using LatentLab.IO;
using ScottPlot;

namespace LatentLab.Methods.Recurrence;

/// <summary>
/// Everything the study writes: results.json (an <c>arms</c> array of {name, k, correct, total, flops, …}), report.md
/// with the arms table (Wilson 95%) and the goal check, and four PNGs: accuracy vs K, accuracy vs p over training,
/// loss vs p, and the per-latent-step gradient norms. Kept in this one file so it can move onto the shared
/// Evaluation layer as a method's rows and plots.
/// </summary>
public static class RecurrenceReport
{
    public const string AccuracyVsK = "accuracy_vs_k.png", AccuracyVsP = "accuracy_vs_p.png", LossVsP = "loss_vs_p.png", GradNorms = "latent_grad_norms.png";

    public static void Write(RecurrenceStudyOptions o, IReadOnlyList<RecurrenceResult> arms, double seconds)
    {
        Directory.CreateDirectory(o.OutDir);
        var json = new JsonObject
        {
            ["study"] = "latent recurrence",
            ["options"] = o.ToJson(),
            ["seconds"] = seconds,
            ["arms"] = new JsonArray(arms.Select(a => (JsonNode)a.ToJson()).ToArray()),
        };
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "results.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        var trained = arms.Where(a => a.RunDir is not null).ToList();
        PlotAccuracyVsK(Path.Combine(o.OutDir, AccuracyVsK), arms);
        PlotCurves(Path.Combine(o.OutDir, AccuracyVsP), trained);
        PlotLossVsP(Path.Combine(o.OutDir, LossVsP), trained);
        PlotGradNorms(Path.Combine(o.OutDir, GradNorms), trained);
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "report.md"), Markdown(o, arms, seconds));
    }

    public static string Table(IReadOnlyList<RecurrenceResult> arms)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| arm | mode | K | verified accuracy [Wilson 95%] | inference FLOPs / answer | final train loss | train s |");
        sb.AppendLine("|---|---|---|---|---|---|---|");
        foreach (var a in arms)
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {a.Name} | {a.Mode} | {a.K} | {a.Accuracy} | {a.FlopsPerAnswer:E2} | {(double.IsFinite(a.FinalLoss) ? a.FinalLoss.ToString("F4", CultureInfo.InvariantCulture) : "—")} | {(a.RunDir is null ? "—" : a.TrainSeconds.ToString("F0", CultureInfo.InvariantCulture))} |"));
        return sb.ToString();
    }

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

    static string Markdown(RecurrenceStudyOptions o, IReadOnlyList<RecurrenceResult> arms, double seconds)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Latent recurrence study");
        sb.AppendLine();
        sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"Model `{o.Model}`, task {o.Task}, {o.TestProblems} held-out test problems per arm (the same problems for every arm). " +
            $"Every trained arm: {o.Steps} updates of batch {o.BatchSize} on the same batches (matched training data and steps; " +
            $"per-update FLOPs grow with K), lr {o.LearningRate}, answer-only cross-entropy, p {o.P.Kind.ToString().ToLowerInvariant()} " +
            $"{o.P.Start} → {o.P.End} over the first {o.P.AnnealFraction:P0} of training, K curriculum " +
            $"{(o.KCurriculum.Curriculum ? $"from {o.KCurriculum.Start}" : "off")}, " +
            $"{(o.LoraRank > 0 ? $"LoRA rank {o.LoraRank}" : "full latent-phase copy")}, checkpointing {(o.Checkpointing ? "on" : "off")}. " +
            $"Evaluation at p = {o.P.End} and the arm's K, greedy answers checked by the task's exact verifier. Study time {seconds:F0} s."));
        sb.AppendLine();
        sb.Append(Table(arms));
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
        Save(plt, path);
    }

    static void PlotCurves(string path, IReadOnlyList<RecurrenceResult> arms)
    {
        var plt = new Plot();
        foreach (var a in arms.Where(a => a.Curve.Count > 0))
        {
            var s = plt.Add.Scatter(a.Curve.Select(c => c.P).ToArray(), a.Curve.Select(c => 100 * c.Accuracy.Value).ToArray());
            s.LegendText = a.Name;
            s.MarkerSize = 6;
        }
        plt.Title("Validation accuracy vs p over training");
        plt.XLabel("p (1 = token path, 0 = pure latent)");
        plt.YLabel("accuracy (%)");
        plt.Axes.SetLimitsY(-2, 102);
        plt.ShowLegend(Alignment.UpperRight);
        Save(plt, path);
    }

    /// <summary>(step, p, loss, grad_latent_i…) rows of an arm's metrics.jsonl.</summary>
    static List<JsonObject> Rows(RecurrenceResult a)
    {
        var file = Path.Combine(a.RunDir!, "train", "metrics.jsonl");
        if (!File.Exists(file)) return new();
        return File.ReadLines(file).Where(l => l.Length > 0).Select(l => JsonNode.Parse(l)!.AsObject()).Where(r => r["p"] is not null).ToList();
    }

    static void PlotLossVsP(string path, IReadOnlyList<RecurrenceResult> arms)
    {
        var plt = new Plot();
        foreach (var a in arms)
        {
            var rows = Rows(a);
            if (rows.Count == 0) continue;
            var s = plt.Add.Scatter(rows.Select(r => r["p"]!.GetValue<double>()).ToArray(), rows.Select(r => r["loss"]!.GetValue<double>()).ToArray());
            s.LegendText = a.Name;
            s.MarkerSize = 2;
            s.LineWidth = 1;
        }
        plt.Title("Training loss (answer tokens) vs p");
        plt.XLabel("p");
        plt.YLabel("cross-entropy");
        plt.ShowLegend(Alignment.UpperRight);
        Save(plt, path);
    }

    static void PlotGradNorms(string path, IReadOnlyList<RecurrenceResult> arms)
    {
        var plt = new Plot();
        foreach (var a in arms.Where(a => a.K > 0 && !a.Pause))
        {
            var rows = Rows(a);
            // The last half of training, where K has reached the arm's K and p its end value.
            var late = rows.Skip(rows.Count / 2).ToList();
            var xs = new List<double>();
            var ys = new List<double>();
            for (int i = 0; i <= a.K; i++)
            {
                var v = late.Select(r => r[$"grad_latent_{i}"]).Where(n => n is not null).Select(n => n!.GetValue<double>()).ToList();
                if (v.Count == 0) continue;
                xs.Add(i);
                ys.Add(Math.Log10(Math.Max(1e-12, v.Average())));
            }
            if (xs.Count == 0) continue;
            var s = plt.Add.Scatter(xs.ToArray(), ys.ToArray());
            s.LegendText = a.Name;
            s.MarkerSize = 7;
        }
        plt.Title("‖∂L/∂latent_k‖ by latent step (mean over the last half of training)");
        plt.XLabel("k (0 = encoded question, K = bridged latent)");
        plt.YLabel("log10 gradient norm");
        plt.ShowLegend(Alignment.UpperLeft);
        Save(plt, path);
    }

    static void Save(Plot plt, string path)
    {
        var tmp = path + ".tmp.png";
        plt.SavePng(tmp, 800, 550);
        File.Move(tmp, path, overwrite: true);
    }
}
