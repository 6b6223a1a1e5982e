using System.Text;
using System.Text.RegularExpressions;

namespace LatentLab.Text;

/// <summary>One step of a tokenizer.json "normalizer".</summary>
internal interface ITextNormalizer
{
    string Normalize(string text);
}

internal sealed record UnicodeNormalizer(NormalizationForm Form) : ITextNormalizer
{
    public string Normalize(string text) => text.IsNormalized(Form) ? text : text.Normalize(Form);
}

internal sealed record LowercaseNormalizer : ITextNormalizer
{
    public string Normalize(string text) => text.ToLowerInvariant();
}

/// <summary>Replace: a literal or a regex pattern, every occurrence.</summary>
internal sealed class ReplaceNormalizer(TextPattern pattern, string content) : ITextNormalizer
{
    public string Normalize(string text) => pattern.ReplaceAll(text, content);
}

/// <summary>Prepend adds its prefix to every non-empty piece (Llama 2 gets its "▁" dummy prefix this way).</summary>
internal sealed record PrependNormalizer(string Prefix) : ITextNormalizer
{
    public string Normalize(string text) => text.Length == 0 ? text : Prefix + text;
}

internal sealed record StripNormalizer(bool Left, bool Right) : ITextNormalizer
{
    public string Normalize(string text) => (Left, Right) switch
    {
        (true, true) => text.Trim(),
        (true, false) => text.TrimStart(),
        (false, true) => text.TrimEnd(),
        _ => text,
    };
}

internal sealed class SequenceNormalizer(IReadOnlyList<ITextNormalizer> steps) : ITextNormalizer
{
    public string Normalize(string text)
    {
        foreach (var step in steps) text = step.Normalize(text);
        return text;
    }
}

/// <summary>The "pattern" object of tokenizer.json: {"String": literal} or {"Regex": pattern}.</summary>
internal sealed class TextPattern
{
    readonly string? _literal;
    readonly Regex? _regex;

    TextPattern(string? literal, Regex? regex) { _literal = literal; _regex = regex; }

    public static TextPattern Literal(string s) => new(s, null);

    // Hugging Face uses Oniguruma; .NET accepts the patterns shipped with Qwen, Llama 3 and GPT-2 verbatim.
    // One known difference: .NET matches UTF-16 code units, so a letter outside the BMP is not \p{L} here.
    public static TextPattern FromRegex(string pattern) =>
        new(null, new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant));

    public string ReplaceAll(string text, string content) =>
        _literal is not null
            ? (_literal.Length == 0 ? text : text.Replace(_literal, content, StringComparison.Ordinal))
            : _regex!.Replace(text, content.Replace("$", "$$"));

    /// <summary>Non-overlapping matches as (start, length), left to right.</summary>
    public IEnumerable<(int Start, int Length)> Matches(string text)
    {
        if (_literal is not null)
        {
            if (_literal.Length == 0) yield break;
            int i = 0;
            while ((i = text.IndexOf(_literal, i, StringComparison.Ordinal)) >= 0)
            {
                yield return (i, _literal.Length);
                i += _literal.Length;
            }
        }
        else
        {
            for (var m = _regex!.Match(text); m.Success; m = m.NextMatch())
                yield return (m.Index, m.Length);
        }
    }
}
