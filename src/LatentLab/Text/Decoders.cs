using System.Globalization;
using System.Text;

namespace LatentLab.Text;

/// <summary>One step of a tokenizer.json "decoder": maps the list of token strings to a new list, as
/// tokenizers' decode_chain does; the final text is the concatenation.</summary>
internal interface IDecoderStep
{
    List<string> DecodeChain(List<string> tokens);
}

/// <summary>ByteLevel: all tokens back to bytes, then UTF-8 (invalid sequences become U+FFFD).</summary>
internal sealed class ByteLevelDecoder : IDecoderStep
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var t in tokens)
            if (!ByteLevel.TryUnmap(t, bytes)) bytes.AddRange(Encoding.UTF8.GetBytes(t));
        return [Encoding.UTF8.GetString(bytes.ToArray())];
    }
}

internal sealed class ReplaceDecoder(TextPattern pattern, string content) : IDecoderStep
{
    public List<string> DecodeChain(List<string> tokens) => tokens.Select(t => pattern.ReplaceAll(t, content)).ToList();
}

/// <summary>ByteFallback: runs of "&lt;0xNN&gt;" tokens become the UTF-8 text they spell, or one U+FFFD per byte when invalid.</summary>
internal sealed class ByteFallbackDecoder : IDecoderStep
{
    static readonly UTF8Encoding Strict = new(false, throwOnInvalidBytes: true);

    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var pending = new List<byte>();
        foreach (var t in tokens)
        {
            if (TryParseByte(t, out var b)) { pending.Add(b); continue; }
            Flush(pending, result);
            result.Add(t);
        }
        Flush(pending, result);
        return result;
    }

    internal static bool TryParseByte(string token, out byte value)
    {
        value = 0;
        return token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
    }

    static void Flush(List<byte> pending, List<string> result)
    {
        if (pending.Count == 0) return;
        try { result.Add(Strict.GetString(pending.ToArray())); }
        catch (DecoderFallbackException) { for (int i = 0; i < pending.Count; i++) result.Add("\uFFFD"); }
        pending.Clear();
    }
}

internal sealed class FuseDecoder : IDecoderStep
{
    public List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary>Strip: up to <c>start</c> leading and <c>stop</c> trailing copies of one character, per token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : IDecoderStep
{
    public List<string> DecodeChain(List<string> tokens) => tokens.Select(StripOne).ToList();

    string StripOne(string token)
    {
        int from = 0;
        while (from < start && from < token.Length && token[from] == content) from++;
        int to = token.Length;
        while (token.Length - to < stop && to > from && token[to - 1] == content) to--;
        return token[from..to];
    }
}

/// <summary>Metaspace: the replacement character becomes a space, and the first token loses the prefix the
/// pre-tokenizer added (unless the scheme never adds one).</summary>
internal sealed class MetaspaceDecoder(char replacement, PrependScheme scheme) : IDecoderStep
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            var t = tokens[i];
            if (i == 0 && scheme != PrependScheme.Never && t.Length > 0 && t[0] == replacement) t = t[1..];
            result.Add(t.Replace(replacement, ' '));
        }
        return result;
    }
}

internal sealed class SequenceDecoder(IReadOnlyList<IDecoderStep> steps) : IDecoderStep
{
    public List<string> DecodeChain(List<string> tokens)
    {
        foreach (var step in steps) tokens = step.DecodeChain(tokens);
        return tokens;
    }
}
