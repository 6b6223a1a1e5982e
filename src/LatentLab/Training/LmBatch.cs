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
        int t = seqs.Max(s => s.Ids.Length) - 1;
        int b = seqs.Count;
        var ids = new long[b * t];
        var tgt = new long[b * t];
        var mask = new long[b * t];
        long lossTokens = 0;
        for (int i = 0; i < b; i++)
        {
            var (s, promptLen) = seqs[i];
            for (int j = 0; j < t; j++)
            {
                bool real = j < s.Length - 1;
                ids[i * t + j] = real ? s[j] : pad;
                mask[i * t + j] = real ? 1 : 0;
                // Position j predicts token j+1; the first answer-side token is at index promptLength.
                bool scored = real && j + 1 >= promptLen;
                tgt[i * t + j] = scored ? s[j + 1] : -100;
                if (scored) lossTokens++;
            }
        }
        return (tensor(ids).view(b, t), tensor(tgt).view(b, t), tensor(mask).view(b, t), lossTokens);
    }
}
