namespace LatentLab.Text;

/// <summary>A piece of text on its way to the model. <see cref="AtStart"/> says it begins the original
/// input, which Metaspace's "first" prepend scheme needs.</summary>
internal readonly record struct TextPiece(string Text, bool AtStart);

/// <summary>One step of a tokenizer.json "pre_tokenizer": splits each piece further (and may rewrite it).</summary>
internal interface IPreTokenizerStep
{
    void Split(TextPiece piece, List<TextPiece> output);
}

internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>Hugging Face's Split, with the same five behaviours and the same handling of matches and gaps.</summary>
internal sealed class SplitPreTokenizer(TextPattern pattern, SplitBehavior behavior, bool invert) : IPreTokenizerStep
{
    public void Split(TextPiece piece, List<TextPiece> output) => SplitText(piece, pattern, behavior, invert, output);

    public static void SplitText(TextPiece piece, TextPattern pattern, SplitBehavior behavior, bool invert, List<TextPiece> output)
    {
        var text = piece.Text;
        // Cover the text with (start, end, isMatch) chunks, as tokenizers' find_matches does.
        var chunks = new List<(int Start, int End, bool IsMatch)>();
        int prev = 0;
        foreach (var (start, length) in pattern.Matches(text))
        {
            if (prev != start) chunks.Add((prev, start, invert));
            chunks.Add((start, start + length, !invert));
            prev = start + length;
        }
        if (prev != text.Length) chunks.Add((prev, text.Length, invert));

        var spans = new List<(int Start, int End)>();
        switch (behavior)
        {
            case SplitBehavior.Isolated:
                foreach (var c in chunks) spans.Add((c.Start, c.End));
                break;
            case SplitBehavior.Removed:
                foreach (var c in chunks) if (!c.IsMatch) spans.Add((c.Start, c.End));
                break;
            case SplitBehavior.Contiguous:
            {
                bool previous = false;
                foreach (var c in chunks)
                {
                    if (c.IsMatch == previous && spans.Count > 0) spans[^1] = (spans[^1].Start, c.End);
                    else spans.Add((c.Start, c.End));
                    previous = c.IsMatch;
                }
                break;
            }
            case SplitBehavior.MergedWithPrevious:
            {
                bool previous = false;
                foreach (var c in chunks)
                {
                    if (c.IsMatch && !previous && spans.Count > 0) spans[^1] = (spans[^1].Start, c.End);
                    else spans.Add((c.Start, c.End));
                    previous = c.IsMatch;
                }
                break;
            }
            case SplitBehavior.MergedWithNext:
            {
                bool previous = false;
                for (int i = chunks.Count - 1; i >= 0; i--)
                {
                    var c = chunks[i];
                    if (c.IsMatch && !previous && spans.Count > 0) spans[^1] = (c.Start, spans[^1].End);
                    else spans.Add((c.Start, c.End));
                    previous = c.IsMatch;
                }
                spans.Reverse();
                break;
            }
        }
        foreach (var (start, end) in spans)
            if (end > start)
                output.Add(new TextPiece(text[start..end], piece.AtStart && start == 0));
    }
}

/// <summary>ByteLevel: optional prefix space, optional GPT-2 regex split, then bytes to table characters.</summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : IPreTokenizerStep
{
    internal const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    static readonly TextPattern Gpt2 = TextPattern.FromRegex(Gpt2Pattern);

    public void Split(TextPiece piece, List<TextPiece> output)
    {
        if (addPrefixSpace && !piece.Text.StartsWith(' ')) piece = piece with { Text = " " + piece.Text };
        var parts = new List<TextPiece>();
        if (useRegex) SplitPreTokenizer.SplitText(piece, Gpt2, SplitBehavior.Isolated, false, parts);
        else parts.Add(piece);
        foreach (var p in parts) output.Add(p with { Text = ByteLevel.Map(p.Text) });
    }
}

internal enum PrependScheme { Always, First, Never }

/// <summary>Metaspace: spaces become the replacement character ("▁"), a prefix is added per the scheme,
/// and the piece is optionally split before each replacement character.</summary>
internal sealed class MetaspacePreTokenizer(char replacement, PrependScheme scheme, bool split) : IPreTokenizerStep
{
    readonly TextPattern _separator = TextPattern.Literal(replacement.ToString());

    public void Split(TextPiece piece, List<TextPiece> output)
    {
        var text = piece.Text.Replace(' ', replacement);
        bool prepend = scheme switch
        {
            PrependScheme.Always => !text.StartsWith(replacement),
            PrependScheme.First => !text.StartsWith(replacement) && piece.AtStart,
            _ => false,
        };
        if (prepend) text = replacement + text;
        var rewritten = piece with { Text = text };
        if (split)
            SplitPreTokenizer.SplitText(rewritten, _separator, SplitBehavior.MergedWithNext, false, output);
        else if (text.Length > 0)
            output.Add(rewritten);
    }
}

/// <summary>Digits: numbers split from the rest, one digit per piece when individual_digits is set.</summary>
internal sealed class DigitsPreTokenizer(bool individual) : IPreTokenizerStep
{
    static readonly TextPattern Digit = TextPattern.FromRegex(@"\p{N}");

    public void Split(TextPiece piece, List<TextPiece> output) =>
        SplitPreTokenizer.SplitText(piece, Digit, individual ? SplitBehavior.Isolated : SplitBehavior.Contiguous, false, output);
}

internal sealed class SequencePreTokenizer(IReadOnlyList<IPreTokenizerStep> steps) : IPreTokenizerStep
{
    public void Split(TextPiece piece, List<TextPiece> output)
    {
        var current = new List<TextPiece> { piece };
        var next = new List<TextPiece>();
        foreach (var step in steps)
        {
            next.Clear();
            foreach (var p in current) step.Split(p, next);
            (current, next) = (next, current);
        }
        output.AddRange(current);
    }
}
