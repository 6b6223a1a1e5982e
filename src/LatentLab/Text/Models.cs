using System.Text;
using Microsoft.ML.Tokenizers;

namespace LatentLab.Text;

/// <summary>The "model" of a tokenizer.json: turns one pre-tokenized word into ids.</summary>
internal interface ITokenModel
{
    IReadOnlyDictionary<string, int> Vocab { get; }
    void Encode(string word, List<int> ids);
}

/// <summary>
/// BPE as tokenizers implements it. The merge loop is Microsoft.ML.Tokenizers' (it gives Hugging Face's ids);
/// what it lacks is written here: byte fallback ("&lt;0xNN&gt;" tokens for characters outside the vocabulary),
/// ignore_merges (a word found whole in the vocabulary is one token), and a clear error instead of silently
/// dropping a character when the model has neither byte fallback nor an unknown token.
/// </summary>
internal sealed class BpeModel : ITokenModel
{
    readonly BpeTokenizer _bpe;
    readonly Dictionary<string, int> _vocab;
    readonly HashSet<int> _singleCodePoints;   // code points that are tokens by themselves
    readonly int[]? _byteIds;                  // id of <0xNN> per byte, when byte fallback is on
    readonly int? _unkId;
    readonly bool _fuseUnk;
    readonly bool _ignoreMerges;
    readonly string _source;

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string A, string B)> merges, string? unkToken,
        bool fuseUnk, bool byteFallback, bool ignoreMerges, string source)
    {
        _vocab = vocab;
        _source = source;
        _fuseUnk = fuseUnk;
        _ignoreMerges = ignoreMerges;
        if (unkToken is not null)
        {
            if (!vocab.TryGetValue(unkToken, out var unk))
                throw new InvalidDataException($"{source}: model.unk_token '{unkToken}' is not in model.vocab.");
            _unkId = unk;
        }
        if (byteFallback)
        {
            _byteIds = new int[256];
            for (int b = 0; b < 256; b++)
                _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out var id) ? id : -1;
        }
        _singleCodePoints = new HashSet<int>();
        foreach (var key in vocab.Keys)
            if (key.Length == 1 && !char.IsSurrogate(key[0])) _singleCodePoints.Add(key[0]);
            else if (key.Length == 2 && char.IsSurrogatePair(key[0], key[1])) _singleCodePoints.Add(char.ConvertToUtf32(key[0], key[1]));

        var mergeLines = new List<string>(merges.Count);
        foreach (var (a, b) in merges)
        {
            // Microsoft.ML.Tokenizers takes "a b" lines; a space inside a token would make them ambiguous.
            if (a.Contains(' ') || b.Contains(' '))
                throw new InvalidDataException($"{source}: merge ('{a}', '{b}') holds a space, which this loader cannot represent.");
            mergeLines.Add(a + " " + b);
        }
        try
        {
            _bpe = BpeTokenizer.Create(new BpeOptions(vocab) { Merges = mergeLines });
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidDataException($"{source}: invalid BPE model: {e.Message}", e);
        }
    }

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    public void Encode(string word, List<int> ids)
    {
        if (word.Length == 0) return;
        if (_ignoreMerges && _vocab.TryGetValue(word, out var whole)) { ids.Add(whole); return; }

        // Characters outside the vocabulary never take part in a merge (merges join vocabulary tokens), so the
        // word can be cut around them: known runs go to the merge loop, the rest become bytes or <unk>.
        int runStart = 0, i = 0;
        bool pendingUnk = false;
        while (i < word.Length)
        {
            int cp = char.IsSurrogatePair(word, i) ? char.ConvertToUtf32(word[i], word[i + 1]) : word[i];
            int width = cp > 0xFFFF ? 2 : 1;
            if (_singleCodePoints.Contains(cp)) { i += width; continue; }

            if (runStart < i) { FlushUnk(ref pendingUnk, ids); MergeRun(word.AsSpan(runStart, i - runStart), ids); }
            var symbol = word.Substring(i, width);
            if (!TryByteFallback(symbol, ids))
            {
                if (_unkId is null)
                    throw new ArgumentException(
                        $"character U+{cp:X4} is not in the vocabulary of {_source}, which has neither byte_fallback nor unk_token.");
                if (pendingUnk && !_fuseUnk) ids.Add(_unkId.Value);
                pendingUnk = true;
            }
            i += width;
            runStart = i;
        }
        FlushUnk(ref pendingUnk, ids);
        if (runStart < word.Length) MergeRun(word.AsSpan(runStart), ids);
    }

    void FlushUnk(ref bool pending, List<int> ids)
    {
        if (pending) ids.Add(_unkId!.Value);
        pending = false;
    }

    bool TryByteFallback(string symbol, List<int> ids)
    {
        if (_byteIds is null) return false;
        var bytes = Encoding.UTF8.GetBytes(symbol);
        foreach (var b in bytes) if (_byteIds[b] < 0) return false;
        foreach (var b in bytes) ids.Add(_byteIds[b]);
        return true;
    }

    void MergeRun(ReadOnlySpan<char> run, List<int> ids) =>
        ids.AddRange(_bpe.EncodeToIds(run, considerPreTokenization: false, considerNormalization: false));
}

/// <summary>WordLevel: each pre-tokenized word is one vocabulary entry, or the unknown token.</summary>
internal sealed class WordLevelModel(Dictionary<string, int> vocab, string? unkToken, string source) : ITokenModel
{
    readonly int? _unkId = unkToken is not null && vocab.TryGetValue(unkToken, out var id) ? id : null;

    public IReadOnlyDictionary<string, int> Vocab => vocab;

    public void Encode(string word, List<int> ids)
    {
        if (vocab.TryGetValue(word, out var id)) ids.Add(id);
        else if (_unkId is int unk) ids.Add(unk);
        else throw new ArgumentException($"'{word}' is not in the WordLevel vocabulary of {source}, which has no usable unk_token.");
    }
}
