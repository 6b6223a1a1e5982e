using LatentLab.Generation;
using LatentLab.Models;
using static TorchSharp.torch;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>One graded item: what was generated (continuation tokens) and whether the verifier accepted it.</summary>
public sealed record GradedItem(ReasonerExample Example, int[] Generated, bool Correct);

/// <summary>Verified accuracy of Reasoner + Talker and of the coupled baseline, greedy decoding both.</summary>
public static class ReasonerEval
{
    /// <summary>Reasoner latent chain (LatentSteps latents) → Talker (greedy) → the data's verifier.</summary>
    public static IReadOnlyList<GradedItem> GradePipeline(Reasoner reasoner, Talker talker, IReasonerData data,
        IReadOnlyList<ReasonerExample> xs, int batchSize = 128)
    {
        using var _ = no_grad();
        int eos = data.Tokenizer.EosId!.Value, pad = data.Tokenizer.PadId ?? 0;
        var results = new List<GradedItem>(xs.Count);
        for (int s = 0; s < xs.Count; s += batchSize)
        {
            using var scope = NewDisposeScope();
            var chunk = xs.Skip(s).Take(batchSize).ToList();
            using var batch = ReasonerBatch.Of(chunk, pad);
            var chain = reasoner.Reason(batch.PromptIds, batch.PromptMask, reasoner.Settings.LatentSteps);
            var said = talker.Generate(chain, data.MaxContinuation + 4, eos);
            for (int i = 0; i < chunk.Count; i++) results.Add(new GradedItem(chunk[i], said[i], data.IsCorrect(chunk[i], said[i])));
        }
        return results;
    }

    /// <summary>The coupled LM: greedy continuation of the prompt, graded by the same verifier.</summary>
    public static IReadOnlyList<GradedItem> GradeBaseline(DecoderLM model, IReasonerData data, IReadOnlyList<ReasonerExample> xs, int batchSize = 128)
    {
        using var _ = no_grad();
        var gen = new TextGenerator(model);
        int eos = data.Tokenizer.EosId!.Value;
        var results = new List<GradedItem>(xs.Count);
        for (int s = 0; s < xs.Count; s += batchSize)
        {
            var chunk = xs.Skip(s).Take(batchSize).ToList();
            using var outcome = gen.Generate(chunk.Select(x => x.Prompt).ToList(), new GenerationConfig(MaxNewTokens: data.MaxContinuation + 4, StopTokens: new[] { eos }));
            for (int i = 0; i < chunk.Count; i++)
            {
                var tokens = outcome.Tokens[i].Append(eos).ToArray();
                results.Add(new GradedItem(chunk[i], tokens, data.IsCorrect(chunk[i], tokens)));
            }
        }
        return results;
    }

    public static Evaluation.Proportion Accuracy(IReadOnlyList<GradedItem> graded) =>
        Evaluation.Proportion.Wilson(graded.Count(g => g.Correct), graded.Count);
}
