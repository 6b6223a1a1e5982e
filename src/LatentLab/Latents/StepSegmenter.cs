using LatentLab.Teacher;
using LatentLab.Text;

namespace LatentLab.Latents;

/// <summary>
/// One reasoning step of a trace: token positions [<see cref="Start"/>, <see cref="End"/>) of the trace's ids, the last of
/// which is the token that closes the step (its separator, or the end-of-thinking marker after the last step), so the
/// step's final state has read the whole step. <see cref="Text"/> is the step without separators or surrounding space.
/// </summary>
public sealed record StepSpan(int Start, int End, string Text)
{
    public int Length => End - Start;
}

/// <summary>
/// How a trace format's thinking splits into steps: the separators, tried longest first. The char teacher writes
/// <c>step;step;…</c>; chat checkpoints (Qwen3 thinking) write paragraphs and sentences.
/// </summary>
public sealed record StepRule(IReadOnlyList<string> Separators)
{
    /// <summary>The char teacher's steps: <c>3+7+1=11;2+6+1=09</c>.</summary>
    public static readonly StepRule Semicolon = new([";"]);

    /// <summary>Chat thinking: blank lines, line breaks and sentence ends.</summary>
    public static readonly StepRule Lines = new(["\n\n", "\n", ". "]);

    /// <summary>The rule a format's reference traces are written in (<see cref="TraceFormat.StepSeparator"/>).</summary>
    public static StepRule For(TraceFormat fmt) => fmt.Chat.Family == ChatFamily.Plain ? Semicolon : Lines;

    /// <summary>`auto` (null), `semicolon`, `lines`, or `sep:A|B` with `\n` for a line break.</summary>
    public static StepRule? Parse(string? text)
    {
        var t = text?.Trim();
        if (string.IsNullOrEmpty(t) || t == "auto") return null;
        if (t == "semicolon") return Semicolon;
        if (t == "lines") return Lines;
        if (t.StartsWith("sep:", StringComparison.Ordinal))
        {
            var seps = t[4..].Split('|').Select(s => s.Replace("\\n", "\n")).Where(s => s.Length > 0).ToList();
            if (seps.Count > 0) return new StepRule(seps);
        }
        throw new ArgumentException($"step rule '{text}': use auto, semicolon, lines or sep:A|B");
    }

    public override string ToString() => string.Join("|", Separators.Select(s => s.Replace("\n", "\\n")));
}

/// <summary>
/// Splits the thinking block of a trace into <see cref="StepSpan"/>s. Character offsets come from decoding growing
/// prefixes of the thinking tokens, so any tokenizer works (a token whose text straddles a separator closes one step
/// and opens the next).
/// </summary>
public static class StepSegmenter
{
    /// <summary>
    /// The steps of the thinking that starts right after the prompt (<paramref name="promptLength"/> ids) and ends at the
    /// end-of-thinking marker; null when the thinking never closes. Empty steps (two separators in a row) are dropped.
    /// </summary>
    public static IReadOnlyList<StepSpan>? Segment(TraceFormat fmt, IReadOnlyList<int> traceIds, int promptLength, StepRule? rule = null)
    {
        ArgumentNullException.ThrowIfNull(fmt);
        rule ??= StepRule.For(fmt);
        var pos = fmt.Locate(traceIds, promptLength);
        if (pos is null) return null;
        int first = promptLength, last = pos.Value.Post;
        // ends[j]: length of the decoded thinking up to and including token first + j.
        var ends = new int[last - first + 1];
        var tokens = new List<int>();
        string text = "";
        for (int j = first; j <= last; j++)
        {
            tokens.Add(traceIds[j]);
            text = fmt.Tokenizer.Decode(tokens);
            ends[j - first] = text.Length;
        }
        int thinkEnd = text.IndexOf(fmt.Chat.ThinkEnd, StringComparison.Ordinal);
        if (thinkEnd < 0) return null;
        int TokenAt(int ch)
        {
            for (int j = 0; j < ends.Length; j++) if (ends[j] > ch) return first + j;
            return last;
        }

        var steps = new List<StepSpan>();
        // A model that opens the block itself (Qwen3's template ends the prompt before "<think>") wrote the opening
        // marker first: it is no step.
        int from = 0, open = text.IndexOf(fmt.Chat.ThinkStart, StringComparison.Ordinal);
        if (open >= 0 && open < thinkEnd && text[..open].Trim().Length == 0) from = open + fmt.Chat.ThinkStart.Length;
        while (from < thinkEnd)
        {
            int cut = thinkEnd, sepLength = 0;
            foreach (var sep in rule.Separators.OrderByDescending(s => s.Length))
            {
                int at = text.IndexOf(sep, from, thinkEnd - from, StringComparison.Ordinal);
                if (at >= 0 && at < cut) (cut, sepLength) = (at, sep.Length);
            }
            var raw = text[from..cut];
            var trimmed = raw.Trim();
            if (trimmed.Length > 0)
            {
                int lead = raw.Length - raw.TrimStart().Length;
                int start = TokenAt(from + lead);
                // The closing token: the one holding the separator's (or the marker's) first character.
                int close = TokenAt(cut);
                steps.Add(new StepSpan(start, Math.Max(start, close) + 1, trimmed));
            }
            from = cut + Math.Max(sepLength, 1);
        }
        return steps;
    }
}
