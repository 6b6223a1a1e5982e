using LatentLab.Generation;
using LatentLab.Models;
using static TorchSharp.torch;

namespace LatentLab.Teacher;

/// <summary>One greedy thinking continuation: the ids after the prompt (the stop token included when one was met),
/// the tokens the model was run on for it (sampled and forced), and whether it ended with end-of-turn.</summary>
public sealed record ThinkingOutcome(int[] Continuation, int Steps, bool Finished);

/// <summary>
/// Greedy thinking for a model trained on bottleneck traces (<see cref="TraceFormat.Slots"/> &gt; 0). The thought is
/// generated until the model opens the slots or closes thinking; then the slots (bottleneck) or nothing (full
/// trace) and the end marker are forced, and the answer is decoded from a KV cache that hides the thought from
/// the marker on (<see cref="SequenceLayout"/>): the answer of a bottleneck trace can only read the slots.
/// </summary>
public static class ThinkingGeneration
{
    /// <param name="starts">Prompts, or prompts followed by a thought to continue (reference traces).</param>
    public static IReadOnlyList<ThinkingOutcome> Generate(DecoderLM model, TraceFormat fmt, IReadOnlyList<int[]> starts,
        IReadOnlyList<int> promptLengths, bool bottleneck, int maxThought, int maxAnswer, bool continueThought = true)
    {
        if (fmt.SlotId is not int slot) throw new InvalidOperationException($"{fmt}: no bottleneck slots, use plain generation");
        var stops = fmt.StopTokens;
        int thinkEnd = fmt.SlotsAndEnd()[^1];
        var gen = new TextGenerator(model);
        var outcomes = new ThinkingOutcome?[starts.Count];
        var thoughts = new int[starts.Count][];
        var steps = new int[starts.Count];
        using var _ = no_grad();
        if (continueThought)
        {
            using var r = gen.Generate(starts, new GenerationConfig(MaxNewTokens: maxThought, StopTokens: [slot, thinkEnd, .. stops]));
            for (int i = 0; i < starts.Count; i++)
            {
                steps[i] = starts[i].Length + r.Sampled[i];
                var thought = starts[i][promptLengths[i]..].Concat(r.Tokens[i]).ToArray();
                if (r.MatchedStopToken[i] is int stop && (stop == slot || stop == thinkEnd)) thoughts[i] = thought;
                else outcomes[i] = new ThinkingOutcome([.. thought, .. r.MatchedStopToken[i] is int s ? new[] { s } : []], steps[i], false);
            }
        }
        else
            for (int i = 0; i < starts.Count; i++) { thoughts[i] = starts[i][promptLengths[i]..]; steps[i] = starts[i].Length; }

        var open = Enumerable.Range(0, starts.Count).Where(i => thoughts[i] is not null).ToList();
        if (open.Count > 0)
        {
            var between = bottleneck ? fmt.SlotsAndEnd()[..^1] : [];
            var prefixes = open.Select(i => starts[i][..promptLengths[i]].Concat(thoughts[i]).Concat(between).ToArray()).ToList();
            using var r = Answer(model, fmt, prefixes, open.Select(i => promptLengths[i]).ToList(), thinkEnd, maxAnswer);
            for (int j = 0; j < open.Count; j++)
            {
                int i = open[j];
                int[] cont = [.. thoughts[i], .. between, thinkEnd, .. r.Tokens[j], .. r.MatchedStopToken[j] is int s ? new[] { s } : []];
                outcomes[i] = new ThinkingOutcome(cont, steps[i] + between.Length + r.Sampled[j], r.MatchedStopToken[j] is not null);
            }
        }
        return outcomes.Select(o => o!).ToList();
    }

    /// <summary>
    /// Prefills each prefix (prompt, thought, slots) with its layout into one left-padded cache, hides the thought
    /// from the next column on, and decodes greedily after <paramref name="thinkEnd"/>.
    /// </summary>
    static GenerationResult Answer(DecoderLM model, TraceFormat fmt, IReadOnlyList<int[]> prefixes, IReadOnlyList<int> promptLengths,
        int thinkEnd, int maxAnswer)
    {
        using var scope = NewDisposeScope();
        int b = prefixes.Count, t = prefixes.Max(p => p.Length);
        long pad = model.Config.PadTokenId ?? 0;
        var ids = new long[b * t];
        var mask = new long[b * t];
        var layouts = new List<SequenceLayout?>();
        for (int i = 0; i < b; i++)
        {
            int off = t - prefixes[i].Length;
            for (int j = 0; j < t; j++)
            {
                ids[i * t + j] = j >= off ? prefixes[i][j - off] : pad;
                mask[i * t + j] = j >= off ? 1 : 0;
            }
            // The layout of the whole trace (the marker included) tells which keys the marker on may not see.
            layouts.Add(fmt.Layout([.. prefixes[i], thinkEnd], promptLengths[i])?.Take(prefixes[i].Length));
        }
        var dev = model.Device;
        var (positions, expiry) = SequenceLayout.Batch(layouts, prefixes.Select(p => p.Length).ToList(), t, leftPad: true, device: dev);
        using var cache = new KvCache(model.Config.NumLayers);
        using (model.Forward(tensor(ids).view(b, t).to(dev), attentionMask: tensor(mask).view(b, t).to(dev), cache: cache,
                   logits: LogitsMode.None, positions: positions.to(dev), keyExpiry: expiry.to(dev))) { }
        var gen = new TextGenerator(model);
        var r = gen.Generate(Enumerable.Repeat(new[] { thinkEnd }, b).ToList(),
            new GenerationConfig(MaxNewTokens: maxAnswer, StopTokens: fmt.StopTokens.ToArray()), prefix: cache);
        r.Scores?.MoveToOuterDisposeScope();
        r.Logits?.MoveToOuterDisposeScope();
        return r;
    }
}
