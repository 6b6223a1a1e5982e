using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.IO;

namespace LatentLab.Evaluation;

/// <summary>The files of an evaluation: report.md and results.json (both written atomically), and the JSON of its numbers.</summary>
public static class StudyFiles
{
    public const string ReportFile = "report.md", ResultsFile = "results.json";

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Writes <c>report.md</c> and the results JSON (<c>results.json</c> unless named otherwise) into <paramref name="dir"/>; returns the report's path.</summary>
    public static string Write(string dir, string markdown, JsonObject results, string resultsFile = ResultsFile)
    {
        Directory.CreateDirectory(dir);
        var report = Path.GetFullPath(Path.Combine(dir, ReportFile));
        AtomicFile.WriteAllText(report, markdown);
        AtomicFile.WriteAllText(Path.Combine(dir, resultsFile), Finite(results).ToJsonString(Indented) + "\n");
        return report;
    }

    /// <summary>
    /// A copy with every NaN or infinite number replaced by null (JSON has no such numbers, and a normalised accuracy
    /// over a zero clean accuracy is one): the results of a finished evaluation must not be lost at the last write.
    /// </summary>
    public static JsonObject Finite(JsonObject results)
    {
        static JsonNode? Clean(JsonNode? n) => n switch
        {
            JsonObject o => new JsonObject(o.Select(kv => KeyValuePair.Create(kv.Key, Clean(kv.Value)))),
            JsonArray a => new JsonArray(a.Select(Clean).ToArray()),
            JsonValue v when v.TryGetValue<double>(out var d) && !double.IsFinite(d) => null,
            JsonValue v when v.TryGetValue<float>(out var f) && !float.IsFinite(f) => null,
            _ => n?.DeepClone(),
        };
        return (JsonObject)Clean(results)!;
    }

    /// <summary>A proportion as <c>{value, low, high, successes, trials}</c> (value null at 0 trials); null stays null.</summary>
    public static JsonNode? Json(Proportion? p) => p is not { } q ? null : new JsonObject
    {
        ["value"] = q.Trials == 0 ? null : q.Value, ["low"] = q.Low, ["high"] = q.High, ["successes"] = q.Successes, ["trials"] = q.Trials,
    };

    public static JsonNode Json(Difference d) => new JsonObject { ["value"] = d.Value, ["low"] = d.Low, ["high"] = d.High };
}
