using LatentLab.Generation;
using LatentLab.Models;
using static TorchSharp.torch;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>One graded item: what was generated (continuation tokens) and whether the verifier accepted it.</summary>
public sealed record GradedItem(ReasonerExample Example, int[] Generated, bool Correct);

/// <summary>Which latent chain a Talker reads when a pipeline is graded.</summary>
public enum ChainSource
{
    /// <summary>The Reasoner's own free-running chain from the prompt: the method as deployed.</summary>
    FreeRunning,
    /// <summary>
    /// The Reasoner reading the true continuation (teacher-forced; &lt;eos&gt; repeated past its end): the latents a
    /// drift-free Reasoner would produce, so the Talker's read-out of it is the ceiling of the pipeline.
    /// </summary>
    Oracle,
    /// <summary>The free-running chain of another problem (the next one in the list): a read-out with no information about this problem, the floor.</summary>
    OtherProblem,
}

/// <summary>Verified accuracy of Reasoner + Talker and of the coupled baseline, greedy decoding both.</summary>
public static class ReasonerEval
{
    /// <summary>Reasoner latent chain (LatentSteps latents, from <paramref name="source"/>) → Talker (greedy, KV-cached; with <paramref name="slips"/>, slipped while thinking) → the data's verifier.</summary>
    public static IReadOnlyList<GradedItem> GradePipeline(Reasoner reasoner, Talker talker, IReasonerData data,
        IReadOnlyList<ReasonerExample> xs, int batchSize = 128, ChainSource source = ChainSource.FreeRunning, GenerationSlips? slips = null)
    {
        using var _ = no_grad();
        int eos = data.Tokenizer.EosId!.Value, pad = data.Tokenizer.PadId ?? 0;
        if (source == ChainSource.OtherProblem && xs.Count < 2) throw new ArgumentException("the other-problem floor needs at least two problems");
        // The floor reads problem i + 1's chain for problem i.
        var reasonedOn = source == ChainSource.OtherProblem ? xs.Skip(1).Append(xs[0]).ToList() : xs;
        var results = new List<GradedItem>(xs.Count);
        for (int s = 0; s < xs.Count; s += batchSize)
        {
            using var scope = NewDisposeScope();
            var chunk = xs.Skip(s).Take(batchSize).ToList();
            using var batch = ReasonerBatch.Of(reasonedOn.Skip(s).Take(batchSize).ToList(), pad);
            var chain = source == ChainSource.Oracle
                ? OracleChain(reasoner, chunk, eos, reasoner.Settings.LatentSteps)
                : reasoner.Reason(batch.PromptIds, batch.PromptMask, reasoner.Settings.LatentSteps);
            var said = talker.Generate(chain, data.MaxContinuation + 4, eos, slips?.TalkerChooser(s, chunk.Count));
            for (int i = 0; i < chunk.Count; i++) results.Add(new GradedItem(chunk[i], said[i], data.IsCorrect(chunk[i], said[i])));
        }
        return results;
    }

    /// <summary>
    /// The Reasoner's latents on the true tokens [B, steps, D]: latent j (j below the continuation's length n) is its
    /// (L2-normalised) state after the prompt and the first j continuation tokens; from latent n − 1 on (the one that
    /// reads out the last true token) the Reasoner runs free, as it does past the end of every free-running chain. So the
    /// chain has no drift where the answer is, and past the end it looks like what the Talkers were trained on; padding
    /// it with &lt;eos&gt; inputs instead put states the Reasoner never saw in training behind every short continuation.
    /// It is a ceiling only for a Talker that reads it as it reads free-running chains: on CFG's 30–95-token chains the
    /// Talkers, trained on the free-running chains, answer 27–36 % from it against 80–95 % from their own chain (README).
    /// </summary>
    public static Tensor OracleChain(Reasoner reasoner, IReadOnlyList<ReasonerExample> xs, int eos, int steps)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var forced = xs.Select(x => new ReasonerExample(x.Prompt,
            x.Continuation.Concat(Enumerable.Repeat(eos, Math.Max(0, steps - x.Continuation.Length))).Take(steps).ToArray(), x.Reference)).ToList();
        using var batch = ReasonerBatch.Of(forced, eos);
        long p = batch.PromptIds.shape[1];
        var ids = cat(new[] { batch.PromptIds, batch.Continuation.narrow(1, 0, steps - 1) }, 1);
        var mask = cat(new[] { batch.PromptMask, ones(xs.Count, steps - 1, dtype: ScalarType.Int64) }, 1);
        using var output = reasoner.Model.Forward(ids, attentionMask: mask, logits: LogitsMode.None);
        var teacherForced = reasoner.ToLatent(output.Hidden.narrow(1, p - 1, steps));
        // The free-running tail: from the prompt and the first n − 1 true tokens, whose first latent is latent n − 1.
        var lengths = xs.Select(x => Math.Clamp(x.Continuation.Length, 1, steps)).ToArray();
        var extended = xs.Select((x, i) => new ReasonerExample(x.Prompt.Concat(x.Continuation.Take(lengths[i] - 1)).ToArray(), [eos], x.Reference)).ToList();
        using var tailBatch = ReasonerBatch.Of(extended, eos);
        var tail = reasoner.Reason(tailBatch.PromptIds, tailBatch.PromptMask, steps - lengths.Min() + 1);
        var rows = xs.Select((_, i) => cat(new[] { teacherForced[i].narrow(0, 0, lengths[i] - 1), tail[i].narrow(0, 0, steps - lengths[i] + 1) }, 0));
        return stack(rows.ToList()).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// How the free-running chain drifts with its length: per continuation position j, the mean cosine between the
    /// free-running latent j and the oracle latent j (<see cref="OracleChain"/>), and how often latent j, read out as the
    /// LM head would (argmax of latent · embeddingsᵀ), is continuation token j. Positions past a problem's end are skipped.
    /// </summary>
    public static IReadOnlyList<(int Position, double Cosine, double ReadoutAccuracy, int Count)> ChainDrift(Reasoner reasoner, IReasonerData data, IReadOnlyList<ReasonerExample> xs)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        int eos = data.Tokenizer.EosId!.Value, pad = data.Tokenizer.PadId ?? 0;
        int steps = xs.Max(x => x.Continuation.Length);
        using var batch = ReasonerBatch.Of(xs, pad);
        var chain = reasoner.Reason(batch.PromptIds, batch.PromptMask, steps);
        var oracle = OracleChain(reasoner, xs, eos, steps);
        var cos = nn.functional.cosine_similarity(chain, oracle, dim: -1);
        var readout = chain.matmul(reasoner.Model.EmbeddingWeight.to(ScalarType.Float32).t()).argmax(-1);
        var hit = readout.eq(batch.Continuation).to(ScalarType.Float32);
        var m = batch.ContinuationMask.to(ScalarType.Float32);
        var n = m.sum(new long[] { 0 }); // sum(0) would bind to sum(ScalarType) and count in bytes
        var cosMean = ((cos * m).sum(new long[] { 0 }) / n.clamp_min(1)).data<float>().ToArray();
        var accMean = ((hit * m).sum(new long[] { 0 }) / n.clamp_min(1)).data<float>().ToArray();
        var counts = n.data<float>().ToArray();
        return Enumerable.Range(0, steps).Where(j => counts[j] > 0).Select(j => (j, (double)cosMean[j], (double)accMean[j], (int)counts[j])).ToList();
    }

    /// <summary>The coupled LM: greedy continuation of the prompt (with <paramref name="slips"/>, slipped while thinking), graded by the same verifier.</summary>
    public static IReadOnlyList<GradedItem> GradeBaseline(DecoderLM model, IReasonerData data, IReadOnlyList<ReasonerExample> xs, int batchSize = 128,
        GenerationSlips? slips = null)
    {
        using var _ = no_grad();
        var gen = new TextGenerator(model);
        int eos = data.Tokenizer.EosId!.Value;
        var results = new List<GradedItem>(xs.Count);
        for (int s = 0; s < xs.Count; s += batchSize)
        {
            var chunk = xs.Skip(s).Take(batchSize).ToList();
            using var outcome = gen.Generate(chunk.Select(x => x.Prompt).ToList(), new GenerationConfig(MaxNewTokens: data.MaxContinuation + 4, StopTokens: new[] { eos }),
                processors: slips is null ? null : [slips.Processor(s)]);
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
