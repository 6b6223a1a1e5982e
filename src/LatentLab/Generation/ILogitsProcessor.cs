using LatentLab.Models;
using static TorchSharp.torch;

namespace LatentLab.Generation;

/// <summary>
/// Rewrites next-token scores before sampling. Processors run in order on [B, V] float32 scores and return new
/// scores (they must not dispose or modify their input: the generator keeps the raw logits). Return -inf to ban a token.
/// <para>Most processors only need the ids: implement <see cref="Process(Tensor, Tensor)"/>. A processor that needs
/// more of the step (its hidden state, hook captures, which rows are still running) overrides
/// <see cref="Process(GenerationStep, Tensor)"/>, which is what the generator calls; new context goes into
/// <see cref="GenerationStep"/>, so existing processors keep compiling.</para>
/// </summary>
public interface ILogitsProcessor
{
    /// <param name="inputIds">[B, S] every token so far (left-padded prompt, then the generated tokens)</param>
    /// <param name="logits">[B, V] float32 scores for the next token</param>
    Tensor Process(Tensor inputIds, Tensor logits);

    Tensor Process(GenerationStep step, Tensor logits) => Process(step.InputIds, logits);
}

/// <summary>
/// What a processor may know about the current step. The tensors belong to the generator and are only valid
/// during the call (copy what you keep).
/// </summary>
public sealed class GenerationStep
{
    /// <summary>0 for the first new token (scored from the prefill), then 1, 2, ...</summary>
    public required int Index { get; init; }
    /// <summary>[B, S] prompt (left-padded; empty when the prompt was embeddings) followed by the generated tokens.</summary>
    public required Tensor InputIds { get; init; }
    /// <summary>[B, S] int64: 1 where <see cref="InputIds"/> holds a real token, 0 for padding (before the prompt or after a row finished).</summary>
    public required Tensor AttentionMask { get; init; }
    /// <summary>Width of the prompt part of <see cref="InputIds"/>.</summary>
    public required int PromptLength { get; init; }
    /// <summary>[B, D] final-norm output at the position whose logits are being processed (ModelOutput.Hidden).</summary>
    public required Tensor Hidden { get; init; }
    /// <summary>[B] bool: rows still generating. Finished rows' scores are ignored.</summary>
    public required Tensor Unfinished { get; init; }
    /// <summary>What the hook set captured in this step's forward (empty without capture hooks).</summary>
    public required IReadOnlyDictionary<string, Tensor> Captures { get; init; }
    public required DecoderLM Model { get; init; }
}
