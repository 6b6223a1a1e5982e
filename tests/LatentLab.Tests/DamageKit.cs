using System.Text;

namespace LatentLab.Tests;

/// <summary>What bit rot, a bad disk or a copy gone wrong does to a file: one flipped bit, the length unchanged.</summary>
static class DamageKit
{
    /// <summary>Flips the lowest bit of the byte at <paramref name="offset"/> (negative: from the end).</summary>
    public static void FlipBit(string path, long offset)
    {
        var bytes = File.ReadAllBytes(path);
        long at = offset < 0 ? bytes.Length + offset : offset;
        bytes[at] ^= 1;
        File.WriteAllBytes(path, bytes);
    }

    /// <summary>
    /// Flips a bit in the first digit after <paramref name="key"/> in a JSON text file, so it still parses (a 4 becomes
    /// a 5): damage only a checksum over the text can see.
    /// </summary>
    public static void FlipDigitAfter(string path, string key)
    {
        var text = File.ReadAllText(path);
        int at = text.IndexOf(key, StringComparison.Ordinal);
        Assert.True(at >= 0, $"{key} not in {path}");
        while (!char.IsAsciiDigit(text[at])) at++;
        FlipBit(path, Encoding.UTF8.GetByteCount(text.AsSpan(0, at)));
    }

    public static void CopyTree(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        foreach (var d in Directory.GetDirectories(from)) CopyTree(d, Path.Combine(to, Path.GetFileName(d)));
    }
}
