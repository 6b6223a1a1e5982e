namespace LatentLab.Text;

/// <summary>
/// A tokenizer as the rest of LatentLab sees it: text to ids and back, plus the few special ids a model needs.
/// Implementations are immutable and safe to share between threads.
/// </summary>
public interface ITokenizer
{
    /// <summary>One past the largest id (model vocabulary and added tokens together), as Hugging Face's len(tokenizer).</summary>
    int VocabSize { get; }

    /// <summary>Encodes text; with <paramref name="addSpecialTokens"/> the tokenizer's post-processor adds its tokens (e.g. Gemma's &lt;bos&gt;).</summary>
    int[] Encode(string text, bool addSpecialTokens = false);

    /// <summary>Decodes ids; with <paramref name="skipSpecialTokens"/> tokens flagged special (not merely added) are dropped.</summary>
    string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false);

    /// <summary>The id of a token in its vocabulary form (e.g. "Ġthe" for byte-level BPE), or null.</summary>
    int? TokenToId(string token);

    /// <summary>The vocabulary form of an id, or null when the id is out of range.</summary>
    string? IdToToken(int id);

    int? BosId { get; }
    int? EosId { get; }
    int? PadId { get; }

    /// <summary>SHA-256 (lower-case hex) of the tokenizer.json bytes (after gzip decompression); manifests use it to refuse mismatched data.</summary>
    string Hash { get; }
}
