using static TorchSharp.torch;

namespace LatentLab.Models;

/// <summary>
/// What <see cref="DecoderLM.Forward"/> takes besides the ids for one sequence that is not plain causal text: the RoPE
/// position of each token and, for each token as a key, the first index (of this sequence) from which queries no
/// longer see it (long.MaxValue: always seen). A bottleneck trace uses both: its thought is hidden from the slots'
/// reader and the answer, which take positions as if the thought were absent.
/// </summary>
public sealed record SequenceLayout(long[] Positions, long[] Expiry)
{
    public const long Never = long.MaxValue;

    /// <summary>Plain causal text of <paramref name="length"/> tokens: positions 0…n−1, nothing hidden.</summary>
    public static SequenceLayout Plain(int length) =>
        new(Enumerable.Range(0, length).Select(i => (long)i).ToArray(), Enumerable.Repeat(Never, length).ToArray());

    public int Length => Positions.Length;

    /// <summary>The first <paramref name="n"/> tokens (a sequence cut before its end: a training input, a prefix).</summary>
    public SequenceLayout Take(int n) => new(Positions[..n], Expiry[..n]);

    /// <summary>
    /// [B, T] positions and key expiry for rows padded to <paramref name="t"/> columns, right-padded or (with
    /// <paramref name="leftPad"/>) left-padded; expiry indices move with the padding, so they stay column indices.
    /// A null row is plain text. Padding columns get position 0 and are never hidden (their keys are masked anyway).
    /// </summary>
    public static (Tensor Positions, Tensor Expiry) Batch(IReadOnlyList<SequenceLayout?> rows, IReadOnlyList<int> lengths, int t, bool leftPad = false, Device? device = null)
    {
        int b = rows.Count;
        var pos = new long[b * t];
        var exp = new long[b * t];
        Array.Fill(exp, Never);
        for (int i = 0; i < b; i++)
        {
            var row = rows[i] ?? Plain(lengths[i]);
            if (row.Length != lengths[i]) throw new ArgumentException($"layout row {i} has {row.Length} tokens, the ids {lengths[i]}");
            int off = leftPad ? t - row.Length : 0;
            for (int j = 0; j < row.Length; j++)
            {
                pos[i * t + off + j] = row.Positions[j];
                exp[i * t + off + j] = row.Expiry[j] == Never ? Never : row.Expiry[j] + off;
            }
        }
        device ??= CPU;
        return (tensor(pos, device: device).view(b, t), tensor(exp, device: device).view(b, t));
    }
}
