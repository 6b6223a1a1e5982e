using System.Buffers;
using System.IO.Hashing;
using System.Text;
using System.Text.RegularExpressions;

namespace LatentLab.IO;

/// <summary>
/// Content checksums for the files LatentLab writes (checkpoints, exported models, latent shards), written as
/// <c>xxh3:&lt;16 hex digits&gt;</c> so a later change of algorithm stays readable. XXH3-64 catches bit rot, torn
/// copies and bad disks (any change is missed with probability 2⁻⁶⁴); it is not a defence against someone who edits
/// files on purpose, and need not be: nothing here is signed. It was chosen over SHA-256, XXH64 and CRC-32 because it
/// measured fastest here (bench/LatentLab.Bench `checksum`, figures in the README), so verifying on every load is cheap.
/// </summary>
public static partial class FileChecksum
{
    public const string Prefix = "xxh3:";
    /// <summary>What the state and manifest files say when a folder was written before checksums existed.</summary>
    public const string Unverified = "unverified: written before checksums";

    // Large reads measured fastest here: per-call overhead dominates below a few MiB (bench `checksum`).
    const int BufferSize = 4 << 20;

    public static string Of(ReadOnlySpan<byte> bytes) => Prefix + Convert.ToHexStringLower(BitConverter.GetBytes(XxHash3.HashToUInt64(bytes)));

    /// <summary>The checksum of a whole file, read once in 4 MiB blocks.</summary>
    public static string OfFile(string path)
    {
        var hash = new XxHash3();
        var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
        try
        {
            using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
            long at = 0;
            int n;
            while ((n = RandomAccess.Read(file, buffer.AsSpan(0, BufferSize), at)) > 0)
            {
                hash.Append(buffer.AsSpan(0, n));
                at += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        return Prefix + Convert.ToHexStringLower(BitConverter.GetBytes(hash.GetCurrentHashAsUInt64()));
    }

    /// <summary>
    /// Null when <paramref name="path"/> has checksum <paramref name="expected"/>; otherwise what is wrong, naming the
    /// file as <paramref name="name"/> (default: the path).
    /// </summary>
    public static string? Check(string path, string expected, string? name = null)
    {
        name ??= path;
        if (!File.Exists(path)) return $"{name} is missing";
        if (!expected.StartsWith(Prefix, StringComparison.Ordinal))
            return $"{name}: checksum '{expected}' is of an unknown kind (this LatentLab writes {Prefix}…)";
        var actual = OfFile(path);
        return actual == expected ? null : $"{name} is damaged: its content checksum is {actual}, {expected} was recorded when it was written";
    }

    // ---- JSON files that carry their own checksum ----

    /// <summary>The key of a JSON file's checksum over its own text (with the value itself blanked).</summary>
    public const string SealKey = "self_checksum";

    /// <summary>A placeholder of the same length as a real checksum; a file is sealed by serialising with it, then <see cref="Seal"/>.</summary>
    public static readonly string Placeholder = Prefix + new string('0', 16);

    [GeneratedRegex("\"" + SealKey + "\"\\s*:\\s*\"([^\"]*)\"")]
    private static partial Regex SealValue();

    /// <summary>
    /// Replaces the <see cref="Placeholder"/> value of <c>self_checksum</c> in <paramref name="json"/> by the checksum of the
    /// text as it stands. Hashing the text, not the parsed object, keeps the check independent of the schema: a later
    /// version that adds fields still verifies files written before it.
    /// </summary>
    public static string Seal(string json)
    {
        var m = SealValue().Match(json);
        if (!m.Success || m.Groups[1].Value != Placeholder)
            throw new ArgumentException($"cannot seal: the JSON has no \"{SealKey}\": \"{Placeholder}\"");
        var sum = Of(Encoding.UTF8.GetBytes(json));
        return string.Concat(json.AsSpan(0, m.Groups[1].Index), sum, json.AsSpan(m.Groups[1].Index + m.Groups[1].Length));
    }

    /// <summary>
    /// Whether <paramref name="text"/> (the content of <paramref name="path"/>) matches its own <c>self_checksum</c>:
    /// <see cref="Integrity.Unverified"/> when it has none (written before checksums), otherwise intact or damaged,
    /// with <paramref name="why"/> saying what is wrong.
    /// </summary>
    public static Integrity CheckSeal(string text, string path, out string? why)
    {
        var m = SealValue().Match(text);
        if (!m.Success) { why = $"{path}: {Unverified}"; return Integrity.Unverified; }
        var recorded = m.Groups[1].Value;
        var blank = string.Concat(text.AsSpan(0, m.Groups[1].Index), Placeholder, text.AsSpan(m.Groups[1].Index + m.Groups[1].Length));
        if (Of(Encoding.UTF8.GetBytes(blank)) == recorded) { why = null; return Integrity.Intact; }
        why = $"{path} is damaged: its text does not match its {SealKey}";
        return Integrity.Damaged;
    }
}

/// <summary>What a checksum check found.</summary>
public enum Integrity
{
    Intact,
    /// <summary>Written before checksums existed: loads as before, but nothing vouches for it.</summary>
    Unverified,
    Damaged,
}
