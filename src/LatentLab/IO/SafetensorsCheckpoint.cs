using System.Text.Json;
using static TorchSharp.torch;

namespace LatentLab.IO;

/// <summary>
/// A model's weights as Hugging Face lays them out: one file, a folder with <c>model.safetensors</c>,
/// or a folder of shards listed by <c>model.safetensors.index.json</c> (its <c>weight_map</c>).
/// Every shard is opened and validated up front, so a broken download fails at open, not mid-load.
/// </summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    readonly IReadOnlyList<SafetensorsFile> _files;
    readonly Dictionary<string, SafetensorsFile> _owner;

    SafetensorsCheckpoint(string path, IReadOnlyList<SafetensorsFile> files, IReadOnlyList<string> names,
        Dictionary<string, SafetensorsFile> owner)
    {
        Path = path;
        _files = files;
        Names = names;
        _owner = owner;
        // Shards written together carry the same metadata; where they differ the first shard wins.
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var f in files)
            foreach (var (k, v) in f.Metadata)
                meta.TryAdd(k, v);
        Metadata = meta;
    }

    /// <summary>
    /// Opens a <c>.safetensors</c> file, an index file, or a folder. A folder is read as
    /// <c>model.safetensors</c> if present, else through <c>model.safetensors.index.json</c>,
    /// else as its only <c>*.safetensors</c> file. Pickle checkpoints are refused with the reason.
    /// </summary>
    public static SafetensorsCheckpoint Open(string fileOrDirectory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(fileOrDirectory);
        var full = System.IO.Path.GetFullPath(fileOrDirectory);
        if (File.Exists(full))
        {
            if (full.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase)) return OpenIndex(full);
            return FromSingle(full, SafetensorsFile.Open(full));
        }
        if (!Directory.Exists(full))
        {
            PickleGuard.ThrowIfPickle(full);
            throw new FileNotFoundException($"no checkpoint file or folder at {full}", full);
        }

        var single = System.IO.Path.Combine(full, SingleFileName);
        if (File.Exists(single)) return FromSingle(full, SafetensorsFile.Open(single));
        var index = System.IO.Path.Combine(full, IndexFileName);
        if (File.Exists(index)) return OpenIndex(index);

        var candidates = Directory.GetFiles(full, "*.safetensors").Order(StringComparer.Ordinal).ToArray();
        if (candidates.Length == 1) return FromSingle(full, SafetensorsFile.Open(candidates[0]));
        if (candidates.Length > 1)
            throw new SafetensorsFormatException(full, null,
                $"folder has {candidates.Length} .safetensors files but no {IndexFileName} saying which tensor is in which; " +
                $"open one file directly ({string.Join(", ", candidates.Select(System.IO.Path.GetFileName))})");
        var pickles = Directory.GetFiles(full).Where(PickleGuard.IsPickleName).Select(System.IO.Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        if (pickles.Length > 0)
            throw PickleGuard.Refuse(full, $"this folder has no safetensors weights, only {string.Join(", ", pickles)}, which");
        throw new SafetensorsFormatException(full, null, $"no {SingleFileName}, {IndexFileName} or other .safetensors file in the folder");
    }

    static SafetensorsCheckpoint FromSingle(string path, SafetensorsFile file) =>
        new(path, [file], file.Names, file.Names.ToDictionary(n => n, _ => file, StringComparer.Ordinal));

    static SafetensorsCheckpoint OpenIndex(string indexPath)
    {
        var dir = System.IO.Path.GetDirectoryName(indexPath)!;
        var weightMap = ReadWeightMap(indexPath);
        var shards = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        try
        {
            foreach (var (tensor, shard) in weightMap)
            {
                if (!shards.TryGetValue(shard, out var file))
                {
                    var shardPath = System.IO.Path.Combine(dir, shard);
                    if (!File.Exists(shardPath))
                        throw new SafetensorsFormatException(indexPath, tensor,
                            $"the index puts it in shard '{shard}', but {shardPath} does not exist (incomplete download?)");
                    file = SafetensorsFile.Open(shardPath);
                    shards.Add(shard, file);
                }
                if (!file.Contains(tensor))
                    throw new SafetensorsFormatException(indexPath, tensor,
                        $"the index puts it in shard '{shard}', but {file.Path} has no tensor of that name");
            }
            var owner = weightMap.ToDictionary(p => p.Key, p => shards[p.Value], StringComparer.Ordinal);
            return new SafetensorsCheckpoint(indexPath, shards.Values.ToList(), weightMap.Select(p => p.Key).ToArray(), owner);
        }
        catch
        {
            foreach (var f in shards.Values) f.Dispose();
            throw;
        }
    }

    static List<KeyValuePair<string, string>> ReadWeightMap(string indexPath)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllText(indexPath)); }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(indexPath, null, $"index is not valid JSON ({e.Message})", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException(indexPath, null, "index has no 'weight_map' object (tensor name → shard file)");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var list = new List<KeyValuePair<string, string>>();
            foreach (var p in map.EnumerateObject())
            {
                if (!seen.Add(p.Name))
                    throw new SafetensorsFormatException(indexPath, p.Name, "name appears more than once in weight_map");
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new SafetensorsFormatException(indexPath, p.Name, "weight_map value must be a shard file name");
                var shard = p.Value.GetString()!;
                // A shard is a file next to the index; anything else could read outside the model folder.
                if (shard.Length == 0 || shard != System.IO.Path.GetFileName(shard) || shard is "." or "..")
                    throw new SafetensorsFormatException(indexPath, p.Name, $"shard '{shard}' must be a plain file name in the index's folder");
                PickleGuard.ThrowIfPickle(System.IO.Path.Combine(System.IO.Path.GetDirectoryName(indexPath)!, shard));
                list.Add(new(p.Name, shard));
            }
            return list;
        }
    }

    /// <summary>What was opened: the file, folder or index path.</summary>
    public string Path { get; }

    /// <summary>All tensor names: the file's header order, or the index's weight_map order.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The shards' <c>__metadata__</c> merged (first shard wins on a conflicting key).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The files backing this checkpoint (one, or each shard).</summary>
    public IReadOnlyList<string> Files => _files.Select(f => f.Path).ToArray();

    public bool Contains(string name) => _owner.ContainsKey(name);

    public SafeTensorInfo Info(string name) => Owner(name).Info(name);

    /// <summary>The file that holds <paramref name="name"/>.</summary>
    public string FileOf(string name) => Owner(name).Path;

    public Tensor Read(string name, ScalarType? dtype = null, Device? device = null) => Owner(name).Read(name, dtype, device);

    SafetensorsFile Owner(string name) =>
        _owner.TryGetValue(name, out var f)
            ? f
            : throw new KeyNotFoundException($"{Path}: no tensor named '{name}' ({Names.Count} tensors in the checkpoint)");

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }

    public override string ToString() => $"{Path} ({Names.Count} tensors in {_files.Count} file(s))";
}
