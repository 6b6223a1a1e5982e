using LatentLab.Models;
using LatentLab.Text;

namespace LatentLab.Teacher;

/// <summary>The teacher's architecture: a small Llama-family decoder over a character vocabulary.</summary>
public static class TeacherModel
{
    public static TransformerConfig DefaultConfig(ITokenizer tok, int hidden = 128, int layers = 4, int heads = 4) =>
        TransformerConfig.Small("LlamaForCausalLM", tok.VocabSize, hidden, layers, heads, 4, 512, tok.BosId, tok.EosId, tok.PadId)
            with { NormEps = 1e-5 };
}
