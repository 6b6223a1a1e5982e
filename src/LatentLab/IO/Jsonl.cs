using System.Text;
using System.Text.Json;

namespace LatentLab.IO;

/// <summary>
/// JSON Lines: one compact JSON value per line (metrics, traces, task files).
/// Each append is one write of a whole line, so concurrent readers and a crash can cost at most the last line.
/// </summary>
public static class Jsonl
{
    static readonly JsonSerializerOptions Compact = new(JsonSerializerDefaults.Web);

    /// <summary>Appends one value as a single line, creating the file (and folder) if needed.</summary>
    public static void Append<T>(string path, T value, JsonSerializerOptions? options = null) =>
        AppendMany(path, [value], options);

    public static void AppendMany<T>(string path, IEnumerable<T> values, JsonSerializerOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var opts = SingleLine(options);
        var sb = new StringBuilder();
        foreach (var v in values) sb.Append(JsonSerializer.Serialize(v, opts)).Append('\n');
        if (sb.Length == 0) return;
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        using var stream = new FileStream(full, FileMode.Append, FileAccess.Write, FileShare.Read);
        stream.Write(Encoding.UTF8.GetBytes(sb.ToString()));
    }

    /// <summary>
    /// Reads every non-blank line as a <typeparamref name="T"/>. A line that does not parse is an
    /// <see cref="InvalidDataException"/> naming the file and the 1-based line number.
    /// </summary>
    public static IEnumerable<T> Read<T>(string path, JsonSerializerOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new FileNotFoundException($"jsonl file not found: {full}", full);
        return ReadLines(full, options ?? Compact);

        static IEnumerable<T> ReadLines(string full, JsonSerializerOptions opts)
        {
            int lineNo = 0;
            foreach (var line in File.ReadLines(full))
            {
                lineNo++;
                if (string.IsNullOrWhiteSpace(line)) continue;
                T? value;
                try { value = JsonSerializer.Deserialize<T>(line, opts); }
                catch (JsonException e)
                {
                    throw new InvalidDataException($"{full}:{lineNo}: not a valid {typeof(T).Name} JSON line ({e.Message})", e);
                }
                if (value is null) throw new InvalidDataException($"{full}:{lineNo}: line is JSON null, expected a {typeof(T).Name}");
                yield return value;
            }
        }
    }

    public static List<T> ReadAll<T>(string path, JsonSerializerOptions? options = null) => Read<T>(path, options).ToList();

    static JsonSerializerOptions SingleLine(JsonSerializerOptions? options)
    {
        if (options is null) return Compact;
        if (!options.WriteIndented) return options;
        return new JsonSerializerOptions(options) { WriteIndented = false };
    }
}
