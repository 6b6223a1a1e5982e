using LatentLab.Hooks;
using LatentLab.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Generation;

/// <summary>When a generation's hook set is applied: the prompt's prefill forward, the one-token decode forwards, or both.</summary>
[Flags]
public enum HookPhases { None = 0, Prefill = 1, Decode = 2, All = Prefill | Decode }

/// <summary>
/// The sampling loop: prefill the prompt once into a KV cache, then one token per step with last-only logits.
/// Each step: processors (repetition penalty, the caller's, then temperature, top-k, top-p) rewrite the scores,
/// a token is drawn (argmax when greedy), rows that hit a stop token or stop string finish and are fed padding
/// from then on. The loop ends when every row has finished or after MaxNewTokens, without a forward pass for
/// the last token.
/// </summary>
public sealed class TextGenerator
{
    readonly DecoderLM _model;

    public TextGenerator(DecoderLM model) => _model = model ?? throw new ArgumentNullException(nameof(model));

    public DecoderLM Model => _model;

    /// <summary>
    /// The processors a config implies around custom ones, in HF's order: repetition penalty, the custom processors,
    /// then (only when sampling) temperature, top-k and top-p, so custom processors see unscaled logits.
    /// </summary>
    public static IReadOnlyList<ILogitsProcessor> Processors(GenerationConfig cfg, IReadOnlyList<ILogitsProcessor>? custom = null)
    {
        var list = new List<ILogitsProcessor>();
        if (cfg.RepetitionPenalty != 1.0) list.Add(new RepetitionPenaltyProcessor(cfg.RepetitionPenalty));
        if (custom is not null) list.AddRange(custom);
        if (!cfg.Greedy)
        {
            if (cfg.Temperature != 1.0) list.Add(new TemperatureProcessor(cfg.Temperature));
            if (cfg.TopK > 0) list.Add(new TopKProcessor(cfg.TopK));
            if (cfg.TopP < 1.0) list.Add(new TopPProcessor(cfg.TopP));
        }
        return list;
    }

    /// <summary>
    /// Generates from token-id prompts of any lengths (left-padded into one batch).
    /// <paramref name="decode"/> turns a row's generated ids into text: needed for stop strings, and fills
    /// <see cref="GenerationResult.Texts"/>. <paramref name="prefix"/> is a pre-filled cache (KV-prefix injection,
    /// batch 1 or B) that the prompts continue; it is copied, not modified, so it can serve several calls.
    /// </summary>
    public GenerationResult Generate(IReadOnlyList<int[]> prompts, GenerationConfig cfg,
        Func<IReadOnlyList<int>, string>? decode = null, IReadOnlyList<ILogitsProcessor>? processors = null,
        HookSet? hooks = null, HookPhases hookPhases = HookPhases.All, KvCache? prefix = null)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0) throw new ArgumentException("no prompts given");
        int v = _model.Config.VocabSize;
        for (int b = 0; b < prompts.Count; b++)
        {
            if (prompts[b] is null || prompts[b].Length == 0) throw new ArgumentException($"prompt {b} is empty: give at least one token (e.g. BOS)");
            foreach (var id in prompts[b])
                if (id < 0 || id >= v) throw new ArgumentException($"prompt {b}: token id {id} is outside the vocabulary (size {v})");
        }
        int batch = prompts.Count, len = prompts.Max(p => p.Length);
        long pad = _model.Config.PadTokenId ?? 0;
        var ids = new long[batch * len];
        var mask = new long[batch * len];
        for (int b = 0; b < batch; b++)
        {
            int off = len - prompts[b].Length;
            for (int t = 0; t < len; t++)
            {
                bool real = t >= off;
                ids[b * len + t] = real ? prompts[b][t - off] : pad;
                mask[b * len + t] = real ? 1 : 0;
            }
        }
        using var scope = NewDisposeScope();
        var dev = _model.Device;
        var idsT = tensor(ids, dtype: ScalarType.Int64).view(batch, len).to(dev);
        var maskT = tensor(mask, dtype: ScalarType.Int64).view(batch, len).to(dev);
        var result = Run(batch, (cache, h) => _model.Forward(idsT, attentionMask: maskT, cache: cache, hooks: h, logits: LogitsMode.LastOnly),
            idsT, maskT, cfg, decode, processors, hooks, hookPhases, prefix);
        return Escape(result);
    }

    /// <summary>
    /// Generates from prompt input embeddings [B, T, D] (soft tokens, in raw embedding space like
    /// <see cref="DecoderLM.Embed"/>) with an optional [B, T] mask (1 = real; padding may be on either side).
    /// There are no prompt ids, so processors (and the repetition penalty) see only the generated tokens.
    /// </summary>
    public GenerationResult GenerateFromEmbeddings(Tensor embeds, Tensor? mask, GenerationConfig cfg,
        Func<IReadOnlyList<int>, string>? decode = null, IReadOnlyList<ILogitsProcessor>? processors = null,
        HookSet? hooks = null, HookPhases hookPhases = HookPhases.All, KvCache? prefix = null)
    {
        ArgumentNullException.ThrowIfNull(embeds);
        if (embeds.dim() != 3 || embeds.shape[2] != _model.Config.HiddenSize)
            throw new ArgumentException($"prompt embeddings must be [B, T, {_model.Config.HiddenSize}], got [{string.Join(", ", embeds.shape)}]");
        int batch = (int)embeds.shape[0];
        long len = embeds.shape[1];
        using var scope = NewDisposeScope();
        var dev = _model.Device;
        var maskT = mask?.to(ScalarType.Int64).to(dev) ?? ones(batch, len, dtype: ScalarType.Int64, device: dev);
        if (maskT.dim() != 2 || maskT.shape[0] != batch || maskT.shape[1] != len)
            throw new ArgumentException($"prompt mask must be [{batch}, {len}], got [{string.Join(", ", maskT.shape)}]");
        var realPerRow = maskT.sum(1).cpu().data<long>().ToArray();
        for (int b = 0; b < batch; b++)
            if (realPerRow[b] == 0) throw new ArgumentException($"prompt embeddings row {b} has no real position in its mask");
        var noIds = zeros(batch, 0, dtype: ScalarType.Int64, device: dev);
        var result = Run(batch, (cache, h) => _model.Forward(inputEmbeds: embeds, attentionMask: maskT, cache: cache, hooks: h, logits: LogitsMode.LastOnly),
            noIds, noIds, cfg, decode, processors, hooks, hookPhases, prefix);
        return Escape(result);
    }

    /// <summary>Result tensors were made in the public method's scope; hand them to the caller's.</summary>
    static GenerationResult Escape(GenerationResult r)
    {
        r.Scores?.MoveToOuterDisposeScope();
        r.Logits?.MoveToOuterDisposeScope();
        return r;
    }

    GenerationResult Run(int batch, Func<KvCache, HookSet?, ModelOutput> prefill, Tensor promptIds, Tensor promptMask,
        GenerationConfig cfg, Func<IReadOnlyList<int>, string>? decode, IReadOnlyList<ILogitsProcessor>? custom,
        HookSet? hooks, HookPhases hookPhases, KvCache? prefix)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        cfg.Validate();
        var config = _model.Config;
        var stopTokens = (cfg.StopTokens ?? config.EosTokenIds).ToHashSet();
        var stopStrings = cfg.StopStrings ?? Array.Empty<string>();
        if (stopStrings.Count > 0 && decode is null)
            throw new ArgumentException("stop strings need a decode delegate (token ids -> text)");
        var procs = Processors(cfg, custom);
        long pad = config.PadTokenId ?? 0;
        var dev = _model.Device;
        int promptLen = (int)promptIds.shape[1];

        var tokens = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        var finish = new FinishReason?[batch];
        var sampled = new int[batch];
        var matchedToken = new int?[batch];
        var matchedString = new string?[batch];
        var texts = new string?[batch];
        var scoreSteps = cfg.OutputScores ? new List<Tensor>() : null;
        var logitSteps = cfg.OutputLogits ? new List<Tensor>() : null;

        using var noGrad = no_grad();
        // A generator private to the call: the same seed gives the same draws whatever else used the global RNG.
        using var rng = cfg.Seed is { } seed ? new torch.Generator(unchecked((ulong)seed), dev) : null;
        using var cache = CopyCache(prefix, batch) ?? new KvCache(config.NumLayers);
        // Everything so far, for the processors; owned here (outside the step scopes) and replaced each step.
        var seq = promptIds.clone().DetachFromDisposeScope();
        var seqMask = promptMask.clone().DetachFromDisposeScope();
        long[] fed = Array.Empty<long>();
        try
        {
            for (int step = 0; step < cfg.MaxNewTokens; step++)
            {
                using var stepScope = NewDisposeScope();
                var stepHooks = hookPhases.HasFlag(step == 0 ? HookPhases.Prefill : HookPhases.Decode) ? hooks : null;
                using var output = step == 0
                    ? prefill(cache, stepHooks)
                    : _model.Forward(tensor(fed, dtype: ScalarType.Int64).view(batch, 1).to(dev), cache: cache, hooks: stepHooks, logits: LogitsMode.LastOnly);
                var logits = output.Logits!.select(1, 0);
                var running = finish.Select(f => f is null).ToArray();
                var unfinished = tensor(running).to(dev);
                var ctx = new GenerationStep
                {
                    Index = step,
                    InputIds = seq,
                    AttentionMask = seqMask,
                    PromptLength = promptLen,
                    Hidden = output.Hidden.select(1, 0),
                    Unfinished = unfinished,
                    Captures = output.Captures,
                    Model = _model,
                };
                var scores = logits;
                foreach (var p in procs)
                {
                    scores = p.Process(ctx, scores);
                    if (scores.dim() != 2 || scores.shape[0] != batch || scores.shape[1] != logits.shape[1])
                        throw new InvalidOperationException($"logits processor {p.GetType().Name} returned shape [{string.Join(", ", scores.shape)}], expected [{batch}, {logits.shape[1]}]");
                }
                CheckScores(scores.to(ScalarType.Float32), unfinished, step);
                var next = cfg.Greedy ? scores.argmax(-1) : Sample(scores, unfinished, rng);
                var picked = next.cpu().data<long>().ToArray();
                scoreSteps?.Add(scores.unsqueeze(1).detach().DetachFromDisposeScope());
                logitSteps?.Add(logits.unsqueeze(1).detach().DetachFromDisposeScope());

                fed = new long[batch];
                for (int b = 0; b < batch; b++)
                {
                    if (!running[b]) { fed[b] = pad; continue; }
                    int tok = (int)picked[b];
                    fed[b] = tok;
                    sampled[b]++;
                    if (stopTokens.Contains(tok)) { finish[b] = FinishReason.Eos; matchedToken[b] = tok; continue; }
                    tokens[b].Add(tok);
                    if (stopStrings.Count > 0 && MatchStopString(tokens[b], decode!, stopStrings) is { } hit)
                    {
                        finish[b] = FinishReason.StopString;
                        matchedString[b] = hit.Stop;
                        texts[b] = hit.Text;
                    }
                }

                var newSeq = cat(new[] { seq, tensor(fed, dtype: ScalarType.Int64).view(batch, 1).to(dev) }, 1).DetachFromDisposeScope();
                var newMask = cat(new[] { seqMask, tensor(running.Select(r => r ? 1L : 0L).ToArray()).view(batch, 1).to(dev) }, 1).DetachFromDisposeScope();
                seq.Dispose();
                seqMask.Dispose();
                (seq, seqMask) = (newSeq, newMask);
                if (finish.All(f => f is not null)) break;
            }
        }
        catch
        {
            foreach (var t in (scoreSteps ?? new()).Concat(logitSteps ?? new())) t.Dispose();
            throw;
        }
        finally
        {
            seq.Dispose();
            seqMask.Dispose();
        }

        for (int b = 0; b < batch; b++)
        {
            finish[b] ??= FinishReason.Length;
            if (decode is not null) texts[b] ??= decode(tokens[b]);
        }
        return new GenerationResult(
            tokens.Select(t => t.ToArray()).ToArray(),
            finish.Select(f => f!.Value).ToArray(),
            sampled,
            matchedToken,
            matchedString,
            decode is null ? null : texts.Select(t => t!).ToArray(),
            Stack(scoreSteps),
            Stack(logitSteps));
    }

    static Tensor Sample(Tensor scores, Tensor unfinished, torch.Generator? rng)
    {
        var probs = scores.to(ScalarType.Float32).softmax(-1);
        // Finished rows are discarded, but multinomial rejects a NaN row (say, a processor that bans everything there).
        probs = where(unfinished.unsqueeze(1), probs, ones_like(probs));
        return multinomial(probs, 1, generator: rng).squeeze(-1);
    }

    static Tensor? Stack(List<Tensor>? steps)
    {
        if (steps is null || steps.Count == 0) return null;
        var all = cat(steps, 1);
        foreach (var t in steps) t.Dispose();
        return all;
    }

    static void CheckScores(Tensor scores, Tensor unfinished, int step)
    {
        var broken = scores.isnan().any(-1)
            .logical_or((scores == float.PositiveInfinity).any(-1))
            .logical_or((scores > float.NegativeInfinity).any(-1).logical_not())
            .logical_and(unfinished);
        if (!broken.any().item<bool>()) return;
        long row = broken.to(ScalarType.Int64).argmax().item<long>();
        throw new InvalidOperationException(
            $"generation step {step}, row {row}: the scores after the logits processors have no finite entry or contain NaN/+inf");
    }

    /// <summary>
    /// Looks for the earliest stop string in the decoded continuation. On a hit, cuts the tokens back to those whose
    /// decoding ends at or before the stop string and returns the text before it. Checked after every token, so
    /// the newest token always reaches into the stop string and is dropped.
    /// </summary>
    static (string Stop, string Text)? MatchStopString(List<int> tokens, Func<IReadOnlyList<int>, string> decode, IReadOnlyList<string> stops)
    {
        var text = decode(tokens);
        int at = -1;
        string? which = null;
        foreach (var s in stops)
        {
            int i = text.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && (at < 0 || i < at)) (at, which) = (i, s);
        }
        if (which is null) return null;
        int keep = tokens.Count - 1;
        while (keep > 0 && decode(tokens.GetRange(0, keep)).Length > at) keep--;
        tokens.RemoveRange(keep, tokens.Count - keep);
        return (which, text[..at]);
    }

    /// <summary>
    /// A copy of a pre-filled cache (batch 1 is broadcast to the prompts' batch). The copy shares the prefix
    /// tensors, which the cache never writes in place, so the caller's cache stays as it was.
    /// </summary>
    KvCache? CopyCache(KvCache? prefix, int batch)
    {
        if (prefix is null) return null;
        if (prefix.NumLayers != _model.Config.NumLayers)
            throw new ArgumentException($"prefix cache has {prefix.NumLayers} layers, model has {_model.Config.NumLayers}");
        var copy = new KvCache(prefix.NumLayers);
        if (prefix.Length == 0) return copy;
        using var scope = NewDisposeScope();
        Tensor Batch(Tensor t, string what)
        {
            if (t.shape[0] == batch) return t;
            if (t.shape[0] == 1)
            {
                var shape = t.shape.ToArray();
                shape[0] = batch;
                return t.expand(shape);
            }
            throw new ArgumentException($"prefix cache {what} has batch {t.shape[0]}, the prompts {batch}");
        }
        for (int l = 0; l < prefix.NumLayers; l++)
        {
            var k = prefix.Keys(l) ?? throw new ArgumentException($"prefix cache layer {l} is empty");
            var v = prefix.Values(l)!;
            copy.Append(l, Batch(k, $"layer {l} keys"), Batch(v, $"layer {l} values"));
        }
        copy.AppendMask(Batch(prefix.Mask!, "mask").clone());
        copy.CopyLayout(prefix, t => Batch(t, "layout"));
        return copy;
    }
}
