using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using LatentLab.Latents;
using LatentLab.IO;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>
/// The predictor's training and test states, already in memory. Samples (with their intermediates) are optional: without them there are no probes.
/// Twins: h_pre of test problems and of their edited versions, for the stability criteria of the gate.
/// </summary>
public sealed record PredictorData(
    Tensor PreTrain, Tensor PostTrain, IReadOnlyList<TraceSample>? TrainSamples,
    Tensor PreTest, Tensor PostTest, IReadOnlyList<TraceSample>? TestSamples,
    IReadOnlyList<TwinSet>? Twins = null);

/// <summary>What a promotion run wrote and concluded (whether the predictor may go on to the injection arms).</summary>
public sealed record PromotionReport(string RunDir, string PredictorDir, string ReportPath, ShortcutDiagnosticsResult Diagnostics);

/// <summary>
/// Predictor promotion (the study's Phase 1): train the predictor (the last <c>valFraction</c> of the train set monitors training), measure it on
/// the test set, and write report.md, diagnostics.json, curves.png and std_hist.png next to the run's checkpoints.
/// </summary>
public static class PredictorPromotion
{
    public const string ReportFile = "report.md", DiagnosticsFile = "diagnostics.json", CurvesFile = "curves.png", StdFile = "std_hist.png";

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public static PromotionReport Run(PredictorData data, PredictorConfig cfg, string outDir, DiagnosticsOptions? options = null,
        double valFraction = 0.1, TextWriter? log = null, bool? progressBar = false)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (valFraction is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(valFraction), valFraction, "must be in (0, 1)");
        long n = data.PreTrain.shape[0];
        long nVal = Math.Max(2, (long)Math.Round(n * valFraction));
        if (n - nVal < 2) throw new ArgumentException($"phase 1: {n} training problems are too few to hold out {nVal} for validation");
        var trainSamples = data.TrainSamples;
        if (trainSamples is not null && trainSamples.Count != n)
            throw new ArgumentException($"phase 1: {trainSamples.Count} train samples for {n} train states");

        // No dispose scope here: the predictor made inside must outlive this call.
        using var preFit = data.PreTrain.narrow(0, 0, n - nVal);
        using var postFit = data.PostTrain.narrow(0, 0, n - nVal);
        using var preVal = data.PreTrain.narrow(0, n - nVal, nVal);
        using var postVal = data.PostTrain.narrow(0, n - nVal, nVal);
        var run = PredictorTraining.Train(preFit, postFit, preVal, postVal, cfg, outDir, log, progressBar);
        // Probes fit on the same problems the predictor trained on (the held-out tail only monitored training).
        var diag = ShortcutDiagnostics.Compute(run.Predictor, preFit, postFit, trainSamples?.Take((int)(n - nVal)).ToList(),
            data.PreTest, data.PostTest, data.TestSamples, data.Twins, options);

        DiagnosticsPlots.TrainingCurves(Path.Combine(run.RunDir, "metrics.jsonl"), Path.Combine(run.RunDir, CurvesFile));
        DiagnosticsPlots.StdHistogram(diag.Collapse, Path.Combine(run.RunDir, StdFile));
        AtomicFile.WriteAllText(Path.Combine(run.RunDir, DiagnosticsFile), JsonSerializer.Serialize(diag, Json) + "\n");

        var sb = new StringBuilder();
        sb.AppendLine("# Latent shortcut, Phase 1: predictor q(h_pre) → ĥ_post");
        sb.AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture, $"Predictor: {cfg.Kind}, hidden {cfg.Hidden}, {cfg.Layers} layer(s), K = {cfg.K}, loss {cfg.Loss} " +
            $"(var {cfg.VarWeight}, cov {cfg.CovWeight}, projector {(cfg.ProjectorDim > 0 ? $"{cfg.ProjectorDim}{(cfg.EmaProjector ? " EMA" : "")}" : "none")}), " +
            $"{cfg.Steps} steps; trained on {n - nVal} problems, {nVal} held out for monitoring, {data.PreTest.shape[0]} test problems.");
        sb.AppendLine();
        sb.Append(diag.ToMarkdown());
        sb.AppendLine();
        sb.AppendLine($"![validation curves]({CurvesFile})");
        sb.AppendLine();
        sb.AppendLine($"![per-dimension std]({StdFile})");
        var reportPath = Path.Combine(run.RunDir, ReportFile);
        AtomicFile.WriteAllText(reportPath, sb.ToString());
        return new PromotionReport(run.RunDir, run.PredictorDir, reportPath, diag);
    }
}
