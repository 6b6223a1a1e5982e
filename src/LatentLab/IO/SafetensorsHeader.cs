using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace LatentLab.IO;

/// <summary>
/// Parses and validates a safetensors header with the same rules as huggingface/safetensors:
/// bounded header length, a JSON object, string-to-string <c>__metadata__</c>, known dtypes,
/// byte lengths that match dtype × shape, and tensors that tile the data section exactly
/// (no overlaps, no gaps, no trailing bytes). The reference rejects gaps too, so requiring
/// contiguity keeps us from accepting a file that Python would refuse.
/// </summary>
internal sealed class SafetensorsHeader
{
    /// <summary>The reference implementation's limit (safetensors' MAX_HEADER_SIZE).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public required IReadOnlyList<SafeTensorInfo> Tensors { get; init; }
    public required IReadOnlyDictionary<string, string> Metadata { get; init; }
    /// <summary>Absolute file offset of the first data byte (8 + header length).</summary>
    public required long DataStart { get; init; }

    public static SafetensorsHeader Read(string path, SafeFileHandle file)
    {
        long fileLength = RandomAccess.GetLength(file);
        if (fileLength < 8)
            throw new SafetensorsFormatException(path, null,
                $"file is {fileLength} bytes, too short for the 8-byte header length (truncated, or not a safetensors file)");

        Span<byte> lengthBytes = stackalloc byte[8];
        ReadExactly(path, file, lengthBytes, 0);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (n > MaxHeaderBytes)
            throw new SafetensorsFormatException(path, null,
                $"header length {n} bytes is over the {MaxHeaderBytes}-byte limit (corrupt, or not a safetensors file)");
        long headerLength = (long)n;
        if (8 + headerLength > fileLength)
            throw new SafetensorsFormatException(path, null,
                $"header length {headerLength} bytes goes beyond the end of the file ({fileLength} bytes): the file is truncated or not safetensors");

        var raw = new byte[headerLength];
        ReadExactly(path, file, raw, 8);
        string text;
        try { text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(raw); }
        catch (DecoderFallbackException e)
        {
            throw new SafetensorsFormatException(path, null, "header is not valid UTF-8", e);
        }

        JsonDocument doc;
        try { doc = JsonDocument.Parse(text); }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(path, null, $"header is not valid JSON ({e.Message})", e);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException(path, null,
                    $"header must be a JSON object mapping tensor names to entries, but it is {Describe(doc.RootElement.ValueKind)}");

            long dataLength = fileLength - 8 - headerLength;
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var tensors = new List<SafeTensorInfo>();
            IReadOnlyDictionary<string, string> metadata = new Dictionary<string, string>();
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                // JsonDocument keeps every duplicate; the format (and Python's dict) cannot represent them.
                if (!seen.Add(prop.Name))
                    throw new SafetensorsFormatException(path, prop.Name == "__metadata__" ? null : prop.Name,
                        prop.Name == "__metadata__" ? "'__metadata__' appears more than once in the header" : "name appears more than once in the header");
                if (prop.Name == "__metadata__")
                    metadata = ParseMetadata(path, prop.Value);
                else
                    tensors.Add(ParseEntry(path, prop.Name, prop.Value, dataLength));
            }
            CheckLayout(path, tensors, dataLength);
            return new SafetensorsHeader { Tensors = tensors, Metadata = metadata, DataStart = 8 + headerLength };
        }
    }

    static Dictionary<string, string> ParseMetadata(string path, JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw new SafetensorsFormatException(path, null,
                $"'__metadata__' must be an object of string values, but it is {Describe(e.ValueKind)}");
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in e.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
                throw new SafetensorsFormatException(path, null,
                    $"'__metadata__' entry '{p.Name}' is {Describe(p.Value.ValueKind)}, but metadata must map strings to strings");
            if (!map.TryAdd(p.Name, p.Value.GetString()!))
                throw new SafetensorsFormatException(path, null, $"'__metadata__' entry '{p.Name}' appears more than once");
        }
        return map;
    }

    static SafeTensorInfo ParseEntry(string path, string name, JsonElement e, long dataLength)
    {
        SafetensorsFormatException Bad(string problem) => new(path, name, problem);

        if (e.ValueKind != JsonValueKind.Object)
            throw Bad($"entry must be an object with dtype, shape and data_offsets, but it is {Describe(e.ValueKind)}");

        if (!e.TryGetProperty("dtype", out var dtypeEl) || dtypeEl.ValueKind != JsonValueKind.String)
            throw Bad("entry has no string 'dtype'");
        var dtypeName = dtypeEl.GetString()!;
        if (!SafeDTypes.TryParse(dtypeName, out var dtype))
            throw Bad($"unknown or unsupported dtype '{dtypeName}' (LatentLab reads {SafeDTypes.Supported})");

        if (!e.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw Bad("entry has no array 'shape'");
        var shape = new long[shapeEl.GetArrayLength()];
        int i = 0;
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var v) || v < 0)
                throw Bad($"shape {shapeEl.GetRawText()} must hold non-negative integers");
            shape[i++] = v;
        }

        if (!e.TryGetProperty("data_offsets", out var offEl) || offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2)
            throw Bad("entry has no 'data_offsets' array of two integers [begin, end]");
        var offsets = new long[2];
        i = 0;
        foreach (var d in offEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var v) || v < 0)
                throw Bad($"data_offsets {offEl.GetRawText()} must be two non-negative integers");
            offsets[i++] = v;
        }
        long begin = offsets[0], end = offsets[1];
        if (end < begin)
            throw Bad($"data_offsets [{begin}, {end}] end before they begin");

        long expected;
        try { expected = shape.Aggregate((long)dtype.Size(), (a, b) => checked(a * b)); }
        catch (OverflowException)
        {
            throw Bad($"shape [{string.Join(", ", shape)}] is too large to address");
        }
        if (end - begin != expected)
            throw Bad($"data_offsets [{begin}, {end}] hold {end - begin} bytes, but {dtype}[{string.Join(", ", shape)}] needs {expected}");
        if (end > dataLength)
            throw Bad($"data_offsets [{begin}, {end}] go beyond the data section, which is {dataLength} bytes (the file is truncated or the header is wrong)");
        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    static void CheckLayout(string path, List<SafeTensorInfo> tensors, long dataLength)
    {
        var byOffset = tensors.OrderBy(t => t.Begin).ThenBy(t => t.End).ToList();
        long covered = 0;
        SafeTensorInfo? prev = null;
        foreach (var t in byOffset)
        {
            if (t.Begin < covered)
                throw new SafetensorsFormatException(path, t.Name,
                    $"bytes [{t.Begin}, {t.End}) overlap tensor '{prev!.Name}' at [{prev.Begin}, {prev.End})");
            if (t.Begin > covered)
                throw new SafetensorsFormatException(path, t.Name, prev is null
                    ? $"data starts at byte {t.Begin}, leaving a gap at the start of the data section (safetensors requires tensors to cover it without gaps)"
                    : $"data starts at byte {t.Begin} but tensor '{prev.Name}' ends at {prev.End}: safetensors requires tensors to cover the data section without gaps");
            covered = t.End;
            prev = t;
        }
        if (covered != dataLength)
            throw new SafetensorsFormatException(path, null,
                $"the data section is {dataLength} bytes but the tensors cover {covered}: the format allows no trailing bytes");
    }

    internal static void ReadExactly(string path, SafeFileHandle file, Span<byte> buffer, long offset)
    {
        while (!buffer.IsEmpty)
        {
            int n = RandomAccess.Read(file, buffer, offset);
            if (n <= 0)
                throw new SafetensorsFormatException(path, null, $"unexpected end of file at byte {offset} (the file was truncated while open?)");
            buffer = buffer[n..];
            offset += n;
        }
    }

    static string Describe(JsonValueKind k) => k switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => k.ToString(),
    };
}
