using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace LatentLab.Text;

/// <summary>
/// Reads Hugging Face tokenizer files. Supported: BPE (byte-level as in Qwen2/Qwen3/Llama 3, and
/// SentencePiece-style with byte fallback as in Gemma/Llama 2) and WordLevel models; normalizers NFC/NFD/NFKC/NFKD,
/// Lowercase, Replace, Prepend, Strip, Sequence; pre-tokenizers Split, ByteLevel, Metaspace, Digits, Sequence;
/// post-processors TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence; decoders ByteLevel,
/// Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence. Anything else is an error naming the file and the
/// component, never a silent fallback. Files may be gzip-compressed (".json.gz").
/// </summary>
public static class TokenizerLoader
{
    static readonly string[] TokenizerFileNames = ["tokenizer.json", "tokenizer.json.gz"];
    static readonly string[] ConfigFileNames = ["tokenizer_config.json", "tokenizer_config.json.gz"];

    // transformers' Llama/Gemma fast tokenizers rebuild the post-processor from add_bos_token/add_eos_token
    // (defaults true/false); every other class uses the tokenizer.json post-processor as it is.
    static readonly HashSet<string> ClassesWithBosEosFlags = new(StringComparer.Ordinal)
    {
        "LlamaTokenizer", "LlamaTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast",
        "CodeLlamaTokenizer", "CodeLlamaTokenizerFast",
    };

    /// <summary>
    /// Loads a tokenizer.json (or .json.gz). A tokenizer_config.json(.gz) beside it, when present, supplies
    /// bos/eos/pad and add_bos_token/add_eos_token as transformers reads them. Without one, bos/eos come from the
    /// post-processor template and pad from a special token named &lt;pad&gt; or [PAD], if any.
    /// </summary>
    public static ITokenizer Load(string tokenizerJsonPath)
    {
        ArgumentNullException.ThrowIfNull(tokenizerJsonPath);
        if (Directory.Exists(tokenizerJsonPath))
            return TryLoadFromDirectory(tokenizerJsonPath)
                   ?? throw new FileNotFoundException($"{tokenizerJsonPath}: no tokenizer.json or tokenizer.json.gz in this folder.");
        var bytes = ReadMaybeGzip(tokenizerJsonPath);
        var dir = Path.GetDirectoryName(Path.GetFullPath(tokenizerJsonPath))!;
        var configPath = ConfigFileNames.Select(n => Path.Combine(dir, n)).FirstOrDefault(File.Exists);
        return Parse(bytes, tokenizerJsonPath, configPath is null ? null : ReadMaybeGzip(configPath), configPath);
    }

    /// <summary>Loads tokenizer.json(.gz) from a model folder, or returns null when the folder has none.</summary>
    public static ITokenizer? TryLoadFromDirectory(string modelDir)
    {
        ArgumentNullException.ThrowIfNull(modelDir);
        if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"{modelDir}: model folder not found.");
        var path = TokenizerFileNames.Select(n => Path.Combine(modelDir, n)).FirstOrDefault(File.Exists);
        return path is null ? null : Load(path);
    }

    /// <summary>Reads a file, decompressing it when its name ends in ".gz".</summary>
    internal static byte[] ReadMaybeGzip(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: file not found.", path);
        if (!path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)) return File.ReadAllBytes(path);
        using var file = File.OpenRead(path);
        using var gz = new GZipStream(file, CompressionMode.Decompress);
        using var ms = new MemoryStream();
        try { gz.CopyTo(ms); }
        catch (InvalidDataException e) { throw new InvalidDataException($"{path}: not a valid gzip file: {e.Message}", e); }
        return ms.ToArray();
    }

    /// <summary>Parses tokenizer.json content; <paramref name="source"/> names it in error messages.</summary>
    internal static HfTokenizer Parse(byte[] json, string source, byte[]? configJson = null, string? configSource = null)
    {
        var hash = Convert.ToHexStringLower(SHA256.HashData(json));
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not valid JSON: {e.Message}", e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var modelJson))
                throw new InvalidDataException($"{source}: not a Hugging Face tokenizer.json (no \"model\").");

            var added = ParseAddedTokens(root, source);
            var normalizer = Optional(root, "normalizer") is { } n ? ParseNormalizer(n, source, "normalizer") : null;
            var preTokenizer = Optional(root, "pre_tokenizer") is { } p ? ParsePreTokenizer(p, source, "pre_tokenizer") : null;
            var decoder = Optional(root, "decoder") is { } d ? ParseDecoder(d, source, "decoder") : null;
            var model = ParseModel(modelJson, source);

            int? Resolve(string token) =>
                added.FirstOrDefault(t => t.Content == token)?.Id ?? (model.Vocab.TryGetValue(token, out var id) ? id : null);

            var post = Optional(root, "post_processor") is { } pp ? ParsePostProcessor(pp, source, "post_processor", Resolve) : PostProcessor.None;

            int? bos = post.Prefix.Length > 0 ? post.Prefix[0] : null;
            int? eos = post.Suffix.Length > 0 ? post.Suffix[^1] : null;
            int? pad = added.FirstOrDefault(t => t.Special && t.Content is "<pad>" or "[PAD]")?.Id;

            if (configJson is not null)
            {
                var cs = configSource!;
                using var config = ParseJson(configJson, cs);
                var c = config.RootElement;
                int? Named(string key)
                {
                    var name = TokenName(c, key, cs);
                    if (name is null) return null;
                    return Resolve(name) ?? throw new InvalidDataException($"{cs}: {key} '{name}' is not a token of {source}.");
                }
                bos = c.TryGetProperty("bos_token", out _) ? Named("bos_token") : bos;
                eos = c.TryGetProperty("eos_token", out _) ? Named("eos_token") : eos;
                pad = c.TryGetProperty("pad_token", out _) ? Named("pad_token") : pad;

                var cls = c.TryGetProperty("tokenizer_class", out var clsJson) && clsJson.ValueKind == JsonValueKind.String ? clsJson.GetString()! : "";
                if (ClassesWithBosEosFlags.Contains(cls))
                {
                    bool addBos = Bool(c, "add_bos_token", true, cs), addEos = Bool(c, "add_eos_token", false, cs);
                    if (addBos && bos is null) throw new InvalidDataException($"{cs}: add_bos_token is set but bos_token is not.");
                    if (addEos && eos is null) throw new InvalidDataException($"{cs}: add_eos_token is set but eos_token is not.");
                    post = new PostProcessor(addBos ? [bos!.Value] : [], addEos ? [eos!.Value] : []);
                }
            }

            return new HfTokenizer(model, normalizer, preTokenizer, decoder, post, added, bos, eos, pad, hash, source);
        }
    }

    static JsonDocument ParseJson(byte[] json, string source)
    {
        try { return JsonDocument.Parse(json); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not valid JSON: {e.Message}", e); }
    }

    /// <summary>A token named in tokenizer_config.json: a string, an AddedToken object with "content", or null.</summary>
    static string? TokenName(JsonElement config, string key, string source)
    {
        if (!config.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String)
            return content.GetString();
        throw new InvalidDataException($"{source}: {key} must be a string, an object with \"content\", or null.");
    }

    static bool Bool(JsonElement obj, string key, bool fallback, string source)
    {
        if (!obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidDataException($"{source}: {key} must be true or false."),
        };
    }

    static JsonElement? Optional(JsonElement obj, string key) =>
        obj.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    static string Str(JsonElement obj, string key, string source, string where)
    {
        if (obj.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String) return v.GetString()!;
        throw new InvalidDataException($"{source}: {where}.{key} is missing or not a string.");
    }

    static string? OptStr(JsonElement obj, string key, string source, string where)
    {
        if (!obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        throw new InvalidDataException($"{source}: {where}.{key} is not a string.");
    }

    static string TypeOf(JsonElement obj, string source, string where)
    {
        if (obj.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{source}: {where} is not an object.");
        return Str(obj, "type", source, where);
    }

    static IEnumerable<(JsonElement Item, string Where)> Items(JsonElement obj, string key, string source, string where)
    {
        if (!obj.TryGetProperty(key, out var arr) || arr.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{source}: {where}.{key} is missing or not an array.");
        int i = 0;
        foreach (var item in arr.EnumerateArray()) yield return (item, $"{where}.{key}[{i++}]");
    }

    static TextPattern ParsePattern(JsonElement obj, string source, string where)
    {
        if (!obj.TryGetProperty("pattern", out var p) || p.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{source}: {where}.pattern is missing.");
        if (p.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String) return TextPattern.Literal(s.GetString()!);
        if (p.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String)
        {
            try { return TextPattern.FromRegex(r.GetString()!); }
            catch (ArgumentException e) { throw new InvalidDataException($"{source}: {where}.pattern regex is not accepted by .NET: {e.Message}", e); }
        }
        throw new InvalidDataException($"{source}: {where}.pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}.");
    }

    static char SingleChar(string value, string source, string where) =>
        value.Length == 1 ? value[0] : throw new InvalidDataException($"{source}: {where} must be a single character, got '{value}'.");

    static List<AddedToken> ParseAddedTokens(JsonElement root, string source)
    {
        var list = new List<AddedToken>();
        if (Optional(root, "added_tokens") is null) return list;
        foreach (var (t, where) in Items(root, "added_tokens", source, ""))
        {
            if (!t.TryGetProperty("id", out var idJson) || !idJson.TryGetInt32(out var id) || id < 0)
                throw new InvalidDataException($"{source}: {where}.id is missing or invalid.");
            list.Add(new AddedToken(id, Str(t, "content", source, where),
                Bool(t, "special", false, source), Bool(t, "single_word", false, source),
                Bool(t, "lstrip", false, source), Bool(t, "rstrip", false, source), Bool(t, "normalized", false, source)));
        }
        return list;
    }

    static ITokenModel ParseModel(JsonElement m, string source)
    {
        if (m.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{source}: model is not an object.");
        // Old files may omit model.type for BPE; transformers treats a model with "merges" as BPE.
        var type = OptStr(m, "type", source, "model") ?? (m.TryGetProperty("merges", out _) ? "BPE" : null);
        if (type is not ("BPE" or "WordLevel"))
            throw new InvalidDataException($"{source}: unsupported model type '{type ?? "(none)"}' (supported: BPE, WordLevel).");
        var vocab = ParseVocab(m, source);
        switch (type)
        {
            case "BPE":
            {
                if (Optional(m, "dropout") is { } dropout && dropout.GetDouble() > 0)
                    throw new InvalidDataException($"{source}: model.dropout > 0 (BPE-dropout) is not supported.");
                foreach (var key in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
                    if (!string.IsNullOrEmpty(OptStr(m, key, source, "model")))
                        throw new InvalidDataException($"{source}: model.{key} is not supported.");
                var merges = new List<(string, string)>();
                if (Optional(m, "merges") is { } mergesJson)
                {
                    int i = 0;
                    foreach (var e in mergesJson.EnumerateArray())
                    {
                        if (e.ValueKind == JsonValueKind.String)
                        {
                            // Older files: "a b" strings.
                            var s = e.GetString()!;
                            int sp = s.IndexOf(' ');
                            if (sp <= 0 || sp != s.LastIndexOf(' ') || sp == s.Length - 1)
                                throw new InvalidDataException($"{source}: model.merges[{i}] '{s}' is not 'a b'.");
                            merges.Add((s[..sp], s[(sp + 1)..]));
                        }
                        else if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2)
                            merges.Add((e[0].GetString()!, e[1].GetString()!));
                        else throw new InvalidDataException($"{source}: model.merges[{i}] is neither \"a b\" nor [a, b].");
                        i++;
                    }
                }
                return new BpeModel(vocab, merges, OptStr(m, "unk_token", source, "model"),
                    Bool(m, "fuse_unk", false, source), Bool(m, "byte_fallback", false, source),
                    Bool(m, "ignore_merges", false, source), source);
            }
            case "WordLevel":
                return new WordLevelModel(vocab, OptStr(m, "unk_token", source, "model"), source);
            default:
                throw new InvalidDataException($"{source}: unsupported model type '{type ?? "(none)"}' (supported: BPE, WordLevel).");
        }
    }

    static Dictionary<string, int> ParseVocab(JsonElement m, string source)
    {
        if (!m.TryGetProperty("vocab", out var v) || v.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{source}: model.vocab is missing or not an object.");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in v.EnumerateObject())
        {
            if (!p.Value.TryGetInt32(out var id) || id < 0)
                throw new InvalidDataException($"{source}: model.vocab['{p.Name}'] is not a non-negative integer.");
            vocab[p.Name] = id;
        }
        return vocab;
    }

    static ITextNormalizer ParseNormalizer(JsonElement n, string source, string where)
    {
        var type = TypeOf(n, source, where);
        return type switch
        {
            "NFC" => new UnicodeNormalizer(NormalizationForm.FormC),
            "NFD" => new UnicodeNormalizer(NormalizationForm.FormD),
            "NFKC" => new UnicodeNormalizer(NormalizationForm.FormKC),
            "NFKD" => new UnicodeNormalizer(NormalizationForm.FormKD),
            "Lowercase" => new LowercaseNormalizer(),
            "Replace" => new ReplaceNormalizer(ParsePattern(n, source, where), Str(n, "content", source, where)),
            "Prepend" => new PrependNormalizer(Str(n, "prepend", source, where)),
            "Strip" => new StripNormalizer(Bool(n, "strip_left", false, source), Bool(n, "strip_right", false, source)),
            "Sequence" => new SequenceNormalizer(Items(n, "normalizers", source, where).Select(x => ParseNormalizer(x.Item, source, x.Where)).ToList()),
            _ => throw new InvalidDataException($"{source}: unsupported normalizer type '{type}' at {where} (supported: NFC, NFD, NFKC, NFKD, Lowercase, Replace, Prepend, Strip, Sequence)."),
        };
    }

    static IPreTokenizerStep ParsePreTokenizer(JsonElement p, string source, string where)
    {
        var type = TypeOf(p, source, where);
        switch (type)
        {
            case "Split":
            {
                var behavior = Str(p, "behavior", source, where) switch
                {
                    "Removed" => SplitBehavior.Removed,
                    "Isolated" => SplitBehavior.Isolated,
                    "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
                    "MergedWithNext" => SplitBehavior.MergedWithNext,
                    "Contiguous" => SplitBehavior.Contiguous,
                    var b => throw new InvalidDataException($"{source}: unsupported split behavior '{b}' at {where}."),
                };
                return new SplitPreTokenizer(ParsePattern(p, source, where), behavior, Bool(p, "invert", false, source));
            }
            case "ByteLevel":
                return new ByteLevelPreTokenizer(Bool(p, "add_prefix_space", false, source), Bool(p, "use_regex", true, source));
            case "Metaspace":
                return new MetaspacePreTokenizer(SingleChar(Str(p, "replacement", source, where), source, where + ".replacement"),
                    ParsePrependScheme(p, source, where), Bool(p, "split", true, source));
            case "Digits":
                return new DigitsPreTokenizer(Bool(p, "individual_digits", false, source));
            case "Sequence":
                return new SequencePreTokenizer(Items(p, "pretokenizers", source, where).Select(x => ParsePreTokenizer(x.Item, source, x.Where)).ToList());
            default:
                throw new InvalidDataException($"{source}: unsupported pre_tokenizer type '{type}' at {where} (supported: Split, ByteLevel, Metaspace, Digits, Sequence).");
        }
    }

    static PrependScheme ParsePrependScheme(JsonElement p, string source, string where)
    {
        var scheme = OptStr(p, "prepend_scheme", source, where);
        return scheme switch
        {
            "always" => PrependScheme.Always,
            "first" => PrependScheme.First,
            "never" => PrependScheme.Never,
            // Files written before prepend_scheme existed carry add_prefix_space instead.
            null => Bool(p, "add_prefix_space", true, source) ? PrependScheme.Always : PrependScheme.Never,
            _ => throw new InvalidDataException($"{source}: unsupported prepend_scheme '{scheme}' at {where}."),
        };
    }

    static IDecoderStep ParseDecoder(JsonElement d, string source, string where)
    {
        var type = TypeOf(d, source, where);
        return type switch
        {
            "ByteLevel" => new ByteLevelDecoder(),
            "Replace" => new ReplaceDecoder(ParsePattern(d, source, where), Str(d, "content", source, where)),
            "ByteFallback" => new ByteFallbackDecoder(),
            "Fuse" => new FuseDecoder(),
            "Strip" => new StripDecoder(SingleChar(Str(d, "content", source, where), source, where + ".content"),
                Int(d, "start", source, where), Int(d, "stop", source, where)),
            "Metaspace" => new MetaspaceDecoder(SingleChar(Str(d, "replacement", source, where), source, where + ".replacement"),
                ParsePrependScheme(d, source, where)),
            "Sequence" => new SequenceDecoder(Items(d, "decoders", source, where).Select(x => ParseDecoder(x.Item, source, x.Where)).ToList()),
            _ => throw new InvalidDataException($"{source}: unsupported decoder type '{type}' at {where} (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)."),
        };
    }

    static int Int(JsonElement obj, string key, string source, string where) =>
        obj.TryGetProperty(key, out var v) && v.TryGetInt32(out var i) && i >= 0
            ? i : throw new InvalidDataException($"{source}: {where}.{key} is missing or not a non-negative integer.");

    static PostProcessor ParsePostProcessor(JsonElement p, string source, string where, Func<string, int?> resolve)
    {
        var type = TypeOf(p, source, where);
        switch (type)
        {
            case "ByteLevel":
                return PostProcessor.None;   // only trims offsets; ids are unchanged
            case "Sequence":
                return Items(p, "processors", source, where)
                    .Select(x => ParsePostProcessor(x.Item, source, x.Where, resolve))
                    .Aggregate(PostProcessor.None, (acc, next) => acc.Then(next));
            case "BertProcessing":
            case "RobertaProcessing":
                return new PostProcessor([SpecialPair(p, "cls", source, where)], [SpecialPair(p, "sep", source, where)]);
            case "TemplateProcessing":
            {
                var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
                if (p.TryGetProperty("special_tokens", out var st) && st.ValueKind == JsonValueKind.Object)
                    foreach (var s in st.EnumerateObject())
                        specials[s.Name] = s.Value.TryGetProperty("ids", out var ids) && ids.ValueKind == JsonValueKind.Array
                            ? ids.EnumerateArray().Select(x => x.GetInt32()).ToArray()
                            : throw new InvalidDataException($"{source}: {where}.special_tokens['{s.Name}'].ids is missing.");
                var prefix = new List<int>();
                var suffix = new List<int>();
                bool seenSequence = false;
                foreach (var (item, itemWhere) in Items(p, "single", source, where))
                {
                    if (item.TryGetProperty("Sequence", out _)) { seenSequence = true; continue; }
                    if (!item.TryGetProperty("SpecialToken", out var tok))
                        throw new InvalidDataException($"{source}: {itemWhere} is neither Sequence nor SpecialToken.");
                    var name = Str(tok, "id", source, itemWhere + ".SpecialToken");
                    var tokenIds = specials.TryGetValue(name, out var known) ? known
                        : resolve(name) is int id ? [id]
                        : throw new InvalidDataException($"{source}: {itemWhere} names special token '{name}', which is not defined.");
                    (seenSequence ? suffix : prefix).AddRange(tokenIds);
                }
                return new PostProcessor(prefix.ToArray(), suffix.ToArray());
            }
            default:
                throw new InvalidDataException($"{source}: unsupported post_processor type '{type}' at {where} (supported: TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence).");
        }
    }

    static int SpecialPair(JsonElement p, string key, string source, string where)
    {
        if (p.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Array && v.GetArrayLength() == 2 && v[1].TryGetInt32(out var id))
            return id;
        throw new InvalidDataException($"{source}: {where}.{key} must be [token, id].");
    }
}
