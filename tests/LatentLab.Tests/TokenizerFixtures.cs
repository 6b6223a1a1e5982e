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

/// <summary>A tiny random Qwen3 model in Hugging Face layout with the real Qwen3 tokenizer files: the HF-checkpoint path without downloads.</summary>
public static class TinyQwen3Checkpoint
{
    public static string Write(string dir, ITokenizer qwen3, long seed)
    {
        var config = LatentLab.Models.TinyModels.Config("Qwen3ForCausalLM", qwen3.VocabSize) with
        {
            MaxPositions = 256, PadTokenId = qwen3.PadId, BosTokenId = null, EosTokenIds = [qwen3.TokenToId("<|im_end|>")!.Value],
        };
        LatentLab.Tensors.TorchRuntime.Seed(seed);
        using (var fresh = new LatentLab.Models.DecoderLM(config)) LatentLab.Models.Checkpoints.Save(fresh, dir);
        foreach (var f in new[] { "tokenizer.json.gz", "tokenizer_config.json.gz" })
            File.Copy(Path.Combine(RealTokenizers.Dir, "qwen3", f), Path.Combine(dir, f));
        return dir;
    }
}
