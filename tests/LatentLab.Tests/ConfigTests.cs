using System.Text.Json.Nodes;
using LatentLab.Models;

namespace LatentLab.Tests;

public sealed class ConfigTests
{
    static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "configs", name);

    static JsonObject Json(string name) => JsonNode.Parse(File.ReadAllText(Fixture(name)))!.AsObject();

    [Fact]
    public void Qwen3()
    {
        var c = TransformerConfig.FromHuggingFace(Fixture("qwen3-0.6b.json"));
        Assert.Equal((1024, 28, 16, 8, 128, 3072), (c.HiddenSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.HeadDim, c.IntermediateSize));
        Assert.True(c.QkNorm && c.TieEmbeddings && !c.AttentionBias && !c.SandwichNorm && !c.ScaleEmbeddings);
        Assert.Equal(1e6, c.RopeTheta);
        Assert.Equal(NormKind.RmsNorm, c.Norm);
        Assert.Equal(1 / Math.Sqrt(128), c.AttentionScale, 12);
        Assert.Null(c.SlidingWindow);
        Assert.Equal(new[] { 151645 }, c.EosTokenIds);
    }

    [Fact]
    public void Gemma3()
    {
        var c = TransformerConfig.FromHuggingFace(Fixture("gemma3-1b.json"));
        Assert.Equal(NormKind.GemmaRmsNorm, c.Norm);
        Assert.True(c.QkNorm && c.SandwichNorm && c.ScaleEmbeddings && c.TieEmbeddings);
        Assert.Equal(Activation.GeluTanh, c.Activation);
        Assert.Equal(512, c.SlidingWindow);
        // Pattern 6: every sixth layer is global.
        Assert.Equal(26, c.SlidingLayers!.Count);
        Assert.False(c.IsSliding(5));
        Assert.True(c.IsSliding(0) && c.IsSliding(4) && c.IsSliding(6));
        Assert.Equal(10000, c.LayerRopeTheta(0));
        Assert.Equal(1e6, c.LayerRopeTheta(5));
        Assert.Equal(1 / 16.0, c.AttentionScale, 12);
        Assert.Equal(new[] { 1, 106 }, c.EosTokenIds);
    }

    [Fact]
    public void Gemma2()
    {
        var c = TransformerConfig.FromHuggingFace(Fixture("gemma2-2b.json"));
        Assert.Equal(50, c.AttnSoftcap);
        Assert.Equal(30, c.FinalSoftcap);
        Assert.False(c.QkNorm);
        Assert.True(c.IsSliding(0) && !c.IsSliding(1) && c.IsSliding(2));
        Assert.Equal(4096, c.SlidingWindow);
    }

    [Fact]
    public void Llama32WithLlama3RopeScaling()
    {
        var c = TransformerConfig.FromHuggingFace(Fixture("llama3.2-1b.json"));
        Assert.Equal(RopeScalingKind.Llama3, c.RopeScaling.Kind);
        Assert.Equal(32, c.RopeScaling.Factor);
        Assert.Equal(8192, c.RopeScaling.OriginalMaxPositions);
        Assert.True(c.TieEmbeddings);
        Assert.Equal(1e-5, c.NormEps);
    }

    [Fact]
    public void Qwen2HasQkvBiasButNoOutputBias()
    {
        var c = TransformerConfig.FromHuggingFace(Fixture("qwen2.5-0.5b.json"));
        Assert.True(c.AttentionBias);
        Assert.False(c.OutputBias);
        Assert.Equal(896 / 14, c.HeadDim);
        Assert.Null(c.SlidingWindow);
    }

    [Theory]
    [InlineData("qwen3-0.6b.json")]
    [InlineData("gemma3-1b.json")]
    [InlineData("gemma2-2b.json")]
    [InlineData("llama3.2-1b.json")]
    [InlineData("qwen2.5-0.5b.json")]
    public void WrittenConfigReadsBackToTheSameModel(string name)
    {
        var c = TransformerConfig.FromHuggingFace(Fixture(name));
        var again = TransformerConfig.FromHuggingFace(c.ToHuggingFace());
        Assert.Equal(c, again);
        Assert.Equal(c.Hash(), again.Hash());
    }

    [Fact]
    public void UnknownArchitectureIsAClearError()
    {
        var j = Json("qwen3-0.6b.json");
        j["architectures"] = new JsonArray("MistralForCausalLM");
        var e = Assert.Throws<ArgumentException>(() => TransformerConfig.FromHuggingFace(j));
        Assert.Contains("MistralForCausalLM", e.Message);
        Assert.Contains("supported", e.Message);
    }

    [Fact]
    public void UnknownKeyIsAClearError()
    {
        var j = Json("gemma3-1b.json");
        j["mystery_scaling"] = 2.0;
        var e = Assert.Throws<ArgumentException>(() => TransformerConfig.FromHuggingFace(j));
        Assert.Contains("mystery_scaling", e.Message);
    }

    [Theory]
    [InlineData("yarn")]
    [InlineData("dynamic")]
    [InlineData("longrope")]
    public void UnimplementedRopeScalingIsAClearError(string kind)
    {
        var j = Json("llama3.2-1b.json");
        j["rope_scaling"] = new JsonObject { ["rope_type"] = kind, ["factor"] = 4.0 };
        var e = Assert.Throws<ArgumentException>(() => TransformerConfig.FromHuggingFace(j));
        Assert.Contains(kind, e.Message);
    }

    [Fact]
    public void QwenSlidingWindowIsRefusedRatherThanIgnored()
    {
        var j = Json("qwen2.5-0.5b.json");
        j["use_sliding_window"] = true;
        Assert.Throws<ArgumentException>(() => TransformerConfig.FromHuggingFace(j));
    }

    [Fact]
    public void BadFilesNameTheFile()
    {
        var f = Path.GetTempFileName();
        try
        {
            File.WriteAllText(f, "{ not json");
            var e = Assert.Throws<InvalidDataException>(() => TransformerConfig.FromHuggingFace(f));
            Assert.Contains(f, e.Message);
            File.WriteAllText(f, "{\"architectures\": [\"Qwen3ForCausalLM\"]}");
            e = Assert.Throws<InvalidDataException>(() => TransformerConfig.FromHuggingFace(f));
            Assert.Contains("missing", e.Message);
        }
        finally { File.Delete(f); }
    }
}
