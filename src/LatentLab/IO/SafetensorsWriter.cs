using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.IO;

/// <summary>
/// Writes safetensors files that huggingface/safetensors reads back unchanged.
/// The header lists tensors in the order given (so a model's state dict stays readable in order).
/// Data bytes are laid out like the reference writer: grouped by element size, largest first,
/// keeping the given order within a group, after a header padded with spaces to a multiple of 8 —
/// so every tensor starts aligned to its element size and a memory-mapping reader can view it in place.
/// Files are written atomically (temporary file + rename).
/// </summary>
public static class SafetensorsWriter
{
    /// <summary>Hugging Face's shard naming: model-00001-of-00003.safetensors.</summary>
    public static string ShardName(int index, int count) => $"model-{index:D5}-of-{count:D5}.safetensors";

    public static void Write(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var full = Path.GetFullPath(path);
        WriteFile(full, Plan(full, tensors), metadata);
    }

    /// <summary>
    /// Splits <paramref name="tensors"/> into shards of at most <paramref name="maxShardBytes"/> bytes each
    /// (in the given order; a tensor larger than the limit gets a shard of its own), writes them as
    /// <c>model-0000i-of-0000N.safetensors</c> plus <c>model.safetensors.index.json</c>, or as plain
    /// <c>model.safetensors</c> when everything fits in one. Weight files left in the folder by an earlier
    /// write that the new set does not use are deleted afterwards, so the folder never mixes two checkpoints.
    /// Returns the paths of the weight files written.
    /// </summary>
    public static IReadOnlyList<string> WriteSharded(string directory, IEnumerable<KeyValuePair<string, Tensor>> tensors,
        long maxShardBytes, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(maxShardBytes, 0);
        var dir = Path.GetFullPath(directory);
        Directory.CreateDirectory(dir);
        var all = Plan(dir, tensors);

        var shards = new List<List<Entry>> { new() };
        long current = 0;
        foreach (var e in all)
        {
            if (shards[^1].Count > 0 && current + e.Bytes > maxShardBytes)
            {
                shards.Add([]);
                current = 0;
            }
            shards[^1].Add(e);
            current += e.Bytes;
        }

        var written = new List<string>();
        if (shards.Count == 1)
        {
            var single = Path.Combine(dir, SafetensorsCheckpoint.SingleFileName);
            WriteFile(single, shards[0], metadata);
            written.Add(single);
        }
        else
        {
            var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < shards.Count; i++)
            {
                var name = ShardName(i + 1, shards.Count);
                var shardPath = Path.Combine(dir, name);
                WriteFile(shardPath, shards[i], metadata);
                written.Add(shardPath);
                foreach (var e in shards[i]) weightMap[e.Name] = name;
            }
            var index = new Dictionary<string, object>
            {
                ["metadata"] = new Dictionary<string, long> { ["total_size"] = all.Sum(e => e.Bytes) },
                ["weight_map"] = weightMap,
            };
            AtomicFile.WriteAllText(Path.Combine(dir, SafetensorsCheckpoint.IndexFileName),
                JsonSerializer.Serialize(index, new JsonSerializerOptions { WriteIndented = true }) + "\n");
            written.Add(Path.Combine(dir, SafetensorsCheckpoint.IndexFileName));
        }
        RemoveStale(dir, written);
        return written.Where(p => p.EndsWith(".safetensors", StringComparison.Ordinal)).ToArray();
    }

    static void RemoveStale(string dir, List<string> keep)
    {
        var keepSet = new HashSet<string>(keep, StringComparer.Ordinal);
        var stale = Directory.GetFiles(dir, "model-*-of-*.safetensors")
            .Append(Path.Combine(dir, SafetensorsCheckpoint.SingleFileName))
            .Append(Path.Combine(dir, SafetensorsCheckpoint.IndexFileName))
            .Where(p => File.Exists(p) && !keepSet.Contains(p));
        foreach (var p in stale) File.Delete(p);
    }

    sealed record Entry(string Name, Tensor Tensor, SafeDType DType, long[] Shape, long Bytes);

    static List<Entry> Plan(string target, IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var list = new List<Entry>();
        foreach (var (name, t) in tensors)
        {
            ArgumentNullException.ThrowIfNull(name);
            if (t is null) throw new ArgumentException($"{target}: tensor '{name}' is null");
            if (name == "__metadata__") throw new ArgumentException($"{target}: '__metadata__' is reserved and cannot name a tensor");
            if (!seen.Add(name)) throw new ArgumentException($"{target}: tensor '{name}' is given more than once");
            var dtype = SafeDTypes.FromScalarType(t.dtype)
                ?? throw new ArgumentException($"{target}: tensor '{name}' has dtype {t.dtype}, which has no safetensors dtype here (supported: {SafeDTypes.Supported})");
            list.Add(new Entry(name, t, dtype, t.shape, t.NumberOfElements * dtype.Size()));
        }
        return list;
    }

    static void WriteFile(string path, IReadOnlyList<Entry> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        var layout = entries.Select((e, i) => (e, i)).OrderByDescending(p => p.e.DType.Size()).ThenBy(p => p.i).Select(p => p.e).ToList();
        var offsets = new Dictionary<string, (long Begin, long End)>(StringComparer.Ordinal);
        long at = 0;
        foreach (var e in layout)
        {
            offsets[e.Name] = (at, at + e.Bytes);
            at += e.Bytes;
        }
        var header = BuildHeader(entries, offsets, metadata);

        AtomicFile.Write(path, stream =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
            stream.Write(len);
            stream.Write(header);
            foreach (var e in layout)
            {
                using var scope = NewDisposeScope();
                // A view or a GPU tensor has no contiguous CPU bytes to hand over; this copy is the price.
                var cpu = e.Tensor.device_type == DeviceType.CPU && e.Tensor.is_contiguous() ? e.Tensor : e.Tensor.cpu().contiguous();
                TensorBytes.Write(cpu, stream);
            }
        });
    }

    static byte[] BuildHeader(IReadOnlyList<Entry> entries, Dictionary<string, (long Begin, long End)> offsets,
        IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            foreach (var e in entries)
            {
                w.WriteStartObject(e.Name);
                w.WriteString("dtype", e.DType.ToString());
                w.WriteStartArray("shape");
                foreach (var d in e.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offsets[e.Name].Begin);
                w.WriteNumberValue(offsets[e.Name].End);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        // Pad with spaces (valid JSON whitespace) so the data section starts 8-byte aligned, as the reference does.
        int pad = (int)((8 - (ms.Length % 8)) % 8);
        for (int i = 0; i < pad; i++) ms.WriteByte((byte)' ');
        return ms.ToArray();
    }
}
