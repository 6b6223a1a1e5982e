using static TorchSharp.torch;

namespace LatentLab.Generation;

public enum FinishReason { Eos, StopString, Length }

/// <summary>
/// Per row: the generated tokens without the prompt, why the row stopped, and what was matched.
/// <para><see cref="Tokens"/> never contain the stop token. After a stop string they end with the last token
/// whose decoding lies wholly before the stop string (a token that straddles its start is dropped), while
/// <see cref="Texts"/> are cut exactly before it.</para>
/// <para><see cref="Sampled"/> counts the tokens drawn for the row (stop token and dropped tokens included):
/// the compute it took, and the number of valid steps in <see cref="Scores"/> / <see cref="Logits"/>.</para>
/// <para><see cref="Scores"/> (processed, what was sampled from) and <see cref="Logits"/> (raw model logits) are
/// [B, steps, V] float32 when asked for in the config; steps past a row's Sampled count are meaningless.
/// Dispose the result (or an enclosing dispose scope) to free them.</para>
/// </summary>
public sealed record GenerationResult(
    IReadOnlyList<int[]> Tokens,
    IReadOnlyList<FinishReason> Finish,
    IReadOnlyList<int> Sampled,
    IReadOnlyList<int?> MatchedStopToken,
    IReadOnlyList<string?> MatchedStopString,
    IReadOnlyList<string>? Texts = null,
    Tensor? Scores = null,
    Tensor? Logits = null) : IDisposable
{
    public void Dispose()
    {
        Scores?.Dispose();
        Logits?.Dispose();
    }
}
