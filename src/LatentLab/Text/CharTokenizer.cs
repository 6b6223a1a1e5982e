using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace LatentLab.Text;

/// <summary>
/// One token per character, for synthetic tasks. Ids: the special tokens first (&lt;pad&gt;=0, &lt;bos&gt;=1,
/// &lt;eos&gt;=2, &lt;think&gt;=3, &lt;/think&gt;=4, &lt;direct&gt;=5, then any extras), then the alphabet in the order given.
/// Special-token strings in the text are matched first (longest wins); every other character must be in the
/// alphabet: an unknown character is an <see cref="ArgumentException"/>, never a silent &lt;unk&gt;, because a
/// synthetic task that produces one has a bug.
/// Only &lt;pad&gt;, &lt;bos&gt;, &lt;eos&gt; are flagged special (dropped by skip-special decoding); the reasoning and mode
/// markers stay, as Qwen3 treats its &lt;think&gt;. Encoding with special tokens prepends &lt;bos&gt;.
/// <see cref="Save"/> writes a Hugging Face tokenizer.json (BPE without merges, Fuse decoder) that both
/// transformers and <see cref="TokenizerLoader"/> read back to the same ids.
/// </summary>
public sealed class CharTokenizer : ITokenizer
{
    public const string Pad = "<pad>", Bos = "<bos>", Eos = "<eos>", ThinkStart = "<think>", ThinkEnd = "</think>", Direct = "<direct>";

    /// <summary>The special tokens every CharTokenizer has, in id order.</summary>
    public static IReadOnlyList<string> DefaultSpecials { get; } = [Pad, Bos, Eos, ThinkStart, ThinkEnd, Direct];

    readonly string[] _tokens;
    readonly Dictionary<string, int> _ids;
    readonly Dictionary<char, int> _charIds;
    readonly string[] _specialsLongestFirst;
    readonly bool[] _isSpecial;
    readonly byte[] _json;

    CharTokenizer(IReadOnlyList<string> specials, IReadOnlyList<char> alphabet)
    {
        Specials = specials;
        Alphabet = alphabet;
        _tokens = [.. specials, .. alphabet.Select(c => c.ToString())];
        _ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < _tokens.Length; i++) _ids[_tokens[i]] = i;
        _charIds = alphabet.Select((c, i) => (c, i)).ToDictionary(t => t.c, t => specials.Count + t.i);
        _specialsLongestFirst = specials.OrderByDescending(s => s.Length).ToArray();
        _isSpecial = _tokens.Select((t, i) => i < specials.Count && t is Pad or Bos or Eos).ToArray();
        _json = BuildJson();
        Hash = Convert.ToHexStringLower(SHA256.HashData(_json));
    }

    /// <summary>
    /// Builds a tokenizer from the characters of <paramref name="alphabet"/> (duplicates ignored, order kept) and
    /// optional extra special tokens (e.g. more mode markers) that come after the defaults.
    /// </summary>
    public static CharTokenizer Create(IEnumerable<char> alphabet, IEnumerable<string>? extraSpecials = null)
    {
        ArgumentNullException.ThrowIfNull(alphabet);
        var chars = new List<char>();
        var seen = new HashSet<char>();
        foreach (var c in alphabet)
        {
            if (char.IsSurrogate(c)) throw new ArgumentException($"alphabet character U+{(int)c:X4} is a UTF-16 surrogate; a CharTokenizer holds BMP characters only.", nameof(alphabet));
            if (seen.Add(c)) chars.Add(c);
        }
        if (chars.Count == 0) throw new ArgumentException("the alphabet is empty.", nameof(alphabet));

        var specials = new List<string>(DefaultSpecials);
        foreach (var s in extraSpecials ?? [])
        {
            if (string.IsNullOrEmpty(s)) throw new ArgumentException("a special token is empty.", nameof(extraSpecials));
            if (specials.Contains(s)) throw new ArgumentException($"special token '{s}' is given twice (the defaults are {string.Join(" ", DefaultSpecials)}).", nameof(extraSpecials));
            if (s.Length == 1 && seen.Contains(s[0])) throw new ArgumentException($"special token '{s}' is also an alphabet character.", nameof(extraSpecials));
            specials.Add(s);
        }
        return new CharTokenizer(specials, chars);
    }

    public IReadOnlyList<string> Specials { get; }
    public IReadOnlyList<char> Alphabet { get; }
    public int VocabSize => _tokens.Length;
    public int? BosId => _ids[Bos];
    public int? EosId => _ids[Eos];
    public int? PadId => _ids[Pad];
    public string Hash { get; }

    public int[] Encode(string text, bool addSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length + 1);
        if (addSpecialTokens) ids.Add(_ids[Bos]);
        int i = 0;
        while (i < text.Length)
        {
            var special = MatchSpecial(text, i);
            if (special is not null) { ids.Add(_ids[special]); i += special.Length; continue; }
            if (!_charIds.TryGetValue(text[i], out var id))
                throw new ArgumentException($"character '{Printable(text[i])}' (U+{(int)text[i]:X4}) at index {i} is not in the CharTokenizer alphabet.", nameof(text));
            ids.Add(id);
            i++;
        }
        return ids.ToArray();
    }

    string? MatchSpecial(string text, int at)
    {
        foreach (var s in _specialsLongestFirst)
            if (text.AsSpan(at).StartsWith(s, StringComparison.Ordinal)) return s;
        return null;
    }

    static string Printable(char c) => char.IsControl(c) ? $"\\u{(int)c:X4}" : c.ToString();

    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var sb = new StringBuilder();
        foreach (var id in ids)
        {
            if (id < 0 || id >= _tokens.Length) throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} is outside the CharTokenizer vocabulary (size {_tokens.Length}).");
            if (skipSpecialTokens && _isSpecial[id]) continue;
            sb.Append(_tokens[id]);
        }
        return sb.ToString();
    }

    public int? TokenToId(string token) => _ids.TryGetValue(token, out var id) ? id : null;
    public string? IdToToken(int id) => id >= 0 && id < _tokens.Length ? _tokens[id] : null;

    /// <summary>The tokenizer.json this tokenizer saves (UTF-8); <see cref="Hash"/> is its SHA-256.</summary>
    public byte[] ToTokenizerJson() => (byte[])_json.Clone();

    /// <summary>Writes tokenizer.json and tokenizer_config.json into <paramref name="directory"/> (created if needed).</summary>
    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        WriteAtomic(Path.Combine(directory, "tokenizer.json"), _json);
        WriteAtomic(Path.Combine(directory, "tokenizer_config.json"), BuildConfigJson());
    }

    static void WriteAtomic(string path, byte[] bytes)
    {
        var tmp = path + ".tmp";
        File.WriteAllBytes(tmp, bytes);
        File.Move(tmp, path, overwrite: true);
    }

    static readonly JsonWriterOptions WriterOptions = new() { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    byte[] BuildJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, WriterOptions))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WriteStartArray("added_tokens");
            for (int i = 0; i < Specials.Count; i++)
            {
                w.WriteStartObject();
                w.WriteNumber("id", i);
                w.WriteString("content", Specials[i]);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("special", _isSpecial[i]);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("normalizer");
            w.WriteNull("pre_tokenizer");

            w.WriteStartObject("post_processor");
            w.WriteString("type", "TemplateProcessing");
            w.WriteStartArray("single");
            WriteSpecialItem(w, Bos, 0);
            WriteSequenceItem(w, "A", 0);
            w.WriteEndArray();
            w.WriteStartArray("pair");
            WriteSpecialItem(w, Bos, 0);
            WriteSequenceItem(w, "A", 0);
            WriteSequenceItem(w, "B", 1);
            w.WriteEndArray();
            w.WriteStartObject("special_tokens");
            w.WriteStartObject(Bos);
            w.WriteString("id", Bos);
            w.WriteStartArray("ids"); w.WriteNumberValue(_ids[Bos]); w.WriteEndArray();
            w.WriteStartArray("tokens"); w.WriteStringValue(Bos); w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndObject();

            w.WriteStartObject("decoder");
            w.WriteString("type", "Fuse");
            w.WriteEndObject();

            // BPE with no merges and no pre-tokenizer is exactly "one token per character".
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteNull("dropout");
            w.WriteNull("unk_token");
            w.WriteNull("continuing_subword_prefix");
            w.WriteNull("end_of_word_suffix");
            w.WriteBoolean("fuse_unk", false);
            w.WriteBoolean("byte_fallback", false);
            w.WriteBoolean("ignore_merges", false);
            w.WriteStartObject("vocab");
            for (int i = 0; i < _tokens.Length; i++) w.WriteNumber(_tokens[i], i);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    static void WriteSpecialItem(Utf8JsonWriter w, string id, int typeId) => WriteItem(w, "SpecialToken", id, typeId);

    static void WriteSequenceItem(Utf8JsonWriter w, string id, int typeId) => WriteItem(w, "Sequence", id, typeId);

    static void WriteItem(Utf8JsonWriter w, string kind, string id, int typeId)
    {
        w.WriteStartObject();
        w.WriteStartObject(kind);
        w.WriteString("id", id);
        w.WriteNumber("type_id", typeId);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    byte[] BuildConfigJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, WriterOptions))
        {
            w.WriteStartObject();
            w.WriteString("tokenizer_class", "PreTrainedTokenizerFast");
            w.WriteString("bos_token", Bos);
            w.WriteString("eos_token", Eos);
            w.WriteString("pad_token", Pad);
            // transformers would otherwise "clean up" spaces before punctuation when decoding.
            w.WriteBoolean("clean_up_tokenization_spaces", false);
            w.WriteEndObject();
        }
        return ms.ToArray();
    }
}
