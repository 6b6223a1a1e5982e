using System.Diagnostics;
using System.Text;
using System.Text.Json;
using LatentLab.Text;

namespace LatentLab.Tests;

[Collection(RealTokenizerCollection.Name)]
public sealed class TokenizerReferenceTests(RealTokenizers tokenizers)
{
    public static IEnumerable<object[]> QwenCases => ReferenceIds.Indexes("qwen3");
    public static IEnumerable<object[]> GemmaCases => ReferenceIds.Indexes("gemma3");

    [Theory, MemberData(nameof(QwenCases))]
    public void Qwen3MatchesReference(int index) => CheckCase("qwen3", index);

    [Theory, MemberData(nameof(GemmaCases))]
    public void Gemma3MatchesReference(int index) => CheckCase("gemma3", index);

    void CheckCase(string model, int index)
    {
        var c = ReferenceIds.For(model)[index];
        var tok = tokenizers.For(model);
        Assert.Equal(c.Ids, tok.Encode(c.Text));
        Assert.Equal(c.IdsAddSpecial, tok.Encode(c.Text, addSpecialTokens: true));
        Assert.Equal(c.Text, tok.Decode(c.Ids));
    }

    [Theory]
    [InlineData("qwen3")]
    [InlineData("gemma3")]
    public void FuzzCasesMatchTransformersJs(string model)
    {
        var tok = tokenizers.For(model);
        var cases = ReferenceIds.FuzzFor(model);
        Assert.Equal(400, cases.Count);
        foreach (var c in cases)
        {
            Assert.True(c.Ids.SequenceEqual(tok.Encode(c.Text)), $"{model}: ids differ for {JsonSerializer.Serialize(c.Text)}");
            Assert.True(c.IdsAddSpecial.SequenceEqual(tok.Encode(c.Text, addSpecialTokens: true)), $"{model}: ids with specials differ for {JsonSerializer.Serialize(c.Text)}");
            // Qwen3 normalises to NFC; Gemma decodes a literal '▁' as a space. Everything else comes back as it was.
            var expected = model == "qwen3" ? c.Text.Normalize(NormalizationForm.FormC) : c.Text.Replace('\u2581', ' ');
            Assert.Equal(expected, tok.Decode(c.Ids));
        }
    }

    [Fact]
    public void ReferenceFileHasBothTokenizers()
    {
        Assert.True(ReferenceIds.For("qwen3").Count >= 10);
        Assert.True(ReferenceIds.For("gemma3").Count >= 10);
    }
}

[Collection(RealTokenizerCollection.Name)]
public sealed class TokenizerRealFileTests(RealTokenizers tokenizers)
{
    [Fact]
    public void Qwen3KnownIdsAndSizes()
    {
        var q = tokenizers.Qwen3;
        Assert.Equal(151669, q.VocabSize);
        Assert.Equal(151643, q.TokenToId("<|endoftext|>"));
        Assert.Equal(151644, q.TokenToId("<|im_start|>"));
        Assert.Equal(151645, q.TokenToId("<|im_end|>"));
        Assert.Equal(151667, q.TokenToId("<think>"));
        Assert.Equal(151668, q.TokenToId("</think>"));
        Assert.Equal("</think>", q.IdToToken(151668));
        Assert.Equal("Ġthe", q.IdToToken(279));
        Assert.Null(q.IdToToken(151669));
        // From tokenizer_config.json: no bos, eos <|im_end|>, pad <|endoftext|>.
        Assert.Null(q.BosId);
        Assert.Equal(151645, q.EosId);
        Assert.Equal(151643, q.PadId);
    }

    [Fact]
    public void Gemma3KnownIdsAndSizes()
    {
        var g = tokenizers.Gemma3;
        Assert.Equal(262145, g.VocabSize);
        Assert.Equal(0, g.TokenToId("<pad>"));
        Assert.Equal(2, g.TokenToId("<bos>"));
        Assert.Equal(105, g.TokenToId("<start_of_turn>"));
        Assert.Equal(106, g.TokenToId("<end_of_turn>"));
        Assert.Equal(238, g.TokenToId("<0x00>"));
        Assert.Equal(493, g.TokenToId("<0xFF>"));
        Assert.Equal(262144, g.TokenToId("<image_soft_token>"));
        Assert.Equal(2, g.BosId);
        Assert.Equal(106, g.EosId);   // tokenizer_config.json: eos_token is <end_of_turn>
        Assert.Equal(0, g.PadId);
    }

    [Fact]
    public void SkipSpecialDropsOnlySpecialTokens()
    {
        var q = tokenizers.Qwen3;
        var ids = q.Encode("<|im_start|>user\nhi<|im_end|><think>x</think>");
        Assert.Equal("user\nhi<think>x</think>", q.Decode(ids, skipSpecialTokens: true));   // <think> is added, not special

        var g = tokenizers.Gemma3;
        var gids = g.Encode("<start_of_turn>model\nok<end_of_turn>", addSpecialTokens: true);
        Assert.Equal(2, gids[0]);
        Assert.Equal("<bos><start_of_turn>model\nok<end_of_turn>", g.Decode(gids));
        Assert.Equal("model\nok", g.Decode(gids, skipSpecialTokens: true));
    }

    [Fact]
    public void GemmaByteFallbackRoundTrips()
    {
        var g = tokenizers.Gemma3;
        // Rare characters that need <0xNN> tokens in Gemma's vocabulary, next to ordinary text.
        foreach (var text in new[] { "a\U0001F9EC b", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ok", "\u0007bell", "x\U000E0041y" })
        {
            var ids = g.Encode(text);
            Assert.Equal(text, g.Decode(ids));
        }
        var bell = g.Encode("\u0007");
        Assert.Equal([g.TokenToId("<0x07>")!.Value], bell);
    }

    [Theory]
    [InlineData("qwen3")]
    [InlineData("gemma3")]
    public void RoundTripsMixedText(string model)
    {
        var tok = tokenizers.For(model);
        var text = "Solve: 37 * 12 = ? <think>\nFirst 37*10 = 370, then 37*2 = 74; 370+74 = 444.\n</think>\n\n**444**\n"
                   + "Ünïcödé — 中文 テスト 😀\t\ttabs  and   spaces\r\n</s><unk>";
        Assert.Equal(text, tok.Decode(tok.Encode(text)));
    }

    [Theory]
    [InlineData("qwen3")]
    [InlineData("gemma3")]
    public void EncodingIsSafeAcrossThreads(string model)
    {
        // One tokenizer is shared by data loaders; Microsoft.ML.Tokenizers keeps a word cache inside.
        var tok = tokenizers.For(model);
        var cases = ReferenceIds.FuzzFor(model);
        var failures = 0;
        Parallel.For(0, 4, worker =>
        {
            for (int i = worker; i < cases.Count; i += 2)
                if (!cases[i].Ids.SequenceEqual(tok.Encode(cases[i].Text))) Interlocked.Increment(ref failures);
        });
        Assert.Equal(0, failures);
    }

    [Theory]
    [InlineData("qwen3")]
    [InlineData("gemma3")]
    public void HashIsSha256OfTheDecompressedJson(string model)
    {
        using var gz = new System.IO.Compression.GZipStream(File.OpenRead(Path.Combine(RealTokenizers.Dir, model, "tokenizer.json.gz")),
            System.IO.Compression.CompressionMode.Decompress);
        using var ms = new MemoryStream();
        gz.CopyTo(ms);
        var expected = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(ms.ToArray()));
        Assert.Equal(expected, tokenizers.For(model).Hash);
        Assert.NotEqual(tokenizers.Qwen3.Hash, tokenizers.Gemma3.Hash);
    }

    [Theory]
    [InlineData("qwen3")]
    [InlineData("gemma3")]
    public void EncodingSeveralKilobytesTakesMilliseconds(string model)
    {
        var tok = tokenizers.For(model);
        var para = "The quick brown fox jumps over the lazy dog; 12345 + 678 = 13023. Ünïcödé — 日本語 😀\n";
        var text = string.Concat(Enumerable.Repeat(para, 80)) + string.Concat(Enumerable.Range(0, 400).Select(i => $"w{i * 7919 % 10007} "));
        Assert.True(text.Length > 8000);
        tok.Encode(text);   // warm-up (JIT, regex)
        var sw = Stopwatch.StartNew();
        var ids = tok.Encode(text);
        sw.Stop();
        Assert.Equal(text, tok.Decode(ids));
        // Milliseconds in practice; the bound leaves room for a busy shared machine.
        Assert.True(sw.ElapsedMilliseconds < 500, $"{model}: encoding {text.Length} chars took {sw.ElapsedMilliseconds} ms");
    }
}
