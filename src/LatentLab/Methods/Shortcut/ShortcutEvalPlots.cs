namespace LatentLab.Methods.Shortcut;

/// <summary>The three figures of a shortcut evaluation (ScottPlot 5, PNG): accuracy vs compute, vs injection scale, vs length.</summary>
public static class ShortcutEvalPlots
{
    public static IReadOnlyList<string> Write(ShortcutEvalReport r, string outDir)
    {
        Directory.CreateDirectory(outDir);
        var files = new List<string>();

        // Accuracy per arm with its Wilson interval against log10 forward FLOPs per answer.
        var compute = new ScottPlot.Plot();
        foreach (var a in r.Arms.Where(a => a.Accuracy is not null && a.Flops > 0))
        {
            var p = a.Accuracy!.Value;
            double x = Math.Log10(a.Flops);
            var s = compute.Add.Scatter(new[] { x }, new[] { p.Value * 100 });
            s.LegendText = a.Name;
            s.MarkerSize = 9;
            var e = compute.Add.ErrorBar(new[] { x }, new[] { p.Value * 100 }, new[] { (p.Value - p.Low) * 100 });
            e.YErrorNegative = new[] { (p.Value - p.Low) * 100 };
            e.YErrorPositive = new[] { (p.High - p.Value) * 100 };
            e.Color = s.Color;
        }
        compute.Title($"Verified accuracy vs forward compute ({r.PredictorName})");
        compute.XLabel("log10 forward FLOPs per answer");
        compute.YLabel("verified accuracy (%), Wilson 95%");
        compute.Axes.SetLimitsY(-5, 105);
        compute.ShowLegend();
        files.Add(Save(compute, outDir, "accuracy_vs_flops.png"));

        var sweep = new ScottPlot.Plot();
        foreach (var s in r.Sweeps)
        {
            var line = sweep.Add.Scatter(s.Points.Select(p => p.Scale).ToArray(), s.Points.Select(p => p.Accuracy.Value * 100).ToArray());
            line.LegendText = $"{s.Arm} ({s.Knob})";
        }
        sweep.Title("Accuracy vs injection scale");
        sweep.XLabel("scale (α for the residual delta, multiplier for the soft tokens)");
        sweep.YLabel("verified accuracy (%)");
        sweep.Axes.SetLimitsY(-5, 105);
        sweep.ShowLegend();
        files.Add(Save(sweep, outDir, "accuracy_vs_scale.png"));

        var length = new ScottPlot.Plot();
        foreach (var arm in r.Lengths.Select(l => l.Arm).Distinct())
        {
            var pts = r.Lengths.Where(l => l.Arm == arm).OrderBy(l => l.Difficulty).ToList();
            var line = length.Add.Scatter(pts.Select(l => (double)l.Difficulty).ToArray(), pts.Select(l => l.Accuracy.Value * 100).ToArray());
            line.LegendText = arm;
        }
        length.Title("Accuracy vs problem length (training length, then OOD)");
        length.XLabel("difficulty (digits)");
        length.YLabel("verified accuracy (%)");
        length.Axes.SetLimitsY(-5, 105);
        length.ShowLegend();
        files.Add(Save(length, outDir, "accuracy_vs_length.png"));
        return files;
    }

    static string Save(ScottPlot.Plot p, string dir, string name)
    {
        var path = Path.Combine(dir, name);
        var tmp = path + ".tmp.png";
        p.SavePng(tmp, 900, 560);
        File.Move(tmp, path, overwrite: true);
        return path;
    }
}
