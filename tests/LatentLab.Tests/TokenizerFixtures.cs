using System.Text.Json;
using LatentLab.Text;

namespace LatentLab.Tests;

/// <summary>The real Qwen3 and Gemma 3 tokenizers, loaded once for every test class in the collection
/// (the Gemma file is 33 MB of JSON).</summary>
public sealed class RealTokenizers
{
    public static string Dir => Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizers");

    readonly Lazy<ITokenizer> _qwen3 = new(() => TokenizerLoader.Load(Path.Combine(Dir, "qwen3", "tokenizer.json.gz")));
    readonly Lazy<ITokenizer> _gemma3 = new(() => TokenizerLoader.Load(Path.Combine(Dir, "gemma3", "tokenizer.json.gz")));

    public ITokenizer Qwen3 => _qwen3.Value;
    public ITokenizer Gemma3 => _gemma3.Value;
    public ITokenizer For(string name) => name switch { "qwen3" => Qwen3, "gemma3" => Gemma3, _ => throw new ArgumentException(name) };
}

[CollectionDefinition(Name)]
public sealed class RealTokenizerCollection : ICollectionFixture<RealTokenizers>
{
    public const string Name = "Real tokenizers";
}

/// <summary>The reference cases of Fixtures/tokenizers/ref_ids.json.</summary>
public static class ReferenceIds
{
    public sealed record Case(string Text, int[] Ids, int[] IdsAddSpecial);

    static readonly Lazy<Dictionary<string, List<Case>>> All = new(() =>
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(RealTokenizers.Dir, "ref_ids.json")));
        var result = new Dictionary<string, List<Case>>();
        foreach (var model in doc.RootElement.EnumerateObject())
            result[model.Name] = model.Value.GetProperty("cases").EnumerateArray().Select(c => new Case(
                c.GetProperty("text").GetString()!,
                c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
                c.GetProperty("ids_add_special").EnumerateArray().Select(x => x.GetInt32()).ToArray())).ToList();
        return result;
    });

    public static IReadOnlyList<Case> For(string model) => All.Value[model];

    static readonly Lazy<Dictionary<string, List<Case>>> Fuzz = new(() =>
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(RealTokenizers.Dir, "fuzz_ids.json")));
        var result = new Dictionary<string, List<Case>>();
        foreach (var model in new[] { "qwen3", "gemma3" })
            result[model] = doc.RootElement.GetProperty(model).EnumerateArray().Select(c => new Case(
                c.GetProperty("text").GetString()!,
                c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
                c.GetProperty("ids_add").EnumerateArray().Select(x => x.GetInt32()).ToArray())).ToList();
        return result;
    });

    /// <summary>The cases of Fixtures/tokenizers/fuzz_ids.json (see make_fuzz_ids.js there).</summary>
    public static IReadOnlyList<Case> FuzzFor(string model) => Fuzz.Value[model];

    public static IEnumerable<object[]> Indexes(string model) => Enumerable.Range(0, For(model).Count).Select(i => new object[] { i });
}

/// <summary>A tiny random model of one architecture in Hugging Face layout with a real tokenizer's files (from
/// Fixtures/tokenizers/{name}): the HF-checkpoint path without downloads.</summary>
public static class TinyCheckpoint
{
    public static string Write(string dir, string architecture, string tokenizerName, ITokenizer tok, int? bos, int[] eos, long seed)
    {
        var config = LatentLab.Models.TinyModels.Config(architecture, tok.VocabSize) with
        {
            MaxPositions = 256, PadTokenId = tok.PadId, BosTokenId = bos, EosTokenIds = eos,
        };
        LatentLab.Tensors.TorchRuntime.Seed(seed);
        using (var fresh = new LatentLab.Models.DecoderLM(config)) LatentLab.Models.Checkpoints.Save(fresh, dir);
        foreach (var f in new[] { "tokenizer.json.gz", "tokenizer_config.json.gz" })
            File.Copy(Path.Combine(RealTokenizers.Dir, tokenizerName, f), Path.Combine(dir, f));
        return dir;
    }

    static int Id(ITokenizer tok, string token) => tok.TokenToId(token) ?? throw new ArgumentException($"the tokenizer has no {token}");

    /// <summary>Qwen3 with the real Qwen3 tokenizer (no bos; a turn ends at &lt;|im_end|&gt;).</summary>
    public static string Qwen3(string dir, ITokenizer qwen3, long seed) =>
        Write(dir, "Qwen3ForCausalLM", "qwen3", qwen3, bos: null, eos: [Id(qwen3, "<|im_end|>")], seed);

    /// <summary>Gemma 3 (text) with the real Gemma 3 tokenizer (262k ids, so the embedding dominates the size: about 34 MB).</summary>
    public static string Gemma3(string dir, ITokenizer gemma3, long seed) =>
        Write(dir, "Gemma3ForCausalLM", "gemma3", gemma3, bos: gemma3.BosId, eos: [Id(gemma3, "<end_of_turn>")], seed);
}
