namespace LatentLab.Models;

/// <summary>
/// Tiny configs of every supported family, for tests and plumbing checks: small enough to run in
/// milliseconds, but each exercises its family's peculiarities (GQA, QK-norm, biases, sandwich norms,
/// soft-capping, sliding windows, per-layer RoPE bases, llama3 RoPE scaling).
/// </summary>
public static class TinyModels
{
    public static readonly string[] Architectures =
        { "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM" };

    public static TransformerConfig Config(string architecture, int vocab = 64) => architecture switch
    {
        "LlamaForCausalLM" => Base(architecture, vocab) with
        {
            TieEmbeddings = false,
            RopeTheta = 500000,
            RopeScaling = new RopeScaling(RopeScalingKind.Llama3, 8, 1, 4, 16),
        },
        "Qwen2ForCausalLM" => Base(architecture, vocab) with { AttentionBias = true, TieEmbeddings = true },
        "Qwen3ForCausalLM" => Base(architecture, vocab) with { QkNorm = true, HeadDim = 12, TieEmbeddings = true },
        "Gemma2ForCausalLM" => Base(architecture, vocab) with
        {
            Activation = Activation.GeluTanh, Norm = NormKind.GemmaRmsNorm, SandwichNorm = true, ScaleEmbeddings = true,
            QueryPreAttnScalar = 10, AttnSoftcap = 5, FinalSoftcap = 3, SlidingWindow = 3,
            SlidingLayers = new[] { true, false },
        },
        "Gemma3ForCausalLM" => Base(architecture, vocab) with
        {
            Activation = Activation.GeluTanh, Norm = NormKind.GemmaRmsNorm, SandwichNorm = true, ScaleEmbeddings = true,
            QkNorm = true, QueryPreAttnScalar = 16, SlidingWindow = 3, SlidingLayers = new[] { true, false },
            RopeTheta = 1000000, RopeLocalTheta = 10000, RopeScaling = new RopeScaling(RopeScalingKind.Linear, 8),
        },
        _ => throw new ArgumentException($"no tiny config for '{architecture}'"),
    };

    static TransformerConfig Base(string arch, int vocab) => new()
    {
        Architecture = arch,
        VocabSize = vocab,
        HiddenSize = 32,
        NumLayers = 2,
        NumHeads = 4,
        NumKvHeads = 2,
        HeadDim = 8,
        IntermediateSize = 48,
        MaxPositions = 128,
        NormEps = 1e-6,
        BosTokenId = 1,
        EosTokenIds = new[] { 2 },
        PadTokenId = 0,
    };
}
