using System.Globalization;
using LatentLab.Tasks;

namespace LatentLab.Methods.Shortcut;

public enum GateStatus { Pass, Fail, NotMeasured }

/// <summary>One gate criterion: the measured value, how it must compare with the threshold, and the verdict.</summary>
public sealed record GateCriterion(string Name, double Value, string Comparison, double Threshold, GateStatus Status);

public sealed record GateResult(bool Pass, IReadOnlyList<GateCriterion> Criteria, string Reason);

/// <summary>
/// Phase 1's promotion gate (from the seed: "continue only if predicted states retrieve the correct post-state family and
/// are stable under paraphrase/variable renaming"). Retrieval must clear both an absolute bar and a multiple of chance.
/// Stability: every edit kind that was measured must clear its bar, and at least one must have been measured; a kind the
/// task family cannot make (no twins) is reported as not measured rather than failed.
/// </summary>
public sealed record PromotionGate
{
    public double MinTop5 { get; init; } = 0.5;
    public double MinTop5OverChance { get; init; } = 3.0;
    public double MaxParaphraseRatio { get; init; } = 0.5;
    public double MaxRenameRatio { get; init; } = 0.5;

    public GateResult Evaluate(ShortcutDiagnosticsResult r) =>
        Evaluate(r.Top5.Value, r.ChanceTop5, r.StabilityOf(EditKind.Paraphrase)?.Ratio, r.StabilityOf(EditKind.Rename)?.Ratio);

    public GateResult Evaluate(double top5, double chanceTop5, double? paraphraseRatio, double? renameRatio)
    {
        static GateStatus AtLeast(double v, double t) => double.IsNaN(v) ? GateStatus.Fail : v >= t ? GateStatus.Pass : GateStatus.Fail;
        static GateStatus AtMost(double? v, double t) =>
            v is null || double.IsNaN(v.Value) ? GateStatus.NotMeasured : v.Value <= t ? GateStatus.Pass : GateStatus.Fail;
        double overChance = chanceTop5 > 0 ? top5 / chanceTop5 : double.NaN;
        var criteria = new List<GateCriterion>
        {
            new("top-5 retrieval", top5, "≥", MinTop5, AtLeast(top5, MinTop5)),
            new("top-5 retrieval / chance", overChance, "≥", MinTop5OverChance, AtLeast(overChance, MinTop5OverChance)),
            new("paraphrase distance ratio", paraphraseRatio ?? double.NaN, "≤", MaxParaphraseRatio, AtMost(paraphraseRatio, MaxParaphraseRatio)),
            new("rename distance ratio", renameRatio ?? double.NaN, "≤", MaxRenameRatio, AtMost(renameRatio, MaxRenameRatio)),
        };
        var failed = criteria.Where(c => c.Status == GateStatus.Fail).ToList();
        bool anyStability = criteria.Skip(2).Any(c => c.Status != GateStatus.NotMeasured);
        static string V(double x) => x.ToString("G3", CultureInfo.InvariantCulture);
        var reasons = failed.Select(c => $"{c.Name} {V(c.Value)} is not {c.Comparison} {V(c.Threshold)}").ToList();
        if (!anyStability) reasons.Add("stability under paraphrase/renaming was not measured (no twins)");
        bool pass = reasons.Count == 0;
        string reason = pass
            ? "predicted states retrieve their own post-state and are stable under the measured edits: continue to Phase 2"
            : "stop with a negative report: " + string.Join("; ", reasons);
        return new GateResult(pass, criteria, reason);
    }
}
