namespace LatentLab.Generation;

/// <summary>
/// How to decode. Temperature 0 is greedy (argmax after the processors); top-k / top-p only act when sampling.
/// <para><see cref="StopTokens"/>: null means the model config's eos ids; an empty list means none.</para>
/// <para><see cref="StopStrings"/> are matched on the decoded continuation (not the prompt) and need a decode
/// delegate; the returned text and tokens end before the stop string (see <see cref="GenerationResult"/>).</para>
/// <para><see cref="Seed"/> seeds a generator private to the call, so the same seed and the same batch give the
/// same samples whatever the global RNG state; null draws from the global RNG.</para>
/// </summary>
public sealed record GenerationConfig(
    int MaxNewTokens = 64,
    double Temperature = 0,
    int TopK = 0,
    double TopP = 1.0,
    double RepetitionPenalty = 1.0,
    IReadOnlyList<int>? StopTokens = null,
    IReadOnlyList<string>? StopStrings = null,
    long? Seed = null,
    bool OutputScores = false,
    bool OutputLogits = false)
{
    public bool Greedy => Temperature == 0;

    public void Validate()
    {
        void Need(bool ok, string what) { if (!ok) throw new ArgumentException($"invalid generation config: {what}"); }
        Need(MaxNewTokens >= 0, $"MaxNewTokens must be >= 0 (got {MaxNewTokens})");
        Need(Temperature >= 0 && double.IsFinite(Temperature), $"Temperature must be a finite number >= 0 (got {Temperature})");
        Need(TopK >= 0, $"TopK must be >= 0, 0 = off (got {TopK})");
        Need(TopP > 0 && TopP <= 1, $"TopP must be in (0, 1] (got {TopP})");
        Need(RepetitionPenalty > 0 && double.IsFinite(RepetitionPenalty), $"RepetitionPenalty must be > 0, 1 = off (got {RepetitionPenalty})");
        if (StopStrings is not null)
            for (int i = 0; i < StopStrings.Count; i++)
                Need(!string.IsNullOrEmpty(StopStrings[i]), $"StopStrings[{i}] is empty");
    }
}
