using LatentLab.Evaluation;
using ScottPlot;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>The experiments' own PNG plots (ScottPlot 5); the standard ones are <see cref="StudyPlots"/>.</summary>
public static class ReasonerPlots
{
    /// <summary>Latents in their first two principal components, one colour per kind of token they should say, vocabulary directions as labels.</summary>
    public static void LatentPca(string path, double[] x, double[] y, IReadOnlyList<string> category, double[] vx, double[] vy, string[] vocab, double[] explained)
    {
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
        StudyPlots.Save(plt, path, 900, 700);
    }

    /// <summary>Normalised accuracy against token-noise rate, both models on one plot.</summary>
    public static void NoiseCurves(string path, double[] rates, double[] jepa, double[] coupled)
    {
        var xs = rates.Select(r => 100 * r).ToArray();
        StudyPlots.Lines(path, "CFG completion under input token noise", "token noise (%)", "normalised accuracy (acc / acc at 0%)",
            [new Curve("JEPA-Reasoner + Talker", xs, jepa), new Curve("coupled baseline", xs, coupled, Dashed: true)],
            markerSize: 7, legend: Alignment.UpperRight, width: 800, height: 550);
    }
}
