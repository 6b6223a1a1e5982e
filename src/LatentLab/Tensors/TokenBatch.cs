using static TorchSharp.torch;

namespace LatentLab.Tensors;

/// <summary>Rows of token ids of different lengths as one [B, T] batch.</summary>
public static class TokenBatch
{
    /// <summary>
    /// Right-padded ids [B, T] (T = the longest row; <paramref name="pad"/> after each row's end) and the attention
    /// mask [B, T] (1 on real tokens, 0 on padding), both int64 on the CPU.
    /// </summary>
    public static (Tensor Ids, Tensor Mask) RightPad(IReadOnlyList<int[]> rows, long pad)
    {
        if (rows.Count == 0) throw new ArgumentException("no rows to batch");
        int b = rows.Count, t = rows.Max(r => r.Length);
        var ids = new long[b * t];
        var mask = new long[b * t];
        for (int i = 0; i < b; i++)
            for (int j = 0; j < t; j++)
            {
                bool real = j < rows[i].Length;
                ids[i * t + j] = real ? rows[i][j] : pad;
                mask[i * t + j] = real ? 1 : 0;
            }
        return (tensor(ids).view(b, t), tensor(mask).view(b, t));
    }
}
