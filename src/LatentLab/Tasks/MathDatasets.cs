using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Parquet;
using Parquet.Schema;

namespace LatentLab.Tasks;

/// <summary>One math word problem from a real data file. <paramref name="Steps"/> is the worked solution when the file
/// has one (GSM8K: the text before <c>####</c>, calculator annotations kept; MATH: the whole solution); null for Big-Math.
/// <paramref name="Answer"/> is the reference answer as written (read it with <see cref="AnswerNormalizer"/>).
/// <paramref name="Line"/> is the 1-based line in the file (for a JSON array: the line the item starts on; for parquet:
/// the 1-based row).</summary>
public sealed record MathExample(string Question, string? Steps, string Answer, string Source, int Line);

public enum MalformedPolicy { Skip, Fail }

public enum DatasetFormat { Gsm8k, Math, BigMath }

public sealed record MalformedLine(string File, int Line, string Reason)
{
    public override string ToString() => $"{File}:{Line}: {Reason}";
}

public sealed record DatasetLoadResult(IReadOnlyList<MathExample> Examples, IReadOnlyList<MalformedLine> Problems);

/// <summary>A malformed line under <see cref="MalformedPolicy.Fail"/>; the message names the file and line.</summary>
public sealed class DatasetFormatException(MalformedLine problem)
    : FormatException($"malformed data at {problem.File}:{problem.Line}: {problem.Reason}")
{
    public MalformedLine Problem { get; } = problem;
}

/// <summary>Collects examples and malformed lines, applying the policy at the first problem.</summary>
internal sealed class LoadCollector<T>(string file, MalformedPolicy policy)
{
    public List<T> Items { get; } = [];
    public List<MalformedLine> Problems { get; } = [];

    public void Bad(int line, string reason)
    {
        var p = new MalformedLine(file, line, reason);
        if (policy == MalformedPolicy.Fail) throw new DatasetFormatException(p);
        Problems.Add(p);
    }
}

/// <summary>JSON records from a JSON-lines file or a JSON array, each with its line number.</summary>
internal static class JsonRecords
{
    /// <summary>Blank lines are not records (files often end with one); every other line is one record or one problem.
    /// A syntax error inside a JSON array ends the read (the rest cannot be resynchronised) and is reported.</summary>
    public static void Read(string path, Action<int, JsonElement> record, Action<int, string> bad)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"data file not found: {path}", path);
        byte[] bytes = File.ReadAllBytes(path);
        int start = bytes.AsSpan().StartsWith("\uFEFF"u8) ? 3 : 0;
        int first = start;
        while (first < bytes.Length && bytes[first] is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n') first++;
        if (first < bytes.Length && bytes[first] == (byte)'[') ReadArray(bytes.AsMemory(start), record, bad);
        else ReadLines(Encoding.UTF8.GetString(bytes, start, bytes.Length - start), record, bad);
    }

    private static void ReadLines(string text, Action<int, JsonElement> record, Action<int, string> bad)
    {
        int lineNo = 0;
        foreach (var line in text.Split('\n'))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); }
            catch (JsonException e) { bad(lineNo, "invalid JSON: " + e.Message); continue; }
            using (doc) record(lineNo, doc.RootElement);
        }
    }

    private static void ReadArray(ReadOnlyMemory<byte> bytes, Action<int, JsonElement> record, Action<int, string> bad)
    {
        // Offsets only grow, so counting newlines incrementally keeps a large array linear.
        int line = 1, scanned = 0;
        int LineAt(long offset)
        {
            if (offset < scanned) { line = 1; scanned = 0; }
            line += bytes.Span[scanned..(int)offset].Count((byte)'\n');
            scanned = (int)offset;
            return line;
        }
        var span = bytes.Span;
        var items = new List<(int Line, JsonElement Item)>();
        var reader = new Utf8JsonReader(span, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip });
        long lastOffset = 0;
        try
        {
            reader.Read();   // '['
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                lastOffset = reader.TokenStartIndex;
                items.Add((LineAt(reader.TokenStartIndex), JsonElement.ParseValue(ref reader)));
            }
            if (reader.Read()) throw new JsonException("content after the closing ']'");
        }
        catch (JsonException e)
        {
            int at = e.LineNumber is long l ? (int)l + 1 : LineAt(lastOffset);
            foreach (var (ln, item) in items) record(ln, item);
            bad(at, "invalid JSON array (reading stops here): " + e.Message);
            return;
        }
        foreach (var (ln, item) in items) record(ln, item);
    }

    public static string? String(JsonElement e, string name, Action<string> bad)
    {
        if (e.ValueKind != JsonValueKind.Object) { bad($"expected a JSON object, found {e.ValueKind}"); return null; }
        if (!e.TryGetProperty(name, out var v)) { bad($"missing field '{name}'"); return null; }
        if (v.ValueKind != JsonValueKind.String) { bad($"field '{name}' is {v.ValueKind}, expected a string"); return null; }
        string s = v.GetString()!;
        if (string.IsNullOrWhiteSpace(s)) { bad($"field '{name}' is empty"); return null; }
        return s;
    }
}

/// <summary>GSM8K jsonl: <c>question</c>, <c>answer</c> whose steps carry calculator annotations <c>&lt;&lt;a*b=c&gt;&gt;</c>
/// and end with <c>#### n</c>.</summary>
public static partial class Gsm8kLoader
{
    public static DatasetLoadResult Load(string path, MalformedPolicy policy)
    {
        var c = new LoadCollector<MathExample>(path, policy);
        JsonRecords.Read(path, (line, e) =>
        {
            void Bad(string r) => c.Bad(line, r);
            string? q = JsonRecords.String(e, "question", Bad);
            if (q is null) return;
            string? a = JsonRecords.String(e, "answer", Bad);
            if (a is null) return;
            int hash = a.LastIndexOf("####", StringComparison.Ordinal);
            if (hash < 0) { Bad("answer has no '#### n' final line"); return; }
            string final = a[(hash + 4)..].Trim();
            if (final.Length == 0) { Bad("nothing after '####'"); return; }
            c.Items.Add(new MathExample(q, a[..hash].Trim(), final, "gsm8k", line));
        }, c.Bad);
        return new DatasetLoadResult(c.Items, c.Problems);
    }

    /// <summary>"16 - 3 - 4 = &lt;&lt;16-3-4=9&gt;&gt;9" -> "16 - 3 - 4 = 9".</summary>
    public static string StripCalculatorAnnotations(string steps) => Annotation().Replace(steps, "");

    [GeneratedRegex(@"<<[^<>]*>>")]
    private static partial Regex Annotation();
}

/// <summary>MATH (Hendrycks et al.): <c>problem</c>, <c>solution</c> with the answer in the last <c>\boxed{}</c>;
/// JSON lines or one JSON array.</summary>
public static class MathLoader
{
    public static DatasetLoadResult Load(string path, MalformedPolicy policy)
    {
        var c = new LoadCollector<MathExample>(path, policy);
        JsonRecords.Read(path, (line, e) =>
        {
            void Bad(string r) => c.Bad(line, r);
            string? q = JsonRecords.String(e, "problem", Bad);
            if (q is null) return;
            string? sol = JsonRecords.String(e, "solution", Bad);
            if (sol is null) return;
            string? ans = AnswerNormalizer.LastBoxed(sol);
            if (string.IsNullOrWhiteSpace(ans)) { Bad("solution has no complete \\boxed{...} answer"); return; }
            c.Items.Add(new MathExample(q, sol, ans, "math", line));
        }, c.Bad);
        return new DatasetLoadResult(c.Items, c.Problems);
    }
}

/// <summary>Big-Math: <c>problem</c>, <c>answer</c>; JSON lines, a JSON array, or parquet (by the .parquet extension
/// or the PAR1 magic bytes).</summary>
public static class BigMathLoader
{
    public static DatasetLoadResult Load(string path, MalformedPolicy policy)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"data file not found: {path}", path);
        var c = new LoadCollector<MathExample>(path, policy);
        if (IsParquet(path)) ReadParquet(path, c).GetAwaiter().GetResult();
        else
            JsonRecords.Read(path, (line, e) =>
            {
                void Bad(string r) => c.Bad(line, r);
                string? q = JsonRecords.String(e, "problem", Bad);
                if (q is null) return;
                string? a = e.ValueKind == JsonValueKind.Object && e.TryGetProperty("answer", out var v) && v.ValueKind == JsonValueKind.Number
                    ? v.GetRawText()
                    : JsonRecords.String(e, "answer", Bad);
                if (a is null) return;
                c.Items.Add(new MathExample(q, null, a.Trim(), "bigmath", line));
            }, c.Bad);
        return new DatasetLoadResult(c.Items, c.Problems);
    }

    private static bool IsParquet(string path)
    {
        if (path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase)) return true;
        using var f = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        return f.Read(magic) == 4 && magic.SequenceEqual("PAR1"u8);
    }

    private static async Task ReadParquet(string path, LoadCollector<MathExample> c)
    {
        await using var stream = File.OpenRead(path);
        await using var reader = await ParquetReader.CreateAsync(stream);
        var fields = reader.Schema.GetDataFields();
        DataField Column(string name) =>
            fields.FirstOrDefault(f => f.Name == name) is { } f
                ? f.ClrType == typeof(string) || f.ClrType == typeof(ReadOnlyMemory<char>) ? f : throw new FormatException($"{path}: parquet column '{name}' holds {f.ClrType.Name}, expected strings")
                : throw new FormatException($"{path}: parquet file has no column '{name}' (columns: {string.Join(", ", fields.Select(x => x.Name))})");
        var problem = Column("problem");
        var answer = Column("answer");
        int row = 0;
        for (int g = 0; g < reader.RowGroupCount; g++)
        {
            using var group = reader.OpenRowGroupReader(g);
            int n = checked((int)group.RowCount);
            var qs = new string?[n];
            var ans = new string?[n];
            await group.ReadAsync(problem, qs.AsMemory());
            await group.ReadAsync(answer, ans.AsMemory());
            for (int i = 0; i < n; i++)
            {
                row++;
                if (string.IsNullOrWhiteSpace(qs[i])) { c.Bad(row, "row has no problem"); continue; }
                if (string.IsNullOrWhiteSpace(ans[i])) { c.Bad(row, "row has no answer"); continue; }
                c.Items.Add(new MathExample(qs[i]!, null, ans[i]!.Trim(), "bigmath", row));
            }
        }
    }
}

public static class DatasetLoader
{
    public static DatasetLoadResult Load(string path, DatasetFormat format, MalformedPolicy policy) => format switch
    {
        DatasetFormat.Gsm8k => Gsm8kLoader.Load(path, policy),
        DatasetFormat.Math => MathLoader.Load(path, policy),
        DatasetFormat.BigMath => BigMathLoader.Load(path, policy),
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "unknown dataset format"),
    };

    /// <summary>"gsm8k", "math" or "bigmath" (case-insensitive; "big-math" too).</summary>
    public static DatasetFormat ParseFormat(string name) => name.Trim().ToLowerInvariant() switch
    {
        "gsm8k" => DatasetFormat.Gsm8k,
        "math" => DatasetFormat.Math,
        "bigmath" or "big-math" or "big_math" => DatasetFormat.BigMath,
        _ => throw new ArgumentException($"unknown data format '{name}'; use gsm8k, math or bigmath", nameof(name)),
    };
}
