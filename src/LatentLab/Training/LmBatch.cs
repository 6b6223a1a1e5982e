using LatentLab.Tensors;
using static TorchSharp.torch;

namespace LatentLab.Training;

/// <summary>The one way sequences become a next-token training batch, for every method that trains an LM loss.</summary>
public static class LmBatch
{
    /// <summary>
    /// Right-padded batch: input ids [B, T], next-token targets [B, T] (-100 where no loss: the prompt and the padding)
    /// and the attention mask [B, T].
    /// </summary>
    public static (Tensor Ids, Tensor Targets, Tensor Mask, long LossTokens) Build(IReadOnlyList<(int[] Ids, int PromptLength)> seqs, int pad)
    {
        // Position j predicts token j+1; the first answer-side token is at index PromptLength.
        var targets = seqs.Select(s => s.Ids.Skip(1).Select((next, j) => j + 1 >= s.PromptLength ? next : -100).ToArray()).ToList();
        var (ids, mask) = TokenBatch.RightPad(seqs.Select(s => s.Ids[..^1]).ToList(), pad);
        var (tgt, targetMask) = TokenBatch.RightPad(targets, -100);
        targetMask.Dispose();
        return (ids, tgt, mask, targets.Sum(t => t.Count(x => x != -100)));
    }
}
