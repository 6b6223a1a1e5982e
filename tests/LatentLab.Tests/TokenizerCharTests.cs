using LatentLab.Text;

namespace LatentLab.Tests;

public sealed class TokenizerCharTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-chartok").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    const string Digits = "0123456789+-*=() \n";

    [Fact]
    public void IdsAreSpecialsThenAlphabet()
    {
        var tok = CharTokenizer.Create(Digits);
        Assert.Equal(CharTokenizer.DefaultSpecials, tok.Specials);
        Assert.Equal(6 + Digits.Length, tok.VocabSize);
        Assert.Equal(0, tok.PadId);
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
        Assert.Equal(3, tok.TokenToId("<think>"));
        Assert.Equal(4, tok.TokenToId("</think>"));
        Assert.Equal(5, tok.TokenToId("<direct>"));
        Assert.Equal(6, tok.TokenToId("0"));
        Assert.Equal("9", tok.IdToToken(15));
        Assert.Null(tok.IdToToken(tok.VocabSize));
        Assert.Null(tok.TokenToId("x"));
    }

    [Fact]
    public void EncodesCharactersAndSpecials()
    {
        var tok = CharTokenizer.Create(Digits);
        var ids = tok.Encode("12<think>3</think>4<eos>");
        Assert.Equal([7, 8, 3, 9, 4, 10, 2], ids);
        Assert.Equal([1, 7, 8, 3, 9, 4, 10, 2], tok.Encode("12<think>3</think>4<eos>", addSpecialTokens: true));
        Assert.Equal("12<think>3</think>4<eos>", tok.Decode(ids));
        // pad/bos/eos are special; the reasoning markers stay.
        Assert.Equal("12<think>3</think>4", tok.Decode([1, .. ids, 0, 0], skipSpecialTokens: true));
        Assert.Equal([], tok.Encode(""));
    }

    [Fact]
    public void UnknownCharacterIsAClearError()
    {
        var tok = CharTokenizer.Create(Digits);
        var e = Assert.Throws<ArgumentException>(() => tok.Encode("12a"));
        Assert.Contains("'a'", e.Message);
        Assert.Contains("index 2", e.Message);
        // '<' is not in this alphabet, so a broken marker is an error too, not a silent split.
        Assert.Throws<ArgumentException>(() => tok.Encode("1<thin>"));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([tok.VocabSize]));
    }

    [Fact]
    public void ExtraSpecialsAndValidation()
    {
        var tok = CharTokenizer.Create("ab", ["<plan>", "<verify>"]);
        Assert.Equal(6, tok.TokenToId("<plan>"));
        Assert.Equal(7, tok.TokenToId("<verify>"));
        Assert.Equal(8, tok.TokenToId("a"));
        Assert.Equal([6, 8, 7, 9], tok.Encode("<plan>a<verify>b"));
        Assert.Equal(CharTokenizer.Create("abba").VocabSize, CharTokenizer.Create("ab").VocabSize);   // duplicates ignored

        Assert.Throws<ArgumentException>(() => CharTokenizer.Create(""));
        Assert.Throws<ArgumentException>(() => CharTokenizer.Create("ab", ["<think>"]));
        Assert.Throws<ArgumentException>(() => CharTokenizer.Create("ab", ["a"]));
        Assert.Throws<ArgumentException>(() => CharTokenizer.Create("ab", [""]));
        Assert.Throws<ArgumentException>(() => CharTokenizer.Create("a\uD83D"));
    }

    [Fact]
    public void LongestSpecialWins()
    {
        // "<think>" and a longer extra that starts with it.
        var tok = CharTokenizer.Create("ab", ["<think>!"]);
        Assert.Equal([6, 7], tok.Encode("<think>!a"));
        Assert.Equal([3, 7], tok.Encode("<think>a"));
    }

    [Fact]
    public void SavedTokenizerLoadsBackIdentically()
    {
        var alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 .,:;!?+-*/=()<>\"'\\\n\t→é";
        var tok = CharTokenizer.Create(alphabet, ["<answer>"]);
        tok.Save(_dir);
        Assert.True(File.Exists(Path.Combine(_dir, "tokenizer.json")));
        Assert.True(File.Exists(Path.Combine(_dir, "tokenizer_config.json")));

        var loaded = TokenizerLoader.TryLoadFromDirectory(_dir)!;
        Assert.IsType<HfTokenizer>(loaded);
        Assert.Equal(tok.VocabSize, loaded.VocabSize);
        Assert.Equal(tok.BosId, loaded.BosId);
        Assert.Equal(tok.EosId, loaded.EosId);
        Assert.Equal(tok.PadId, loaded.PadId);
        Assert.Equal(tok.Hash, loaded.Hash);
        for (int id = 0; id < tok.VocabSize; id++)
        {
            Assert.Equal(tok.IdToToken(id), loaded.IdToToken(id));
            Assert.Equal(id, loaded.TokenToId(tok.IdToToken(id)!));
        }

        var rng = new Random(7);
        string[] pieces = [.. alphabet.Select(c => c.ToString()), .. tok.Specials, "<", ">", "</", "<think"];
        for (int trial = 0; trial < 200; trial++)
        {
            var text = string.Concat(Enumerable.Range(0, rng.Next(0, 60)).Select(_ => pieces[rng.Next(pieces.Length)]));
            Assert.Equal(tok.Encode(text), loaded.Encode(text));
            Assert.Equal(tok.Encode(text, addSpecialTokens: true), loaded.Encode(text, addSpecialTokens: true));
            var ids = tok.Encode(text, addSpecialTokens: true);
            Assert.Equal(tok.Decode(ids), loaded.Decode(ids));
            Assert.Equal(tok.Decode(ids, skipSpecialTokens: true), loaded.Decode(ids, skipSpecialTokens: true));
            Assert.Equal(text, loaded.Decode(tok.Encode(text)));
        }
        Assert.Throws<ArgumentException>(() => loaded.Encode("Z"));
    }

    [Fact]
    public void HashDependsOnContentOnly()
    {
        Assert.Equal(CharTokenizer.Create("abc").Hash, CharTokenizer.Create("abc").Hash);
        Assert.NotEqual(CharTokenizer.Create("abc").Hash, CharTokenizer.Create("acb").Hash);
        Assert.Equal(64, CharTokenizer.Create("abc").Hash.Length);
    }
}
