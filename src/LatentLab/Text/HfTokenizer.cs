namespace LatentLab.Text;

/// <summary>
/// A Hugging Face tokenizer.json pipeline: added tokens are cut out first, the rest is normalised,
/// pre-tokenized and run through the model; the post-processor adds special tokens on request and the
/// decoder turns tokens back into text. Built by <see cref="TokenizerLoader"/>.
/// </summary>
public sealed class HfTokenizer : ITokenizer
{
    readonly ITokenModel _model;
    readonly ITextNormalizer? _normalizer;
    readonly IPreTokenizerStep? _preTokenizer;
    readonly IDecoderStep? _decoder;
    readonly PostProcessor _postProcessor;
    readonly AddedTokenMatcher _rawAdded;          // added tokens matched on the input text
    readonly AddedTokenMatcher _normalizedAdded;   // added tokens matched after normalisation
    readonly Dictionary<int, AddedToken> _addedById;
    readonly Dictionary<string, AddedToken> _addedByContent;
    readonly string?[] _idToToken;

    internal HfTokenizer(ITokenModel model, ITextNormalizer? normalizer, IPreTokenizerStep? preTokenizer,
        IDecoderStep? decoder, PostProcessor postProcessor, IReadOnlyList<AddedToken> added,
        int? bosId, int? eosId, int? padId, string hash, string source)
    {
        _model = model;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _decoder = decoder;
        _postProcessor = postProcessor;
        _addedById = new Dictionary<int, AddedToken>();
        _addedByContent = new Dictionary<string, AddedToken>(StringComparer.Ordinal);
        foreach (var t in added)
        {
            _addedById[t.Id] = t;
            _addedByContent[t.Content] = t;
        }
        _rawAdded = new AddedTokenMatcher(added.Where(t => !t.Normalized).Select(t => (t.Content, t)));
        _normalizedAdded = new AddedTokenMatcher(added.Where(t => t.Normalized)
            .Select(t => (normalizer?.Normalize(t.Content) ?? t.Content, t)));

        int maxId = -1;
        foreach (var id in model.Vocab.Values) maxId = Math.Max(maxId, id);
        foreach (var t in added) maxId = Math.Max(maxId, t.Id);
        _idToToken = new string?[maxId + 1];
        foreach (var (token, id) in model.Vocab) _idToToken[id] = token;
        foreach (var t in added) _idToToken[t.Id] = t.Content;
        VocabSize = maxId + 1;

        BosId = bosId;
        EosId = eosId;
        PadId = padId;
        Hash = hash;
        Source = source;
    }

    public int VocabSize { get; }
    public int? BosId { get; }
    public int? EosId { get; }
    public int? PadId { get; }
    public string Hash { get; }

    /// <summary>The file this tokenizer was read from (for error messages and manifests).</summary>
    public string Source { get; }

    /// <summary>Whether <paramref name="id"/> is an added token flagged special (dropped by skip-special decoding).</summary>
    public bool IsSpecial(int id) => _addedById.TryGetValue(id, out var t) && t.Special;

    public int[] Encode(string text, bool addSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);

        var raw = new List<Segment>();
        _rawAdded.Split(text, true, raw);
        var normalized = new List<Segment>();
        var pieces = new List<TextPiece>();
        foreach (var segment in raw)
        {
            if (segment.Id is int addedId) { ids.Add(addedId); continue; }
            var norm = _normalizer?.Normalize(segment.Text) ?? segment.Text;
            normalized.Clear();
            _normalizedAdded.Split(norm, segment.AtStart, normalized);
            foreach (var part in normalized)
            {
                if (part.Id is int id) { ids.Add(id); continue; }
                pieces.Clear();
                var piece = new TextPiece(part.Text, part.AtStart);
                if (_preTokenizer is null) pieces.Add(piece);
                else _preTokenizer.Split(piece, pieces);
                foreach (var word in pieces) _model.Encode(word.Text, ids);
            }
        }
        return addSpecialTokens ? _postProcessor.Apply(ids) : ids.ToArray();
    }

    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var tokens = new List<string>();
        foreach (var id in ids)
        {
            var token = IdToToken(id) ?? throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} is outside the vocabulary of {Source} (size {VocabSize}).");
            if (skipSpecialTokens && IsSpecial(id)) continue;
            tokens.Add(token);
        }
        // Without a decoder, tokenizers joins tokens with spaces.
        return _decoder is null ? string.Join(" ", tokens) : string.Concat(_decoder.DecodeChain(tokens));
    }

    public int? TokenToId(string token)
    {
        if (_addedByContent.TryGetValue(token, out var added)) return added.Id;
        return _model.Vocab.TryGetValue(token, out var id) ? id : null;
    }

    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    public override string ToString() => $"HfTokenizer({Source}, {VocabSize} ids)";
}
