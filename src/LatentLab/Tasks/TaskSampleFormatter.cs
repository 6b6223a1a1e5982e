using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace LatentLab.Tasks;

/// <summary>Renders problems and edits for <c>latentlab tasks sample</c>: one JSON object per line, or readable text.</summary>
public static class TaskSampleFormatter
{
    // Relaxed escaping keeps '+', '<', '>' readable in the files; the output is data, never embedded in HTML.
    private static readonly JsonWriterOptions Options = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>One line: family, seed, difficulty, prompt, steps, answer, intermediates.</summary>
    public static string ToJsonl(TaskProblem problem) => Json(w => WriteProblem(w, problem));

    /// <summary>One line: kind, supported, answer_must_change, description, original and edited problems, both answers.</summary>
    public static string ToJsonl(TaskEdit edit) => Json(w =>
    {
        w.WriteStartObject();
        w.WriteString("kind", edit.Kind.ToString().ToLowerInvariant());
        w.WriteBoolean("supported", edit.Supported);
        w.WriteBoolean("answer_must_change", edit.AnswerMustChange);
        w.WriteString("description", edit.Description);
        w.WriteString("original_answer", edit.Original.Answer);
        w.WriteString("edited_answer", edit.Edited.Answer);
        w.WritePropertyName("original");
        WriteProblem(w, edit.Original);
        w.WritePropertyName("edited");
        WriteProblem(w, edit.Edited);
        w.WriteEndObject();
    });

    public static string ToJsonl(IEnumerable<TaskProblem> problems) => string.Concat(problems.Select(p => ToJsonl(p) + "\n"));

    public static string ToJsonl(IEnumerable<TaskEdit> edits) => string.Concat(edits.Select(e => ToJsonl(e) + "\n"));

    public static string ToText(TaskProblem problem)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{problem.Family} seed={problem.Seed} difficulty={problem.Difficulty}");
        sb.AppendLine($"  prompt: {problem.Prompt}");
        for (int i = 0; i < problem.Steps.Count; i++)
        {
            var inter = i < problem.Intermediates.Count
                ? string.Join(' ', problem.Intermediates[i].Select(kv => $"{kv.Key}={kv.Value}"))
                : "";
            sb.AppendLine($"  step {i + 1}: {problem.Steps[i],-24} {inter}");
        }
        sb.AppendLine($"  answer: {problem.Answer}");
        return sb.ToString();
    }

    public static string ToText(TaskEdit edit)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{edit.Kind} edit ({(edit.Supported ? "supported" : "not supported")}): {edit.Description}");
        sb.AppendLine($"  original: {edit.Original.Prompt}  ->  {edit.Original.Answer}");
        sb.AppendLine($"  edited:   {edit.Edited.Prompt}  ->  {edit.Edited.Answer}");
        if (edit.Supported)
            sb.AppendLine(edit.AnswerMustChange ? "  (the answer must change)" : "  (the answer must not change, up to renaming)");
        return sb.ToString();
    }

    private static string Json(Action<Utf8JsonWriter> write)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, Options)) write(w);
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    private static void WriteProblem(Utf8JsonWriter w, TaskProblem p)
    {
        w.WriteStartObject();
        w.WriteString("family", p.Family);
        w.WriteNumber("seed", p.Seed);
        w.WriteNumber("difficulty", p.Difficulty);
        w.WriteString("prompt", p.Prompt);
        w.WriteStartArray("steps");
        foreach (var s in p.Steps) w.WriteStringValue(s);
        w.WriteEndArray();
        w.WriteString("answer", p.Answer);
        w.WriteStartArray("intermediates");
        foreach (var d in p.Intermediates)
        {
            w.WriteStartObject();
            foreach (var (k, v) in d) w.WriteNumber(k, v);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }
}
