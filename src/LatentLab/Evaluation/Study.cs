using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace LatentLab.Evaluation;

/// <summary>Accuracy at one setting of a swept knob (an injection scale, a noise rate, a shot count).</summary>
public sealed record SweepPoint(double Scale, Proportion Accuracy);

/// <summary>
/// One arm's accuracy over a knob. Fragility: accuracy at the best setting minus the mean accuracy of its
/// neighbouring settings in the sweep (0 = flat; large = the result lives on a knife's edge).
/// </summary>
public sealed record ScaleSweep(string Arm, string Knob, IReadOnlyList<SweepPoint> Points)
{
    public SweepPoint Best => Points.MaxBy(p => p.Accuracy.Value)!;

    public double Fragility
    {
        get
        {
            int i = Points.ToList().IndexOf(Best);
            var nb = new[] { i - 1, i + 1 }.Where(j => j >= 0 && j < Points.Count).Select(j => Points[j].Accuracy.Value).ToList();
            return nb.Count == 0 ? 0 : Best.Accuracy.Value - nb.Average();
        }
    }
}

/// <summary>One arm's accuracy on problems of one difficulty; <c>Extra</c> &gt; 0 marks lengths beyond training (OOD).</summary>
public sealed record LengthResult(string Arm, int Difficulty, int Extra, Proportion Accuracy);

/// <summary>Arm A minus arm B on the same problems.</summary>
public sealed record PairedDifference(string A, string B, Difference Difference);

/// <summary>
/// Arms evaluated on the same problems, with the ceiling and the floor marked by their <see cref="ArmRole"/>, plus the
/// standard sweeps (accuracy vs a knob) and the accuracy-vs-length rows. A method builds one, adds its own sections
/// around <see cref="ArmsTable"/> and friends, and writes it with <see cref="StudyFiles"/> and <see cref="StudyPlots"/>.
/// <code>
///   var study = new Study("tree search", [Arm.Graded("jepa", "...", ArmRole.Method, correct), ...]);
///   var md = study.ArmsTable() + study.PairedTable();
///   StudyFiles.Write(dir, "# My method\n\n" + md, study.ToJson());
/// </code>
/// </summary>
public sealed record Study
{
    public Study(string name, IReadOnlyList<Arm> arms)
    {
        Name = name;
        Arms = arms;
        var dup = arms.GroupBy(a => a.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new ArgumentException($"study '{name}': two arms are named '{dup.Key}'");
        foreach (var role in new[] { ArmRole.Ceiling, ArmRole.Floor })
            if (arms.Count(a => a.Role == role) > 1) throw new ArgumentException($"study '{name}': more than one {role} arm");
        var counts = arms.Where(a => a.WasRun).Select(a => a.Accuracy!.Value.Trials).Distinct().ToList();
        if (counts.Count > 1) throw new ArgumentException($"study '{name}': the arms answered different numbers of problems ({string.Join(", ", counts)}); a study compares arms on the same problems");
    }

    public string Name { get; }
    public IReadOnlyList<Arm> Arms { get; }
    public IReadOnlyList<ScaleSweep> Sweeps { get; init; } = [];
    public IReadOnlyList<LengthResult> Lengths { get; init; } = [];
    /// <summary>Pairs (A, B) reported as A − B; null = every other arm that was run against the ceiling and the floor.</summary>
    public IReadOnlyList<(string A, string B)>? Pairs { get; init; }

    /// <summary>Problems every arm answered (0 when no arm was run).</summary>
    public int Problems => Arms.FirstOrDefault(a => a.WasRun)?.Accuracy!.Value.Trials ?? 0;
    public Arm? Ceiling => Arms.FirstOrDefault(a => a.Role == ArmRole.Ceiling);
    public Arm? Floor => Arms.FirstOrDefault(a => a.Role == ArmRole.Floor);

    public Arm Get(string name) => Arms.FirstOrDefault(a => a.Name == name)
        ?? throw new KeyNotFoundException($"study '{Name}' has no arm '{name}' (arms: {string.Join(", ", Arms.Select(a => a.Name))})");

    /// <summary>A − B with the paired interval when both arms kept their per-problem outcomes, else the independent one.</summary>
    public PairedDifference Compare(string a, string b)
    {
        Arm x = Get(a), y = Get(b);
        if (!x.WasRun || !y.WasRun) throw new InvalidOperationException($"study '{Name}': cannot compare '{a}' with '{b}': {(x.WasRun ? b : a)} was not run");
        var d = x.Correct is { } cx && y.Correct is { } cy ? Difference.Paired(cx, cy) : Difference.Of(x.Accuracy!.Value, y.Accuracy!.Value);
        return new(a, b, d);
    }

    public IReadOnlyList<PairedDifference> Differences()
    {
        var pairs = Pairs ?? (from bound in new[] { Ceiling, Floor }
                              where bound is { WasRun: true }
                              from arm in Arms
                              where arm.WasRun && arm.Role is ArmRole.Method or ArmRole.Reference
                              select (arm.Name, bound!.Name)).ToList();
        return pairs.Select(p => Compare(p.A, p.B)).ToList();
    }

    static string G(double x) => x.ToString("G3", CultureInfo.InvariantCulture);
    static string P(double x) => double.IsNaN(x) ? "n/a" : (x * 100).ToString("0.0", CultureInfo.InvariantCulture) + " %";
    static string Role(ArmRole r) => r.ToString().ToLowerInvariant();

    /// <summary>The arms table: verified accuracy (Wilson 95%) and forward compute per answer; "-" where not measured.</summary>
    public string ArmsTable()
    {
        var sb = new StringBuilder();
        sb.AppendLine("| arm | role | what | accuracy | token-steps | FLOPs | training FLOPs | notes |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var a in Arms)
            sb.AppendLine(a.WasRun
                ? Inv($"| {a.Name} | {Role(a.Role)} | {a.Description} | {a.Accuracy} | {(a.TokenSteps > 0 ? a.TokenSteps.ToString("F1", CultureInfo.InvariantCulture) : "-")} | {(a.Flops > 0 ? G(a.Flops) : "-")} | {(a.TrainFlops > 0 ? G(a.TrainFlops) : "-")} | {a.Notes} |")
                : $"| {a.Name} | {Role(a.Role)} | {a.Description} | not run | - | - | - | {a.NotRunReason} |");
        return sb.ToString();
    }

    /// <summary>The paired differences (percentage points, Newcombe 95%); empty when there is nothing to compare.</summary>
    public string PairedTable()
    {
        var diffs = Differences();
        if (diffs.Count == 0) return "";
        var sb = new StringBuilder();
        sb.AppendLine("| arm A | arm B | A − B (same problems) |");
        sb.AppendLine("|---|---|---|");
        foreach (var d in diffs) sb.AppendLine($"| {d.A} | {d.B} | {d.Difference} |");
        return sb.ToString();
    }

    /// <summary>One table per sweep, headed by its best setting and fragility.</summary>
    public string SweepTables()
    {
        var sb = new StringBuilder();
        foreach (var s in Sweeps)
        {
            sb.AppendLine($"{s.Arm} ({s.Knob}): best {s.Knob} = {G(s.Best.Scale)}, fragility {P(s.Fragility)} (best minus mean of neighbours)");
            sb.AppendLine();
            sb.AppendLine($"| {s.Knob} | accuracy |");
            sb.AppendLine("|---|---|");
            foreach (var p in s.Points) sb.AppendLine($"| {G(p.Scale)} | {p.Accuracy} |");
            sb.AppendLine();
        }
        return sb.ToString();
    }

    /// <summary>Accuracy per arm and difficulty; OOD difficulties are marked (+extra).</summary>
    public string LengthTable()
    {
        if (Lengths.Count == 0) return "";
        var sb = new StringBuilder();
        var diffs = Lengths.Select(l => (l.Difficulty, l.Extra)).Distinct().OrderBy(d => d.Difficulty).ToList();
        sb.AppendLine("| arm | " + string.Join(" | ", diffs.Select(d => $"difficulty {d.Difficulty}{(d.Extra > 0 ? $" (+{d.Extra})" : "")}")) + " |");
        sb.AppendLine("|---|" + string.Concat(diffs.Select(_ => "---|")));
        foreach (var arm in Lengths.Select(l => l.Arm).Distinct())
            sb.AppendLine($"| {arm} | " + string.Join(" | ", diffs.Select(d => Lengths.FirstOrDefault(l => l.Arm == arm && l.Difficulty == d.Difficulty)?.Accuracy.ToString() ?? "-")) + " |");
        return sb.ToString();
    }

    /// <summary>Everything above as JSON (the <c>arms</c>, <c>paired</c>, <c>sweeps</c> and <c>lengths</c> of results.json).</summary>
    public JsonObject ToJson() => new()
    {
        ["study"] = Name,
        ["problems"] = Problems,
        ["arms"] = new JsonArray(Arms.Select(a => (JsonNode)new JsonObject
        {
            ["name"] = a.Name, ["role"] = Role(a.Role), ["description"] = a.Description, ["accuracy"] = StudyFiles.Json(a.Accuracy),
            ["correct"] = a.Accuracy?.Successes, ["total"] = a.Accuracy?.Trials,
            ["token_steps"] = a.TokenSteps, ["flops"] = a.Flops, ["train_flops"] = a.TrainFlops, ["seconds"] = a.Seconds,
            ["notes"] = a.Notes, ["not_run"] = a.NotRunReason,
        }).ToArray()),
        ["paired"] = new JsonArray(Differences().Select(d => (JsonNode)new JsonObject
        {
            ["a"] = d.A, ["b"] = d.B, ["difference"] = StudyFiles.Json(d.Difference),
        }).ToArray()),
        ["sweeps"] = new JsonArray(Sweeps.Select(s => (JsonNode)new JsonObject
        {
            ["arm"] = s.Arm, ["knob"] = s.Knob, ["best"] = s.Best.Scale, ["fragility"] = s.Fragility,
            ["points"] = new JsonArray(s.Points.Select(p => (JsonNode)new JsonObject { ["scale"] = p.Scale, ["accuracy"] = StudyFiles.Json(p.Accuracy) }).ToArray()),
        }).ToArray()),
        ["lengths"] = new JsonArray(Lengths.Select(l => (JsonNode)new JsonObject
        {
            ["arm"] = l.Arm, ["difficulty"] = l.Difficulty, ["extra"] = l.Extra, ["accuracy"] = StudyFiles.Json(l.Accuracy),
        }).ToArray()),
    };

    static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
