using System.Text.Json;
using LatentLab.IO;
using ScottPlot;

namespace LatentLab.Evaluation;

/// <summary>One line of a line plot.</summary>
public sealed record Curve(string Label, double[] X, double[] Y, bool Dashed = false);

/// <summary>
/// The standard figures of a study (ScottPlot 5, PNG, written atomically): accuracy vs forward compute, vs a swept
/// knob, vs problem length; plus the general line plot they are built on and curves read from a metrics.jsonl.
/// </summary>
public static class StudyPlots
{
    /// <summary>Accuracy per arm with its Wilson interval against log10 forward FLOPs per answer (arms without FLOPs are left out).</summary>
    public static string AccuracyVsCompute(Study study, string path, string title)
    {
        var plt = new Plot();
        foreach (var a in study.Arms.Where(a => a.WasRun && a.Flops > 0))
        {
            var p = a.Accuracy!.Value;
            double x = Math.Log10(a.Flops);
            var s = plt.Add.Scatter(new[] { x }, new[] { p.Value * 100 });
            s.LegendText = a.Name;
            s.MarkerSize = 9;
            var e = plt.Add.ErrorBar(new[] { x }, new[] { p.Value * 100 }, new[] { (p.Value - p.Low) * 100 });
            e.YErrorNegative = new[] { (p.Value - p.Low) * 100 };
            e.YErrorPositive = new[] { (p.High - p.Value) * 100 };
            e.Color = s.Color;
        }
        plt.Title(title);
        plt.XLabel("log10 forward FLOPs per answer");
        plt.YLabel("verified accuracy (%), Wilson 95%");
        plt.Axes.SetLimitsY(-5, 105);
        plt.ShowLegend();
        return Save(plt, path, 900, 560);
    }

    /// <summary>Accuracy of every arm that was run, one marker per arm with its Wilson interval, arms named on the x axis.</summary>
    public static string AccuracyPerArm(Study study, string path, string title)
    {
        var plt = new Plot();
        var arms = study.Arms.Where(a => a.WasRun).ToList();
        for (int i = 0; i < arms.Count; i++)
        {
            var p = arms[i].Accuracy!.Value;
            var s = plt.Add.Scatter(new[] { (double)i }, new[] { p.Value * 100 });
            s.MarkerSize = 10;
            var e = plt.Add.ErrorBar(new[] { (double)i }, new[] { p.Value * 100 }, new[] { (p.Value - p.Low) * 100 });
            e.YErrorNegative = new[] { (p.Value - p.Low) * 100 };
            e.YErrorPositive = new[] { (p.High - p.Value) * 100 };
            e.Color = s.Color;
        }
        plt.Axes.Bottom.SetTicks(Enumerable.Range(0, arms.Count).Select(i => (double)i).ToArray(), arms.Select(a => a.Name).ToArray());
        plt.Axes.Bottom.TickLabelStyle.Rotation = 20;
        plt.Axes.SetLimitsX(-0.7, arms.Count - 0.3);
        plt.Title(title);
        plt.YLabel("verified accuracy (%), Wilson 95%");
        plt.Axes.SetLimitsY(-5, 105);
        return Save(plt, path, Math.Max(700, 130 * arms.Count), 560);
    }

    /// <summary>Histograms of several samples on shared bins, each as the share of its values per bin.</summary>
    public static string Histograms(string path, string title, string xLabel, IReadOnlyList<(string Label, double[] Values)> groups, int bins = 30)
    {
        var all = groups.SelectMany(g => g.Values).Where(double.IsFinite).ToArray();
        if (all.Length == 0) throw new ArgumentException("histogram: no finite values");
        double lo = all.Min(), hi = all.Max(), w = hi > lo ? (hi - lo) / bins : 1;
        var centres = Enumerable.Range(0, bins).Select(b => lo + (b + 0.5) * w).ToArray();
        var curves = groups.Select(g =>
        {
            var counts = new double[bins];
            foreach (var v in g.Values.Where(double.IsFinite)) counts[Math.Clamp((int)((v - lo) / w), 0, bins - 1)]++;
            double n = Math.Max(1, g.Values.Length);
            return new Curve($"{g.Label} (n = {g.Values.Length})", centres, counts.Select(c => c / n).ToArray());
        }).ToList();
        return Lines(path, title, xLabel, "share of traces", curves);
    }

    /// <summary>Accuracy of every sweep of the study against its knob.</summary>
    public static string AccuracyVsKnob(Study study, string path, string title, string xLabel) =>
        Lines(path, title, xLabel, "verified accuracy (%)",
            study.Sweeps.Select(s => new Curve($"{s.Arm} ({s.Knob})", s.Points.Select(p => p.Scale).ToArray(), s.Points.Select(p => p.Accuracy.Value * 100).ToArray())).ToList(),
            yRange: (-5, 105));

    /// <summary>Accuracy of every arm in the study's length rows against difficulty.</summary>
    public static string AccuracyVsLength(Study study, string path, string title, string xLabel) =>
        Lines(path, title, xLabel, "verified accuracy (%)",
            study.Lengths.Select(l => l.Arm).Distinct().Select(arm =>
            {
                var pts = study.Lengths.Where(l => l.Arm == arm).OrderBy(l => l.Difficulty).ToList();
                return new Curve(arm, pts.Select(l => (double)l.Difficulty).ToArray(), pts.Select(l => l.Accuracy.Value * 100).ToArray());
            }).ToList(),
            yRange: (-5, 105));

    /// <summary>A line plot; every curve gets a legend entry.</summary>
    public static string Lines(string path, string title, string xLabel, string yLabel, IReadOnlyList<Curve> curves,
        (double Low, double High)? yRange = null, float? markerSize = null, Alignment? legend = null, int width = 900, int height = 560)
    {
        var plt = new Plot();
        foreach (var c in curves)
        {
            var line = plt.Add.Scatter(c.X, c.Y);
            line.LegendText = c.Label;
            if (markerSize is { } m) line.MarkerSize = m;
            if (c.Dashed) line.LinePattern = LinePattern.Dashed;
        }
        plt.Title(title);
        plt.XLabel(xLabel);
        plt.YLabel(yLabel);
        if (yRange is { } y) plt.Axes.SetLimitsY(y.Low, y.High);
        if (legend is { } at) plt.ShowLegend(at); else plt.ShowLegend();
        return Save(plt, path, width, height);
    }

    /// <summary>
    /// Curves of the named keys of a metrics.jsonl against its <c>step</c> (rows without the key are skipped);
    /// <paramref name="keys"/> maps each key to its legend text, keys in <paramref name="dashed"/> are drawn dashed.
    /// </summary>
    public static string MetricsCurves(string metricsJsonl, string path, string title, IReadOnlyList<(string Key, string Label)> keys,
        IReadOnlySet<string>? dashed = null, string yLabel = "value", int width = 800, int height = 450)
    {
        if (!File.Exists(metricsJsonl)) throw new FileNotFoundException($"plots: {metricsJsonl} not found", metricsJsonl);
        var series = new Dictionary<string, List<(double Step, double Value)>>();
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
                foreach (var (k, _) in keys)
                    if (root.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.Number)
                        (series.TryGetValue(k, out var l) ? l : series[k] = []).Add((s.GetDouble(), v.GetDouble()));
            }
        }
        if (series.Count == 0) throw new InvalidDataException($"{metricsJsonl}: no rows with {string.Join(" / ", keys.Select(k => k.Key))} to plot");
        var curves = keys.Where(k => series.ContainsKey(k.Key)).Select(k => new Curve(k.Label,
            series[k.Key].Select(p => p.Step).ToArray(), series[k.Key].Select(p => p.Value).ToArray(), dashed?.Contains(k.Key) == true)).ToList();
        return Lines(path, title, "step", yLabel, curves, width: width, height: height);
    }

    /// <summary>Writes the PNG atomically (a crash never leaves half an image) and returns its full path.</summary>
    public static string Save(Plot plt, string path, int width, int height)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        AtomicFile.WriteAllBytes(full, plt.GetImageBytes(width, height, ImageFormat.Png));
        return full;
    }
}
