using System.Text;

namespace LatentLab.Tasks;

public sealed record UnreadableAnswer(int Line, string Answer, string Reason);

/// <summary>What <c>latentlab data check</c> prints: row count, malformed lines, and answers the normaliser could not
/// read. For GSM8K every answer must be a number; MATH and Big-Math answers may be symbolic, so there only an empty or
/// unbalanced answer counts as unreadable.</summary>
public sealed record DataCheckReport(string Path, DatasetFormat Format, int Rows, int NumericAnswers,
    IReadOnlyList<MalformedLine> Malformed, IReadOnlyList<UnreadableAnswer> Unreadable)
{
    public bool Clean => Malformed.Count == 0 && Unreadable.Count == 0;

    public string ToText(int maxListed = 20)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{Path} ({Format.ToString().ToLowerInvariant()}): {Rows} rows, {NumericAnswers} numeric answers, " +
                      $"{Malformed.Count} malformed lines, {Unreadable.Count} unreadable answers");
        foreach (var m in Malformed.Take(maxListed)) sb.AppendLine($"  malformed  line {m.Line}: {m.Reason}");
        if (Malformed.Count > maxListed) sb.AppendLine($"  ... {Malformed.Count - maxListed} more malformed lines");
        foreach (var u in Unreadable.Take(maxListed)) sb.AppendLine($"  unreadable line {u.Line}: '{u.Answer}' ({u.Reason})");
        if (Unreadable.Count > maxListed) sb.AppendLine($"  ... {Unreadable.Count - maxListed} more unreadable answers");
        return sb.ToString();
    }
}

public static class DataCheck
{
    public static DataCheckReport Run(string path, string format) => Run(path, DatasetLoader.ParseFormat(format));

    public static DataCheckReport Run(string path, DatasetFormat format)
    {
        var loaded = DatasetLoader.Load(path, format, MalformedPolicy.Skip);
        var unreadable = new List<UnreadableAnswer>();
        int numeric = 0;
        foreach (var ex in loaded.Examples)
        {
            var n = AnswerNormalizer.Normalize(ex.Answer);
            if (n.IsNumeric) { numeric++; continue; }
            if (format == DatasetFormat.Gsm8k) unreadable.Add(new(ex.Line, ex.Answer, "not a number"));
            else if (n.Text.Length == 0) unreadable.Add(new(ex.Line, ex.Answer, "empty after normalisation"));
            else if (n.Text.Count(c => c == '{') != n.Text.Count(c => c == '}')) unreadable.Add(new(ex.Line, ex.Answer, "unbalanced braces"));
        }
        return new DataCheckReport(path, format, loaded.Examples.Count, numeric, loaded.Problems, unreadable);
    }
}
