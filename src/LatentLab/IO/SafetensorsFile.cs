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

    public void Dispose() => _file.Dispose();

    public override string ToString() => $"{Path} ({Names.Count} tensors)";
}
