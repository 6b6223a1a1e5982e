using LatentLab.Evaluation;

namespace LatentLab.Methods.Shortcut;

/// <summary>The predictor report's own plots: its validation curves (through <see cref="StudyPlots.MetricsCurves"/>) and the collapse monitor.</summary>
public static class DiagnosticsPlots
{
    /// <summary>Validation cosine, top-1 and top-5 retrieval (and chance) against the training step.</summary>
    public static void TrainingCurves(string metricsJsonl, string pngPath, int width = 800, int height = 450) =>
        StudyPlots.MetricsCurves(metricsJsonl, pngPath, "Predictor on the validation set",
            [("eval_cos", "cosine (standardised)"), ("eval_top1", "top-1 retrieval"), ("eval_top5", "top-5 retrieval"), ("eval_chance_top5", "top-5 chance")],
            dashed: new HashSet<string> { "eval_chance_top5" }, width: width, height: height);

    /// <summary>Histogram of per-dimension std of predictions against that of the true post-states (standardised space).</summary>
    public static void StdHistogram(CollapseStats collapse, string pngPath, int bins = 40, int width = 800, int height = 450)
    {
        double max = Math.Max(collapse.PredStd.DefaultIfEmpty(0).Max(), collapse.TrueStd.DefaultIfEmpty(0).Max());
        if (max <= 0) max = 1;
        double w = max / bins;
        double[] Counts(double[] v)
        {
            var c = new double[bins];
            foreach (var x in v) c[Math.Clamp((int)(x / w), 0, bins - 1)]++;
            return c;
        }
        var centres = Enumerable.Range(0, bins).Select(i => (i + 0.5) * w).ToArray();
        var plt = new ScottPlot.Plot();
        var truth = plt.Add.Bars(centres.Select(c => c - w * 0.225).ToArray(), Counts(collapse.TrueStd));
        truth.LegendText = "true h_post";
        var pred = plt.Add.Bars(centres.Select(c => c + w * 0.225).ToArray(), Counts(collapse.PredStd));
        pred.LegendText = "predicted";
        foreach (var b in truth.Bars) b.Size = w * 0.45;
        foreach (var b in pred.Bars) b.Size = w * 0.45;
        truth.Color = ScottPlot.Colors.Gray.WithAlpha(0.6);
        pred.Color = ScottPlot.Colors.C0;
        plt.Title($"Per-dimension std (effective rank: predicted {collapse.PredEffectiveRank:F1}, true {collapse.TrueEffectiveRank:F1})");
        plt.XLabel("std (standardised units)");
        plt.YLabel("dimensions");
        plt.ShowLegend();
        StudyPlots.Save(plt, pngPath, width, height);
    }
}
