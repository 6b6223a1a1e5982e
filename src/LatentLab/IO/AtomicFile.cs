using System.Text;

namespace LatentLab.IO;

/// <summary>
/// Writes a file under a temporary name in the same folder and renames it into place, so readers
/// (and a resumed run after a crash) see either the old file or the complete new one, never half of it.
/// The rename is atomic because source and target share a file system.
/// </summary>
public static class AtomicFile
{
    static readonly UTF8Encoding Utf8NoBom = new(false);

    public static void WriteAllText(string path, string text) =>
        Write(path, s => s.Write(Utf8NoBom.GetBytes(text)));

    public static void WriteAllBytes(string path, byte[] bytes) => Write(path, s => s.Write(bytes));

    /// <summary>Calls <paramref name="write"/> with a stream to the temporary file, flushes it to disk, then renames.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(write);
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        var temp = TempPathFor(full);
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(stream);
                // Without fsync a crash right after the rename can leave the new name pointing at empty data.
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    /// <summary>A hidden, unique sibling of <paramref name="fullPath"/> (same folder, so the rename stays atomic).</summary>
    internal static string TempPathFor(string fullPath) =>
        Path.Combine(Path.GetDirectoryName(fullPath)!, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");

    static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* best effort: the original error matters more */ }
    }
}
