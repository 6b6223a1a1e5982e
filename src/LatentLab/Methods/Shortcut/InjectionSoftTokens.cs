using LatentLab.Latents;
using LatentLab.Generation;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>
/// Maps predicted post-states (residual-stream vectors at the hook point) into the teacher's input-embedding space:
/// RMS-normalise, then one shared linear map per soft token. Normalising first keeps the map's job a rotation
/// and scale, whatever the layer's norm.
/// </summary>
public sealed class SoftTokenProjection : nn.Module<Tensor, Tensor>
{
    readonly Linear proj;

    public SoftTokenProjection(long hidden) : base("soft_token_projection")
    {
        proj = nn.Linear(hidden, hidden);
        RegisterComponents();
    }

    /// <param name="h">[B, K, D] predicted states</param>
    public override Tensor forward(Tensor h)
    {
        using var scope = NewDisposeScope();
        var n = h * (h.square().mean(new long[] { -1 }, keepdim: true) + 1e-6).rsqrt();
        return proj.forward(n).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Arm 4: predicted soft latent tokens. Input = prompt embeddings ++ scale·proj(ĥ) (K slots) ++ embed(&lt;/think&gt;)
/// (every token of the marker where it is several, as the reference traces tokenise it),
/// then greedy decoding of the answer by the frozen teacher. Only the projection is trained, with answer
/// cross-entropy through the frozen teacher on the training problems' states: the predicted ones for the arm, the
/// true h_post for its oracle. On a bottleneck teacher the soft tokens take the place of the slot tokens (the
/// training sequence has no slot tokens either, so it matches what the arm answers from).
/// </summary>
public static class SoftTokenInjection
{
    /// <param name="statesTrain">[N, K, D] states to inject for the training samples (ĥ_post, or h_post for the oracle).</param>
    public static SoftTokenProjection Train(DecoderLM teacher, TraceFormat fmt, IReadOnlyList<TraceSample> train, Tensor statesTrain,
        ArmTraining budget, string outDir, TextWriter? log = null)
    {
        var marker = ArmsCommon.ThinkEndIds(fmt, train.Select(s => s.Problem));
        var examples = ArmExamples.Of("soft tokens", fmt, train, p => [.. fmt.PromptIds(p, true), .. marker]);
        var proj = new SoftTokenProjection(teacher.Config.HiddenSize);
        proj.to(teacher.Device);
        var restore = ArmsCommon.Freeze(teacher);
        try
        {
            var trainable = new Trainable(proj, (step, micro) =>
            {
                var rows = examples.Draw(budget, step);
                var (ids, targets, mask, lossTokens) = examples.Batch(fmt, rows);
                var hat = ArmsCommon.Rows(statesTrain, examples.SampleIndices(rows)).to(teacher.Device);
                int p = examples.Sequences[rows[0]].PromptLength - marker.Length; // prompt length without the closing marker
                var (emb, tgt, m) = Splice(teacher, ids.to(teacher.Device), targets.to(teacher.Device), mask.to(teacher.Device), proj.forward(hat), p);
                using var output = teacher.Forward(inputEmbeds: emb, attentionMask: m);
                var loss = nn.functional.cross_entropy(output.Logits!.view(-1, teacher.Config.VocabSize), tgt.view(-1), ignore_index: -100);
                return new TrainLoss(loss, lossTokens);
            });
            budget.Run("soft tokens", trainable, outDir, log);
        }
        finally { restore(); }
        proj.eval();
        return proj;
    }

    /// <summary>Inserts the soft tokens after the first <paramref name="p"/> positions of a teacher-forced batch.</summary>
    static (Tensor Embeds, Tensor Targets, Tensor Mask) Splice(DecoderLM teacher, Tensor ids, Tensor targets, Tensor mask, Tensor soft, int p)
    {
        long b = ids.shape[0], k = soft.shape[1];
        var e = teacher.Embed(ids);
        var emb = cat(new[] { e.narrow(1, 0, p), soft.to(e.dtype), e.narrow(1, p, e.shape[1] - p) }, 1);
        var none = full(b, k, -100L, dtype: ScalarType.Int64, device: ids.device);
        var tgt = cat(new[] { targets.narrow(1, 0, p), none, targets.narrow(1, p, targets.shape[1] - p) }, 1);
        var m = cat(new[] { mask.narrow(1, 0, p), ones(b, k, dtype: ScalarType.Int64, device: ids.device), mask.narrow(1, p, mask.shape[1] - p) }, 1);
        return (emb, tgt, m);
    }

    /// <summary>Greedy answers with the soft tokens scaled by <paramref name="scale"/>; token-steps = prompt + K + marker tokens + sampled.</summary>
    public static ArmAnswers Answer(DecoderLM teacher, TraceFormat fmt, SoftTokenProjection proj, IReadOnlyList<TaskProblem> problems,
        Tensor hat, double scale = 1.0, int batchSize = 128)
    {
        var gen = new TextGenerator(teacher);
        int eos = fmt.Tokenizer.EosId ?? throw new InvalidOperationException("tokenizer has no <eos>");
        var prompts = problems.Select(p => fmt.PromptIds(p, true)).ToList();
        var generated = new int[problems.Count][];
        var steps = new double[problems.Count];
        int maxNew = ArmsCommon.MaxAnswerTokens(fmt, problems);
        long k = hat.shape[1];
        var marker = ArmsCommon.ThinkEndIds(fmt, problems);
        using var _ = no_grad();
        foreach (var idx in ArmsCommon.LengthBatches(prompts, batchSize))
        {
            using var scope = NewDisposeScope();
            var dev = teacher.Device;
            var ids = tensor(idx.SelectMany(i => prompts[i].Concat(marker).Select(x => (long)x)).ToArray())
                .view(idx.Length, -1).to(dev);
            int p = prompts[idx[0]].Length;
            var e = teacher.Embed(ids);
            var soft = proj.forward(ArmsCommon.Rows(hat, idx).to(dev)) * scale;
            var emb = cat(new[] { e.narrow(1, 0, p), soft.to(e.dtype), e.narrow(1, p, marker.Length) }, 1);
            using var r = gen.GenerateFromEmbeddings(emb, null, new GenerationConfig(MaxNewTokens: maxNew, StopTokens: new[] { eos }));
            for (int j = 0; j < idx.Length; j++)
            {
                generated[idx[j]] = r.Tokens[j];
                steps[idx[j]] = p + k + marker.Length + r.Sampled[j];
            }
        }
        return ArmsCommon.Grade(fmt, problems, generated, steps);
    }
}
