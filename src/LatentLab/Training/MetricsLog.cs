using System.Text.Json;
using System.Text.Json.Serialization;
using LatentLab.IO;
using TorchSharp;
using TorchSharp.Modules;

namespace LatentLab.Training;

/// <summary>
/// The run's metrics sinks: <c>metrics.jsonl</c> (one object per logged step) and TensorBoard event files
/// under <c>tb/</c>, written through TorchSharp's SummaryWriter.
/// </summary>
public sealed class MetricsLog
{
    static readonly JsonSerializerOptions JsonOpts = new()
    {
        // A diverging run can log an infinite gradient norm; that should reach the log, not crash it.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    readonly SummaryWriter? _tb;

    public string JsonlPath { get; }
    public string TensorBoardDir { get; }
    /// <summary>Why TensorBoard logging is off, or null when it is on.</summary>
    public string? TensorBoardError { get; }

    public MetricsLog(string runDir)
    {
        JsonlPath = Path.Combine(runDir, "metrics.jsonl");
        TensorBoardDir = Path.Combine(runDir, "tb");
        try { _tb = torch.utils.tensorboard.SummaryWriter(TensorBoardDir); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or TypeLoadException or FileNotFoundException)
        {
            TensorBoardError = $"TensorBoard events disabled: {e.Message}";
        }
    }

    /// <summary>
    /// Drops rows after <paramref name="step"/> (logged by a killed run after its last checkpoint and about to be
    /// logged again) and a torn last line, so a resumed run's metrics.jsonl reads like an uninterrupted one.
    /// </summary>
    public static void TruncateAfter(string jsonlPath, long step)
    {
        if (!File.Exists(jsonlPath)) return;
        var keep = new List<string>();
        foreach (var line in File.ReadLines(jsonlPath))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.TryGetProperty("step", out var s) && s.TryGetInt64(out var st) && st <= step) keep.Add(line);
            }
            catch (JsonException) { /* a line cut short by the kill */ }
        }
        AtomicFile.WriteAllText(jsonlPath, keep.Count == 0 ? "" : string.Join("\n", keep) + "\n");
    }

    /// <summary>Appends one row; every numeric entry also goes to TensorBoard under "train/…" or "eval/…".</summary>
    public void Write(long step, IReadOnlyList<KeyValuePair<string, object>> row)
    {
        var dict = new Dictionary<string, object>(row.Count + 1) { ["step"] = step };
        foreach (var (k, v) in row) dict[k] = v;
        Jsonl.Append(JsonlPath, dict, JsonOpts);
        if (_tb is null) return;
        long wall = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        int tbStep = (int)Math.Min(step, int.MaxValue);
        foreach (var (k, v) in row)
        {
            double? x = v switch { double d => d, float f => f, long l => l, int i => i, _ => null };
            if (x is null) continue;
            var tag = k.StartsWith("eval_", StringComparison.Ordinal) ? "eval/" + k["eval_".Length..] : "train/" + k;
            _tb.add_scalar(tag, (float)x.Value, tbStep, wall);
        }
    }
}
