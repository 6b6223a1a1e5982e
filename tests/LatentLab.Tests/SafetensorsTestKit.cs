using System.Buffers.Binary;
using System.Text;

namespace LatentLab.Tests;

/// <summary>A temporary folder per test class plus a way to craft safetensors bytes by hand.</summary>
public abstract class SafetensorsTestKit : IDisposable
{
    protected readonly string Dir = Directory.CreateTempSubdirectory("ll-st-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(Dir, true); } catch (IOException) { }
        GC.SuppressFinalize(this);
    }

    protected string PathFor(string name) => Path.Combine(Dir, name);

    /// <summary>Writes [u64 LE length][header][data] exactly as given, so tests control every byte.</summary>
    protected string Craft(string name, string header, byte[] data, ulong? declaredLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, declaredLength ?? (ulong)h.Length);
        h.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + h.Length);
        var path = PathFor(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    protected string Craft(string name, string header, int dataBytes) => Craft(name, header, new byte[dataBytes]);
}
