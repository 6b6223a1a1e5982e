using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.IO;

/// <summary>
/// One safetensors file, validated on open. Tensors are read on demand with positional reads
/// straight into the new tensor's native storage, so reading one tensor never pulls the whole
/// file into managed memory and reads from several threads are safe.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    readonly SafeFileHandle _file;
    readonly Dictionary<string, SafeTensorInfo> _byName;
    readonly long _dataStart;

    SafetensorsFile(string path, SafeFileHandle file, SafetensorsHeader header)
    {
        Path = path;
        _file = file;
        _dataStart = header.DataStart;
        Names = header.Tensors.Select(t => t.Name).ToArray();
        _byName = header.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        Metadata = header.Metadata;
    }

    public static SafetensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var full = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(full))
            throw new ArgumentException($"{full} is a folder; use SafetensorsCheckpoint.Open for model folders", nameof(path));
        PickleGuard.ThrowIfPickle(full);
        if (!File.Exists(full)) throw new FileNotFoundException($"safetensors file not found: {full}", full);

        var file = File.OpenHandle(full, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        try
        {
            return new SafetensorsFile(full, file, SafetensorsHeader.Read(full, file));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Full path of the file.</summary>
    public string Path { get; }

    /// <summary>Tensor names in the order the header lists them.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The header's <c>__metadata__</c> (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public SafeTensorInfo Info(string name) =>
        _byName.TryGetValue(name, out var info)
            ? info
            : throw new KeyNotFoundException($"{Path}: no tensor named '{name}' ({Names.Count} tensors in the file)");

    /// <summary>
    /// Reads a tensor with the file's dtype and shape, then optionally casts it to <paramref name="dtype"/>
    /// and moves it to <paramref name="device"/> (moved first, so a cast to a wider dtype happens on the device).
    /// </summary>
    public Tensor Read(string name, ScalarType? dtype = null, Device? device = null)
    {
        ObjectDisposedException.ThrowIf(_file.IsClosed, this);
        var info = Info(name);
        var t = torch.empty(info.Shape, info.DType.ToScalarType(), CPU);
        try
        {
            TensorBytes.Fill(t, Path, name, _file, _dataStart + info.Begin);
            if (device is not null && device.type != DeviceType.CPU)
            {
                var moved = t.to(device);
                t.Dispose();
                t = moved;
            }
            if (dtype is { } want && want != t.dtype)
            {
                var cast = t.to_type(want);
                t.Dispose();
                t = cast;
            }
            return t;
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads every tensor in file order, handing each to <paramref name="each"/> (it is disposed afterwards), and returns
    /// the content checksum of the whole file (<see cref="FileChecksum"/>), hashed from the bytes as they land in each
    /// tensor: verifying a file while loading it costs one in-cache pass instead of a second read of the file.
    /// The checksum is known only at the end, so a caller must be ready to discard what it took from a damaged file.
    /// </summary>
    public string ReadAllHashed(Action<string, Tensor> each)
    {
        ObjectDisposedException.ThrowIf(_file.IsClosed, this);
        ArgumentNullException.ThrowIfNull(each);
        var hash = new System.IO.Hashing.XxHash3();
        void Raw(long from, long to)
        {
            var buffer = new byte[Math.Min(to - from, 1 << 20)];
            for (long at = from; at < to;)
            {
                int n = RandomAccess.Read(_file, buffer.AsSpan(0, (int)Math.Min(buffer.Length, to - at)), at);
                if (n <= 0) throw new SafetensorsFormatException(Path, null, $"unexpected end of file at byte {at}");
                hash.Append(buffer.AsSpan(0, n));
                at += n;
            }
        }
        long pos = 0;
        foreach (var info in _byName.Values.OrderBy(i => i.Begin))
        {
            long begin = _dataStart + info.Begin;
            if (begin > pos) Raw(pos, begin); // the header (and any bytes between tensors)
            using var scope = NewDisposeScope();
            var t = Read(info.Name);
            TensorBytes.Hash(t, hash);
            pos = Math.Max(pos, _dataStart + info.End);
            each(info.Name, t);
        }
        long length = RandomAccess.GetLength(_file);
        if (length > pos) Raw(pos, length);
        return FileChecksum.Prefix + Convert.ToHexStringLower(BitConverter.GetBytes(hash.GetCurrentHashAsUInt64()));
    }

    public void Dispose() => _file.Dispose();

    public override string ToString() => $"{Path} ({Names.Count} tensors)";
}
