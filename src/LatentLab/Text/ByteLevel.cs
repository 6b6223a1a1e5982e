using System.Text;

namespace LatentLab.Text;

/// <summary>
/// GPT-2's reversible byte-to-character table: every byte maps to a printable character so that
/// byte-level BPE vocabularies can be stored as text ("Ġ" is a space, "Ċ" a newline).
/// </summary>
internal static class ByteLevel
{
    public static readonly char[] ByteToChar = BuildTable();
    static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, b)).ToDictionary(t => t.c, t => (byte)t.b);

    static char[] BuildTable()
    {
        var table = new char[256];
        var direct = new bool[256];
        foreach (var (lo, hi) in new[] { ('!', '~'), ('¡', '¬'), ('®', 'ÿ') })
            for (int b = lo; b <= hi; b++) { table[b] = (char)b; direct[b] = true; }
        int n = 0;
        for (int b = 0; b < 256; b++)
            if (!direct[b]) table[b] = (char)(256 + n++);
        return table;
    }

    /// <summary>UTF-8 bytes of <paramref name="text"/>, each written as its table character.</summary>
    public static string Map(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, static (span, b) =>
        {
            for (int i = 0; i < b.Length; i++) span[i] = ByteToChar[b[i]];
        });
    }

    /// <summary>The bytes a token stands for, or null when it holds a character outside the table
    /// (then Hugging Face falls back to the token's own UTF-8 bytes).</summary>
    public static bool TryUnmap(string token, List<byte> output)
    {
        int start = output.Count;
        foreach (var c in token)
        {
            if (!CharToByte.TryGetValue(c, out var b))
            {
                output.RemoveRange(start, output.Count - start);
                return false;
            }
            output.Add(b);
        }
        return true;
    }
}
