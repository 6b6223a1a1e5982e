using Microsoft.Win32.SafeHandles;
using static TorchSharp.torch;

namespace LatentLab.IO;

/// <summary>
/// Moves raw bytes between files and CPU tensor storage without a managed staging buffer.
/// <c>Tensor.bytes</c> is a span over native memory but its length is an int, so large tensors
/// go through contiguous slices of at most <see cref="ChunkBytes"/>.
/// </summary>
internal static class TensorBytes
{
    const long ChunkBytes = 1L << 28;

    /// <summary>Fills a freshly allocated contiguous CPU tensor from <paramref name="offset"/> in the file.</summary>
    public static void Fill(Tensor target, string path, string name, SafeFileHandle file, long offset)
    {
        long count = target.NumberOfElements;
        if (count == 0) return;
        long elem = target.ElementSize;
        long perChunk = Math.Max(1, ChunkBytes / elem);
        using var flat = target.view(-1);
        for (long start = 0; start < count; start += perChunk)
        {
            long n = Math.Min(perChunk, count - start);
            using var slice = flat.narrow(0, start, n);
            var span = slice.bytes;
            long at = offset + start * elem;
            while (!span.IsEmpty)
            {
                int got = RandomAccess.Read(file, span, at);
                if (got <= 0)
                    throw new SafetensorsFormatException(path, name, $"unexpected end of file at byte {at} (the file was truncated while open?)");
                span = span[got..];
                at += got;
            }
        }
    }

    /// <summary>Appends the bytes of a contiguous CPU tensor to <paramref name="hash"/>.</summary>
    public static void Hash(Tensor source, System.IO.Hashing.NonCryptographicHashAlgorithm hash) => ForEachChunk(source, hash.Append);

    /// <summary>Writes the bytes of a contiguous CPU tensor to the stream.</summary>
    public static void Write(Tensor source, Stream stream) => ForEachChunk(source, stream.Write);

    delegate void ChunkSink(ReadOnlySpan<byte> bytes);

    /// <summary>The tensor's bytes in chunks of at most ChunkBytes, so no managed copy of a whole large tensor is made.</summary>
    static void ForEachChunk(Tensor source, ChunkSink sink)
    {
        long count = source.NumberOfElements;
        if (count == 0) return;
        long perChunk = Math.Max(1, ChunkBytes / source.ElementSize);
        using var flat = source.view(-1);
        for (long start = 0; start < count; start += perChunk)
        {
            using var slice = flat.narrow(0, start, Math.Min(perChunk, count - start));
            sink(slice.bytes);
        }
    }
}
