using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.Text;

namespace LatentLab.Tests;

/// <summary>Small hand-made tokenizer.json files, each exercising one part of the pipeline with ids worked out by hand.</summary>
public sealed class TokenizerLoaderTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-tok").FullName;

    int _count;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string NewDir() => Directory.CreateDirectory(Path.Combine(_dir, $"t{_count++}")).FullName;

    // Llama 2 style: "▁" prefix via Prepend, spaces replaced, BPE with byte fallback, SentencePiece decoder chain.
    static JsonObject SentencePieceStyle(bool fuseUnk = true) => new()
    {
        ["version"] = "1.0",
        ["added_tokens"] = new JsonArray(Added(0, "<unk>"), Added(1, "<s>"), Added(2, "</s>")),
        ["normalizer"] = JsonNode.Parse("""{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]}"""),
        ["pre_tokenizer"] = null,
        ["post_processor"] = JsonNode.Parse("""{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}}"""),
        ["decoder"] = JsonNode.Parse("""{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}"""),
        ["model"] = new JsonObject
        {
            ["type"] = "BPE", ["unk_token"] = "<unk>", ["fuse_unk"] = fuseUnk, ["byte_fallback"] = true,
            ["vocab"] = Vocab("<unk>", "<s>", "</s>", "<0x21>", "<0xC3>", "<0xA9>", "▁", "a", "b", "c", "ab", "▁ab"),
            ["merges"] = JsonNode.Parse("""[["a","b"],["▁","ab"]]"""),
        },
    };

    static JsonObject Added(int id, string content, bool special = true) => new()
    {
        ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
        ["normalized"] = false, ["special"] = special,
    };

    static JsonObject Vocab(params string[] tokens)
    {
        var o = new JsonObject();
        for (int i = 0; i < tokens.Length; i++) o[tokens[i]] = i;
        return o;
    }

    string Write(JsonObject json, string name = "tokenizer.json", JsonObject? config = null)
    {
        var dir = NewDir();
        var path = Path.Combine(dir, name);
        File.WriteAllText(path, json.ToJsonString());
        if (config is not null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
        return path;
    }

    ITokenizer Load(JsonObject json, JsonObject? config = null) => TokenizerLoader.Load(Write(json, config: config));

    [Fact]
    public void SentencePieceStyleWithByteFallback()
    {
        var tok = Load(SentencePieceStyle());
        // "ab c!é" -> "▁ab▁c!é": merges give ▁ab, then ▁ and c; '!' and 'é' are not tokens, so they become bytes.
        int[] expected = [11, 6, 9, 3, 4, 5];
        Assert.Equal(expected, tok.Encode("ab c!é"));
        Assert.Equal([1, .. expected], tok.Encode("ab c!é", addSpecialTokens: true));
        Assert.Equal("ab c!é", tok.Decode(expected));   // Strip removes the dummy prefix's space
        Assert.Equal(1, tok.BosId);
        Assert.Equal("ab c!é", tok.Decode(tok.Encode("ab c!é", addSpecialTokens: true), skipSpecialTokens: true));
    }

    [Fact]
    public void UnknownCharactersFuseIntoOneUnk()
    {
        // 'z' has no byte token either, so it falls back to <unk>; consecutive ones fuse when fuse_unk is set.
        Assert.Equal([6, 0, 6, 7], Load(SentencePieceStyle(fuseUnk: true)).Encode("zz a"));
        Assert.Equal([6, 0, 0, 6, 7], Load(SentencePieceStyle(fuseUnk: false)).Encode("zz a"));
    }

    [Fact]
    public void PrependAppliesToEachPieceBetweenAddedTokens()
    {
        // As in transformers' legacy Llama tokenizer: the normaliser sees "ab" twice, each gets its "▁".
        Assert.Equal([11, 2, 11], Load(SentencePieceStyle()).Encode("ab</s>ab"));
    }

    [Theory]
    [InlineData("first", new[] { 11, 2, 10 })]
    [InlineData("always", new[] { 11, 2, 11 })]
    [InlineData("never", new[] { 10, 2, 10 })]
    public void MetaspacePrependScheme(string scheme, int[] expected)
    {
        var json = SentencePieceStyle();
        json["normalizer"] = null;
        json["pre_tokenizer"] = JsonNode.Parse($$"""{"type":"Metaspace","replacement":"▁","prepend_scheme":"{{scheme}}","split":false}""");
        json["decoder"] = JsonNode.Parse($$"""{"type":"Metaspace","replacement":"▁","prepend_scheme":"{{scheme}}","split":false}""");
        var tok = Load(json);
        Assert.Equal(expected, tok.Encode("ab</s>ab"));
        if (scheme == "first") Assert.Equal("ab</s>ab", tok.Decode(expected));
    }

    // Llama 3 style: regex split, byte-level mapping, ignore_merges.
    static JsonObject ByteLevelStyle(bool ignoreMerges) => new()
    {
        ["added_tokens"] = new JsonArray(Added(7, "<|begin_of_text|>")),
        ["normalizer"] = null,
        ["pre_tokenizer"] = JsonNode.Parse("""{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\s?\\w+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]}"""),
        ["post_processor"] = JsonNode.Parse("""{"type":"Sequence","processors":[{"type":"ByteLevel","trim_offsets":false},{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<|begin_of_text|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[],"special_tokens":{"<|begin_of_text|>":{"id":"<|begin_of_text|>","ids":[7],"tokens":["<|begin_of_text|>"]}}}]}"""),
        ["decoder"] = JsonNode.Parse("""{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}"""),
        ["model"] = new JsonObject
        {
            ["type"] = "BPE", ["unk_token"] = null, ["byte_fallback"] = false, ["ignore_merges"] = ignoreMerges,
            ["vocab"] = Vocab("a", "b", "c", "Ġ", "ab", "abc", "Ġa"),
            ["merges"] = JsonNode.Parse("""["a b","Ġ a"]"""),   // the older "a b" string form
        },
    };

    [Fact]
    public void IgnoreMergesTakesWholeWordsFromTheVocabulary()
    {
        // "abc" is in the vocabulary but no merge builds it; " abc" is not, so it goes through the merges.
        Assert.Equal([5, 3, 4, 2], Load(ByteLevelStyle(ignoreMerges: true)).Encode("abc abc"));
        Assert.Equal([4, 2, 3, 4, 2], Load(ByteLevelStyle(ignoreMerges: false)).Encode("abc abc"));
        var tok = Load(ByteLevelStyle(ignoreMerges: true));
        Assert.Equal([7, 5], tok.Encode("abc", addSpecialTokens: true));
        Assert.Equal("abc abc", tok.Decode([5, 3, 4, 2]));
        Assert.Equal(7, tok.BosId);
    }

    [Fact]
    public void CharacterWithoutTokenIsAClearError()
    {
        var path = Write(ByteLevelStyle(ignoreMerges: false));
        var e = Assert.Throws<ArgumentException>(() => TokenizerLoader.Load(path).Encode("abd"));
        Assert.Contains(path, e.Message);
        Assert.Contains("U+0064", e.Message);
    }

    [Fact]
    public void WordLevelWithUnknownToken()
    {
        var json = new JsonObject
        {
            ["added_tokens"] = new JsonArray(),
            ["pre_tokenizer"] = JsonNode.Parse("""{"type":"Split","pattern":{"String":" "},"behavior":"Removed","invert":false}"""),
            ["model"] = new JsonObject { ["type"] = "WordLevel", ["vocab"] = Vocab("[UNK]", "hello", "world"), ["unk_token"] = "[UNK]" },
        };
        var tok = Load(json);
        Assert.Equal([1, 0, 2], tok.Encode("hello there world"));
        Assert.Equal("hello [UNK] world", tok.Decode([1, 0, 2]));   // no decoder: tokens joined with spaces
    }

    [Theory]
    [InlineData("model", """{"type":"Unigram","vocab":[["a",0.0]]}""", "Unigram")]
    [InlineData("normalizer", """{"type":"Precompiled","precompiled_charsmap":""}""", "Precompiled")]
    [InlineData("pre_tokenizer", """{"type":"BertPreTokenizer"}""", "BertPreTokenizer")]
    [InlineData("decoder", """{"type":"WordPiece","prefix":"##","cleanup":true}""", "WordPiece")]
    [InlineData("post_processor", """{"type":"Mystery"}""", "Mystery")]
    [InlineData("pre_tokenizer", """{"type":"Sequence","pretokenizers":[{"type":"Whitespace"}]}""", "Whitespace")]
    public void UnsupportedComponentIsAnErrorNamingFileAndComponent(string key, string component, string name)
    {
        var json = SentencePieceStyle();
        json[key] = JsonNode.Parse(component);
        var path = Write(json);
        var e = Assert.Throws<InvalidDataException>(() => TokenizerLoader.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(name, e.Message);
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public void MalformedFilesAreClearErrors()
    {
        var notJson = Path.Combine(_dir, "bad.json");
        File.WriteAllText(notJson, "{ not json");
        Assert.Contains(notJson, Assert.Throws<InvalidDataException>(() => TokenizerLoader.Load(notJson)).Message);

        var noModel = Path.Combine(_dir, "nomodel.json");
        File.WriteAllText(noModel, "{}");
        Assert.Contains("model", Assert.Throws<InvalidDataException>(() => TokenizerLoader.Load(noModel)).Message);

        var badMerge = SentencePieceStyle();
        badMerge["model"]!["merges"] = JsonNode.Parse("""[["a","x"]]""");
        var badMergePath = Write(badMerge);
        Assert.Contains(badMergePath, Assert.Throws<InvalidDataException>(() => TokenizerLoader.Load(badMergePath)).Message);

        Assert.Throws<FileNotFoundException>(() => TokenizerLoader.Load(Path.Combine(_dir, "missing.json")));
    }

    [Fact]
    public void GzipAndDirectoryLoading()
    {
        var json = SentencePieceStyle();
        var dir = NewDir();
        Assert.Null(TokenizerLoader.TryLoadFromDirectory(dir));
        var bytes = System.Text.Encoding.UTF8.GetBytes(json.ToJsonString());
        using (var f = File.Create(Path.Combine(dir, "tokenizer.json.gz")))
        using (var gz = new System.IO.Compression.GZipStream(f, System.IO.Compression.CompressionLevel.Fastest))
            gz.Write(bytes);
        var tok = TokenizerLoader.TryLoadFromDirectory(dir)!;
        Assert.Equal([11, 6, 9, 3, 4, 5], tok.Encode("ab c!é"));
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes)), tok.Hash);
        Assert.Throws<DirectoryNotFoundException>(() => TokenizerLoader.TryLoadFromDirectory(Path.Combine(_dir, "nope")));
    }

    [Fact]
    public void TokenizerConfigSuppliesSpecialsAndLlamaFlags()
    {
        var config = new JsonObject
        {
            ["tokenizer_class"] = "LlamaTokenizerFast",
            ["bos_token"] = new JsonObject { ["__type"] = "AddedToken", ["content"] = "<s>" },
            ["eos_token"] = "</s>",
            ["pad_token"] = null,
            ["add_bos_token"] = false,
            ["add_eos_token"] = true,
        };
        var tok = Load(SentencePieceStyle(), config);
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
        Assert.Null(tok.PadId);
        Assert.Equal([11, 2], tok.Encode("ab", addSpecialTokens: true));

        // Other classes keep the file's own post-processor.
        config["tokenizer_class"] = "PreTrainedTokenizerFast";
        Assert.Equal([1, 11], Load(SentencePieceStyle(), config).Encode("ab", addSpecialTokens: true));

        config["eos_token"] = "<nope>";
        var path = Write(SentencePieceStyle(), config: config);
        var e = Assert.Throws<InvalidDataException>(() => TokenizerLoader.Load(path));
        Assert.Contains("tokenizer_config.json", e.Message);
        Assert.Contains("<nope>", e.Message);
    }

    [Theory]
    [InlineData("Removed", "the|final|countdown")]
    [InlineData("Isolated", "the|-|final|-|-|countdown")]
    [InlineData("MergedWithPrevious", "the-|final-|-|countdown")]
    [InlineData("MergedWithNext", "the|-final|-|-countdown")]
    [InlineData("Contiguous", "the|-|final|--|countdown")]
    public void SplitBehavioursMatchTokenizersDocumentation(string behavior, string expected)
    {
        var parts = new List<TextPiece>();
        var split = new SplitPreTokenizer(TextPattern.Literal("-"), Enum.Parse<SplitBehavior>(behavior), invert: false);
        split.Split(new TextPiece("the-final--countdown", true), parts);
        Assert.Equal(expected, string.Join("|", parts.Select(p => p.Text)));
        Assert.True(parts[0].AtStart);
        Assert.All(parts.Skip(1), p => Assert.False(p.AtStart));
    }

    [Theory]
    [InlineData(true, "a|1|2|3|b")]
    [InlineData(false, "a|123|b")]
    public void DigitsSplitsNumbers(bool individual, string expected)
    {
        var parts = new List<TextPiece>();
        new DigitsPreTokenizer(individual).Split(new TextPiece("a123b", true), parts);
        Assert.Equal(expected, string.Join("|", parts.Select(p => p.Text)));
    }

    [Fact]
    public void AddedTokenStripAndSingleWordRules()
    {
        var json = SentencePieceStyle();
        var mask = Added(12, "<mask>");
        mask["lstrip"] = true;
        mask["rstrip"] = true;
        var word = Added(13, "cc", special: false);
        word["single_word"] = true;
        ((JsonArray)json["added_tokens"]!).Add(mask);
        ((JsonArray)json["added_tokens"]!).Add(word);
        var tok = Load(json);
        // lstrip/rstrip swallow the spaces around <mask>; "cc" only counts as a whole word.
        Assert.Equal([11, 12, 11], tok.Encode("ab <mask> ab"));
        Assert.Equal([13], tok.Encode("cc"));
        Assert.DoesNotContain(13, tok.Encode("acc"));
    }
}
