using System.Text.Json;
using System.Text.Json.Nodes;

namespace LatentLab.Models;

public enum Activation { SiLU, GeluTanh, Gelu }

public enum NormKind
{
    /// <summary>x / rms(x) * w (Llama, Qwen).</summary>
    RmsNorm,
    /// <summary>x / rms(x) * (1 + w), computed in float32 (Gemma).</summary>
    GemmaRmsNorm,
}

public enum RopeScalingKind { None, Linear, Llama3 }

public sealed record RopeScaling(
    RopeScalingKind Kind = RopeScalingKind.None,
    double Factor = 1.0,
    double LowFreqFactor = 1.0,
    double HighFreqFactor = 4.0,
    int OriginalMaxPositions = 8192);

/// <summary>
/// One record for every decoder of the Llama family. The Hugging Face mapping lives in HfConfig.cs
/// (<see cref="FromHuggingFace(string)"/> and <see cref="ToHuggingFace"/>) only: everything else reads these fields.
/// </summary>
public sealed partial record TransformerConfig
{
    /// <summary>HF architecture name, e.g. LlamaForCausalLM; decides the config.json we write back.</summary>
    public string Architecture { get; init; } = "LlamaForCausalLM";
    public int VocabSize { get; init; }
    public int HiddenSize { get; init; }
    public int NumLayers { get; init; }
    public int NumHeads { get; init; }
    public int NumKvHeads { get; init; }
    public int HeadDim { get; init; }
    public int IntermediateSize { get; init; }
    public Activation Activation { get; init; } = Activation.SiLU;
    public NormKind Norm { get; init; } = NormKind.RmsNorm;
    public double NormEps { get; init; } = 1e-6;
    /// <summary>Gemma 2/3: four norms per block (input, post-attention, pre-feedforward, post-feedforward).</summary>
    public bool SandwichNorm { get; init; }
    public bool QkNorm { get; init; }
    /// <summary>Bias on the q/k/v projections.</summary>
    public bool AttentionBias { get; init; }
    /// <summary>Bias on the output projection.</summary>
    public bool OutputBias { get; init; }
    public bool TieEmbeddings { get; init; } = true;
    /// <summary>Multiply embeddings by sqrt(hidden_size) (Gemma).</summary>
    public bool ScaleEmbeddings { get; init; }
    public double RopeTheta { get; init; } = 10000;
    /// <summary>Base for sliding-window layers when it differs (Gemma 3's rope_local_base_freq).</summary>
    public double? RopeLocalTheta { get; init; }
    public RopeScaling RopeScaling { get; init; } = new();
    /// <summary>Attention scale is QueryPreAttnScalar^-0.5 when set (Gemma), else HeadDim^-0.5.</summary>
    public double? QueryPreAttnScalar { get; init; }
    public double? AttnSoftcap { get; init; }
    public double? FinalSoftcap { get; init; }
    public int? SlidingWindow { get; init; }
    /// <summary>Per layer: true when the layer uses the sliding window. Null means no sliding layers.</summary>
    public IReadOnlyList<bool>? SlidingLayers { get; init; }
    public int MaxPositions { get; init; } = 4096;
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = Array.Empty<int>();
    public int? PadTokenId { get; init; }

    public bool IsSliding(int layer) => SlidingWindow is not null && SlidingLayers is not null && SlidingLayers[layer];
    public double AttentionScale => 1.0 / Math.Sqrt(QueryPreAttnScalar ?? HeadDim);
    /// <summary>
    /// A small decoder trained from scratch (the teacher, the JEPA-Reasoner, its Talker): one KV head per head,
    /// head_dim = hidden / heads, an MLP of <paramref name="ffnMultiple"/> × hidden, tied embeddings.
    /// </summary>
    public static TransformerConfig Small(string architecture, int vocab, int hidden, int layers, int heads, int ffnMultiple,
        int maxPositions, int? bos, int? eos, int? pad) => new()
    {
        Architecture = architecture,
        VocabSize = vocab,
        HiddenSize = hidden,
        NumLayers = layers,
        NumHeads = heads,
        NumKvHeads = heads,
        HeadDim = hidden / heads,
        IntermediateSize = hidden * ffnMultiple,
        TieEmbeddings = true,
        MaxPositions = maxPositions,
        BosTokenId = bos,
        EosTokenIds = eos is { } e ? new[] { e } : Array.Empty<int>(),
        PadTokenId = pad,
    };

    public double LayerRopeTheta(int layer) => IsSliding(layer) && RopeLocalTheta is { } t ? t : RopeTheta;
    /// <summary>Gemma 3's sliding layers use the local base without scaling; every other layer uses the configured scaling.</summary>
    public RopeScaling LayerRopeScaling(int layer) => IsSliding(layer) && RopeLocalTheta is not null ? new RopeScaling() : RopeScaling;

    public void Validate()
    {
        void Need(bool ok, string what) { if (!ok) throw new ArgumentException($"invalid transformer config: {what}"); }
        Need(VocabSize > 0, "vocab_size must be > 0");
        Need(HiddenSize > 0 && NumLayers > 0 && NumHeads > 0 && HeadDim > 0 && IntermediateSize > 0, "sizes must be > 0");
        Need(NumKvHeads > 0 && NumHeads % NumKvHeads == 0, $"num_attention_heads ({NumHeads}) must be a multiple of num_key_value_heads ({NumKvHeads})");
        Need(HeadDim % 2 == 0, "head_dim must be even for RoPE");
        Need(SlidingLayers is null || SlidingLayers.Count == NumLayers, $"layer_types has {SlidingLayers?.Count} entries for {NumLayers} layers");
        Need(SlidingWindow is null || SlidingWindow > 0, "sliding_window must be > 0");
    }

    /// <summary>Two configs are equal when they describe the same model (lists compared by content).</summary>
    public bool Equals(TransformerConfig? other) =>
        other is not null && ToHuggingFace().ToJsonString() == other.ToHuggingFace().ToJsonString();

    public override int GetHashCode() => ToHuggingFace().ToJsonString().GetHashCode();

    /// <summary>Stable short hash of the config (for latent-store manifests).</summary>
    public string Hash()
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(ToHuggingFace().ToJsonString());
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(bytes)).ToLowerInvariant()[..16];
    }
}
