using LatentLab.Models;
using LatentLab.Text;

namespace LatentLab.Teacher;

/// <summary>The teacher's architecture: a small Llama-family decoder over a character vocabulary.</summary>
public static class TeacherModel
{
    public static TransformerConfig DefaultConfig(ITokenizer tok, int hidden = 128, int layers = 4, int heads = 4) => new()
    {
        Architecture = "LlamaForCausalLM",
        VocabSize = tok.VocabSize,
        HiddenSize = hidden,
        NumLayers = layers,
        NumHeads = heads,
        NumKvHeads = heads,
        HeadDim = hidden / heads,
        IntermediateSize = hidden * 4,
        TieEmbeddings = true,
        RopeTheta = 10000,
        MaxPositions = 512,
        NormEps = 1e-5,
        BosTokenId = tok.BosId,
        EosTokenIds = tok.EosId is { } e ? new[] { e } : Array.Empty<int>(),
        PadTokenId = tok.PadId,
    };
}
