namespace LatentLab.Text;

/// <summary>An entry of tokenizer.json "added_tokens".</summary>
internal sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord = false,
    bool LStrip = false, bool RStrip = false, bool Normalized = false);

/// <summary>A run of text that is either plain text or one added token (Id set).</summary>
internal readonly record struct Segment(string Text, int? Id, bool AtStart);

/// <summary>
/// Finds added tokens in text the way tokenizers' AddedVocabulary does: leftmost-longest, non-overlapping
/// matches, with the single_word / lstrip / rstrip rules applied afterwards.
/// </summary>
internal sealed class AddedTokenMatcher
{
    sealed class Node
    {
        public Dictionary<char, Node>? Next;
        public AddedToken? Token;
    }

    readonly Node _root = new();

    public AddedTokenMatcher(IEnumerable<(string Pattern, AddedToken Token)> entries)
    {
        foreach (var (pattern, token) in entries)
        {
            if (pattern.Length == 0) continue;
            var node = _root;
            foreach (var c in pattern)
            {
                node.Next ??= new Dictionary<char, Node>();
                if (!node.Next.TryGetValue(c, out var child)) node.Next[c] = child = new Node();
                node = child;
            }
            node.Token ??= token;
        }
        IsEmpty = _root.Next is null;
    }

    public bool IsEmpty { get; }

    /// <summary>Splits <paramref name="text"/> into plain runs and added tokens, appending to <paramref name="output"/>.</summary>
    public void Split(string text, bool atStart, List<Segment> output)
    {
        if (text.Length == 0) return;
        if (IsEmpty) { output.Add(new Segment(text, null, atStart)); return; }

        int emitted = 0;          // end of what has been written out
        int i = 0;
        while (i < text.Length)
        {
            var (length, token) = LongestAt(text, i);
            if (token is null) { i++; continue; }
            int start = i, stop = i + length;
            i = stop;             // matches never overlap, even when one is discarded below

            if (token.SingleWord)
            {
                bool startOk = start == 0 || !char.IsLetterOrDigit(text[start - 1]);
                bool stopOk = stop == text.Length || !char.IsLetterOrDigit(text[stop]);
                if (!startOk || !stopOk) continue;
            }
            if (token.LStrip)
                while (start > emitted && char.IsWhiteSpace(text[start - 1])) start--;
            if (token.RStrip)
                while (stop < text.Length && char.IsWhiteSpace(text[stop])) stop++;
            i = Math.Max(i, stop);

            if (emitted < start) output.Add(new Segment(text[emitted..start], null, atStart && emitted == 0));
            output.Add(new Segment(text[start..stop], token.Id, atStart && start == 0));
            emitted = stop;
        }
        if (emitted < text.Length) output.Add(new Segment(text[emitted..], null, atStart && emitted == 0));
    }

    (int Length, AddedToken? Token) LongestAt(string text, int start)
    {
        var node = _root;
        int best = 0;
        AddedToken? found = null;
        for (int j = start; j < text.Length; j++)
        {
            if (node.Next is null || !node.Next.TryGetValue(text[j], out node)) break;
            if (node.Token is not null) { best = j - start + 1; found = node.Token; }
        }
        return (best, found);
    }
}
