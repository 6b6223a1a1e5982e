using ScottPlot;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>The experiments' PNG plots (ScottPlot 5).</summary>
public static class ReasonerPlots
{
    /// <summary>Latents in their first two principal components, one colour per kind of token they should say, vocabulary directions as labels.</summary>
    public static void LatentPca(string path, double[] x, double[] y, IReadOnlyList<string> category, double[] vx, double[] vy, string[] vocab, double[] explained)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var plt = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int ci = 0;
        foreach (var cat in category.Distinct().OrderBy(c => c))
        {
            var idx = Enumerable.Range(0, category.Count).Where(i => category[i] == cat).ToArray();
            var sp = plt.Add.ScatterPoints(idx.Select(i => x[i]).ToArray(), idx.Select(i => y[i]).ToArray(), palette.GetColor(ci++));
            sp.MarkerSize = 4;
            sp.LegendText = $"latent → '{cat}' ({idx.Length})";
        }
        var v = plt.Add.ScatterPoints(vx, vy, Colors.Black);
        v.MarkerSize = 7;
        v.MarkerShape = MarkerShape.OpenCircle;
        v.LegendText = "unit vocabulary embeddings";
        for (int i = 0; i < vocab.Length; i++)
        {
            var t = plt.Add.Text(vocab[i], vx[i], vy[i]);
            t.LabelFontSize = 12;
            t.LabelBold = true;
        }
        plt.Title("JEPA-Reasoner latents (PCA)");
        plt.XLabel($"PC1 ({explained[0]:P1} of variance)");
        plt.YLabel($"PC2 ({explained[1]:P1} of variance)");
        plt.ShowLegend(Alignment.UpperRight);
        Save(plt, path, 900, 700);
    }

    /// <summary>Normalised accuracy against token-noise rate, both models on one plot.</summary>
    public static void NoiseCurves(string path, double[] rates, double[] jepa, double[] coupled)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var plt = new Plot();
        var xs = rates.Select(r => 100 * r).ToArray();
        var a = plt.Add.Scatter(xs, jepa);
        a.LegendText = "JEPA-Reasoner + Talker";
        a.MarkerSize = 7;
        var b = plt.Add.Scatter(xs, coupled);
        b.LegendText = "coupled baseline";
        b.MarkerSize = 7;
        b.LinePattern = LinePattern.Dashed;
        plt.Title("CFG completion under input token noise");
        plt.XLabel("token noise (%)");
        plt.YLabel("normalised accuracy (acc / acc at 0%)");
        plt.ShowLegend(Alignment.UpperRight);
        Save(plt, path, 800, 550);
    }

    static void Save(Plot plt, string path, int w, int h)
    {
        var tmp = path + ".tmp.png";
        plt.SavePng(tmp, w, h);
        File.Move(tmp, path, overwrite: true);
    }
}
