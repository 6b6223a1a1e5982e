using System.Text.Json;
using LatentLab.IO;

namespace LatentLab.Methods.Shortcut;

/// <summary>PNG plots for the Phase 1 report (ScottPlot): learning curves from metrics.jsonl and the collapse monitor.</summary>
public static class DiagnosticsPlots
{
    /// <summary>Validation cosine, top-1 and top-5 retrieval (and chance) against the training step.</summary>
    public static void TrainingCurves(string metricsJsonl, string pngPath, int width = 800, int height = 450)
    {
        if (!File.Exists(metricsJsonl)) throw new FileNotFoundException($"plots: {metricsJsonl} not found", metricsJsonl);
        var series = new Dictionary<string, List<(double Step, double Value)>>();
        string[] keys = ["eval_cos", "eval_top1", "eval_top5", "eval_chance_top5"];
        int lineNo = 0;
        foreach (var line in File.ReadLines(metricsJsonl))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); }
            catch (JsonException e) { throw new InvalidDataException($"{metricsJsonl}:{lineNo}: not JSON ({e.Message})", e); }
            using (doc)
            {
                var root = doc.RootElement;
                if (!root.TryGetProperty("step", out var s)) continue;
                foreach (var k in keys)
                    if (root.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.Number)
                        (series.TryGetValue(k, out var l) ? l : series[k] = []).Add((s.GetDouble(), v.GetDouble()));
            }
        }
        if (series.Count == 0) throw new InvalidDataException($"{metricsJsonl}: no evaluation rows (eval_cos / eval_top5) to plot");
        var plt = new ScottPlot.Plot();
        var names = new Dictionary<string, string>
        {
            ["eval_cos"] = "cosine (standardised)", ["eval_top1"] = "top-1 retrieval", ["eval_top5"] = "top-5 retrieval", ["eval_chance_top5"] = "top-5 chance",
        };
        foreach (var k in keys)
        {
            if (!series.TryGetValue(k, out var pts)) continue;
            var sc = plt.Add.Scatter(pts.Select(p => p.Step).ToArray(), pts.Select(p => p.Value).ToArray());
            sc.LegendText = names[k];
            if (k == "eval_chance_top5") sc.LinePattern = ScottPlot.LinePattern.Dashed;
        }
        plt.Title("Predictor on the validation set");
        plt.XLabel("step");
        plt.YLabel("value");
        plt.ShowLegend();
        Save(plt, pngPath, width, height);
    }

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
        Save(plt, pngPath, width, height);
    }

    static void Save(ScottPlot.Plot plt, string pngPath, int width, int height)
    {
        var full = Path.GetFullPath(pngPath);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var bytes = plt.GetImageBytes(width, height, ScottPlot.ImageFormat.Png);
        AtomicFile.WriteAllBytes(full, bytes);
    }
}
