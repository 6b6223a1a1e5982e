
namespace LatentLab.Latents;

/// <summary>
/// The leak rule of the shortcut study: a target state must be computed before the model has seen any answer
/// token, or a predictor could learn to copy the answer instead of skipping the reasoning. Every target position
/// (h_pre, and the K post states ending at the boundary) must lie strictly before the first answer token.
/// </summary>
public static class LeakRule
{
    /// <summary>The positions read for a sample: Pre, then Post-K+1 … Post.</summary>
    public static int[] TargetPositions(TraceSample s, int k)
    {
        ArgumentNullException.ThrowIfNull(s);
        if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), $"K must be >= 1 (got {k})");
        var positions = new int[k + 1];
        positions[0] = s.PrePosition;
        for (int j = 0; j < k; j++) positions[j + 1] = s.PostPosition - k + 1 + j;
        return positions;
    }

    /// <summary>Throws <see cref="InvalidDataException"/> naming the sample if any target position could see the answer,
    /// or if the positions do not fit the trace (pre must be the last prompt token, the K post states after it).</summary>
    public static void Check(TraceSample s, int k)
    {
        var positions = TargetPositions(s, k);
        string Where() => $"sample {s.Index} ('{s.Problem.Prompt}')";
        if (s.PromptIds.Length == 0 || s.PrePosition != s.PromptIds.Length - 1)
            throw new InvalidDataException($"{Where()}: pre position {s.PrePosition} is not the last prompt token ({s.PromptIds.Length - 1})");
        if (s.TraceIds.Length < s.PromptIds.Length || !s.TraceIds.AsSpan(0, s.PromptIds.Length).SequenceEqual(s.PromptIds))
            throw new InvalidDataException($"{Where()}: the trace does not start with the prompt");
        if (s.FirstAnswerPosition > s.TraceIds.Length)
            throw new InvalidDataException($"{Where()}: first answer position {s.FirstAnswerPosition} is past the trace (length {s.TraceIds.Length})");
        foreach (var p in positions)
            if (p >= s.FirstAnswerPosition)
                throw new InvalidDataException(
                    $"{Where()}: target position {p} is at or after the first answer token ({s.FirstAnswerPosition}); the target would leak the answer");
        if (s.PostPosition - k + 1 <= s.PrePosition)
            throw new InvalidDataException(
                $"{Where()}: the {k} post state(s) ending at {s.PostPosition} reach back into the prompt (pre = {s.PrePosition}); lower K");
    }
}
