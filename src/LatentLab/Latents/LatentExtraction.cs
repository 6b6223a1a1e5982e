using System.Diagnostics;
using System.Text.Json;
using LatentLab.Generation;
using LatentLab.Hooks;
using LatentLab.IO;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using LatentLab.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Latents;

/// <summary>
/// Samples with their states, in memory: <see cref="Pre"/> [n, D] and <see cref="Post"/> [n, K, D], row i belonging to
/// <c>Samples[i]</c> (verified or not; see <see cref="Verified"/>). Dispose to free the tensors.
/// </summary>
public sealed record LatentSet(IReadOnlyList<TraceSample> Samples, Tensor Pre, Tensor Post, IReadOnlyList<SkippedProblem> Skipped) : IDisposable
{
    /// <summary>The verified rows only (new tensors; this set keeps its own).</summary>
    public LatentSet Verified()
    {
        var keep = Samples.Select((s, i) => (s, i)).Where(p => p.s.Verified).ToList();
        using var idx = tensor(keep.Select(p => (long)p.i).ToArray(), dtype: ScalarType.Int64);
        return new LatentSet(keep.Select(p => p.s).ToList(), Pre.index_select(0, idx), Post.index_select(0, idx), Skipped);
    }

    public void Dispose()
    {
        Pre.Dispose();
        Post.Dispose();
    }
}

/// <summary>
/// Phase 0 of the shortcut study: run the teacher on problems, keep its trace, and read h_pre (last prompt token)
/// and h_post (K states ending at the end-of-thinking marker) at one hook point. The states come from one
/// teacher-forced forward pass over the trace cut right after the marker, so no answer token is ever in the input:
/// the leak rule holds by construction and is checked again (<see cref="LeakRule"/>) on every sample.
/// </summary>
public static class LatentExtraction
{
    /// <summary>In memory, no store: traces, answers, verification and states for every problem that closed its thinking.</summary>
    public static LatentSet Samples(DecoderLM model, ITokenizer tok, TraceFormat fmt, IReadOnlyList<TaskProblem> problems,
        ExtractionOptions o, Action<ExtractionProgress>? progress = null)
    {
        Check(model, tok, fmt, o);
        o = ResolveCompute(model, o, null);
        using var compute = UseCompute(model, o.Compute);
        var (samples, skipped) = Traces(model, fmt, problems, o, 0,
            (done, verified, skip) => progress?.Invoke(new ExtractionProgress(done, problems.Count, verified, skip, "traces")));
        var (pre, post) = States(model, samples, o.Point, o.K, TorchRuntime.ParseDType(o.DType), o.BatchSize, fmt);
        return new LatentSet(samples, pre, post, skipped);
    }

    /// <summary>
    /// Writes (or resumes) a latent store in <paramref name="outDir"/> for this job's shard of
    /// <paramref name="problems"/> (<see cref="ExtractionOptions.Shard"/>; sample indices are positions in the whole
    /// list). Files of <see cref="ExtractionOptions.RowsPerFile"/> problems are written atomically; files already
    /// complete and intact are kept, the rest redone: so a finished store in which a file has been damaged since is
    /// repaired by redoing only that file (reported through <paramref name="progress"/> as stage "damaged").
    /// A folder made with other settings is refused.
    /// </summary>
    public static LatentManifest Run(DecoderLM model, ITokenizer tok, TraceFormat fmt, IReadOnlyList<TaskProblem> problems,
        ExtractionOptions o, string outDir, Action<ExtractionProgress>? progress = null, CancellationToken cancel = default)
    {
        Check(model, tok, fmt, o);
        ArgumentException.ThrowIfNullOrWhiteSpace(outDir);
        o = ResolveCompute(model, o, outDir);
        var sw = Stopwatch.StartNew();
        var settings = StoreSettings.For(model, fmt, problems, o);
        var shardName = o.Shard.ToString();
        Directory.CreateDirectory(outDir);

        var known = new Dictionary<(int, int), StoreFile>();
        if (File.Exists(Path.Combine(outDir, LatentManifest.FileName)))
        {
            var existing = LatentManifest.Read(outDir);
            if (existing.Settings.Difference(settings) is { } diff)
                throw new InvalidDataException($"{outDir} holds a latent store made with other settings ({diff}); write to a new folder");
            if (!existing.Shards.SequenceEqual(new[] { shardName }))
                throw new InvalidDataException($"{outDir} holds shard(s) {string.Join(", ", existing.Shards)}, not {shardName}; write to a new folder");
            if (existing.Complete)
            {
                if (LatentStore.Check(outDir).Count == 0)
                {
                    progress?.Invoke(new ExtractionProgress(existing.Rows + existing.Skipped.Count, existing.Rows + existing.Skipped.Count,
                        existing.Verified, existing.Skipped.Count, "already complete"));
                    return existing;
                }
                foreach (var damaged in LatentStore.Reopen(outDir, existing))
                    progress?.Invoke(new ExtractionProgress(0, 0, 0, 0, "damaged", $"{damaged}; extracting it again"));
                existing = LatentManifest.Read(outDir);
            }
            foreach (var f in existing.Files) known[(f.Start, f.End)] = f;
        }
        // Keeps the checksums of files already written, so a resume can tell an intact one from a damaged one.
        new LatentManifest { Settings = settings, Shards = [shardName], Files = known.Values.OrderBy(f => f.Start).ToList() }.Write(outDir);

        var (start, end) = o.Shard.Range(problems.Count);
        int total = end - start, done = 0, verified = 0, skippedCount = 0;
        var chunks = new List<LatentStore.Chunk>();
        using var compute = UseCompute(model, o.Compute);
        for (int a = start; a < end; a += o.RowsPerFile)
        {
            cancel.ThrowIfCancellationRequested();
            int b = Math.Min(end, a + o.RowsPerFile);
            var file = LatentStore.TryReadFile(outDir, a, b, settings, known.GetValueOrDefault((a, b)), out var damage);
            if (damage is not null)
                progress?.Invoke(new ExtractionProgress(done, total, verified, skippedCount, "damaged", $"{damage}; extracting it again"));
            if (file is null)
            {
                var chunk = problems.Skip(a).Take(b - a).ToList();
                int doneBefore = done, verifiedBefore = verified, skippedBefore = skippedCount;
                var (samples, skipped) = Traces(model, fmt, chunk, o, a, (d, v, s) =>
                {
                    cancel.ThrowIfCancellationRequested();
                    progress?.Invoke(new ExtractionProgress(doneBefore + d, total, verifiedBefore + v, skippedBefore + s, "traces"));
                });
                var (pre, post) = States(model, samples, o.Point, o.K, TorchRuntime.ParseDType(o.DType), o.BatchSize, fmt);
                using (pre)
                using (post)
                    file = LatentStore.WriteFile(outDir, a, b, samples, skipped, pre, post);
                known[(a, b)] = file.File;
                new LatentManifest { Settings = settings, Shards = [shardName], Files = known.Values.OrderBy(f => f.Start).ToList() }.Write(outDir);
            }
            chunks.Add(file);
            done += b - a;
            verified += file.Samples.Count(s => s.Verified);
            skippedCount += file.Skipped.Count;
            progress?.Invoke(new ExtractionProgress(done, total, verified, skippedCount, "written"));
        }

        return LatentStore.Finish(outDir, settings, [shardName], chunks, sw.Elapsed.TotalSeconds);
    }

    static void Check(DecoderLM model, ITokenizer tok, TraceFormat fmt, ExtractionOptions o)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tok);
        ArgumentNullException.ThrowIfNull(fmt);
        ArgumentNullException.ThrowIfNull(o);
        o.Validate();
        if (tok.Hash != fmt.Tokenizer.Hash)
            throw new ArgumentException("the tokenizer given differs from the trace format's tokenizer");
        if (tok.VocabSize > model.Config.VocabSize)
            throw new ArgumentException($"the tokenizer has {tok.VocabSize} ids but the model's vocabulary is {model.Config.VocabSize}");
        HookPoint.Parse(o.Point).Resolve(model.Config.NumLayers);
    }

    /// <summary>
    /// `auto` becomes a dtype here, once: the one an existing store in <paramref name="outDir"/> was made with (a resumed
    /// store keeps its compute dtype), else the library's measured choice for this model.
    /// </summary>
    static ExtractionOptions ResolveCompute(DecoderLM model, ExtractionOptions o, string? outDir)
    {
        if (o.Compute is null || !ComputePolicy.IsAuto(o.Compute)) return o;
        if (outDir is not null && File.Exists(Path.Combine(outDir, LatentManifest.FileName)))
            return o with { Compute = LatentManifest.Read(outDir).Settings.Compute };
        return o with { Compute = ComputePolicy.Resolve(o.Compute, model.Device, ComputePolicy.Shapes(model.Config)).Name };
    }

    /// <summary>Sets the model's activation dtype for the extraction and puts the old one back afterwards.</summary>
    static IDisposable UseCompute(DecoderLM model, string? compute)
    {
        var old = model.ComputeDType;
        if (compute is not null) model.ComputeDType = TorchRuntime.ParseDType(compute);
        return new Restore(() => model.ComputeDType = old);
    }

    sealed class Restore(Action undo) : IDisposable
    {
        public void Dispose() => undo();
    }

    /// <summary>
    /// The traces: the teacher's own greedy continuation of each prompt, or (reference) the task's steps up to the
    /// end-of-thinking marker followed by the teacher's greedy answer. Problems whose thinking never closes, or whose
    /// trace is too short for K post states, are returned as skipped. <paramref name="firstIndex"/> is the index of
    /// problems[0] in the caller's list; <paramref name="batchDone"/> gets (problems done, verified, skipped).
    /// </summary>
    public static (IReadOnlyList<TraceSample> Samples, IReadOnlyList<SkippedProblem> Skipped) Traces(DecoderLM model, TraceFormat fmt,
        IReadOnlyList<TaskProblem> problems, ExtractionOptions o, int firstIndex = 0, Action<int, int, int>? batchDone = null)
    {
        o.Validate();
        var gen = new TextGenerator(model);
        var stops = fmt.StopTokens;
        var samples = new List<TraceSample>();
        var skipped = new List<SkippedProblem>();
        using var _ = no_grad();
        for (int at = 0; at < problems.Count; at += o.BatchSize)
        {
            var chunk = problems.Skip(at).Take(o.BatchSize).ToList();
            var starts = new List<int[]>();
            var promptIds = new List<int[]>();
            int maxNew = 1;
            foreach (var p in chunk)
            {
                var prompt = fmt.PromptIds(p, thinking: true);
                promptIds.Add(prompt);
                if (o.Trace == TraceMode.Own)
                {
                    starts.Add(prompt);
                    maxNew = Math.Max(maxNew, o.MaxNewTokens ?? fmt.MaxNewTokens(p));
                }
                else
                {
                    var (ids, promptLength) = fmt.Sequence(p, thinking: true);
                    var pos = fmt.Locate(ids, promptLength)
                        ?? throw new InvalidOperationException($"{fmt}: the reference trace of '{p.Prompt}' has no end-of-thinking marker after its prompt");
                    starts.Add(ids[..(pos.Post + 1)]);
                    maxNew = Math.Max(maxNew, o.MaxNewTokens ?? ids.Length - pos.Post - 1 + 16);
                }
            }
            // A bottleneck teacher thinks through its slots, its answer decoded behind the bottleneck.
            var bottleneck = fmt.Slots == 0 ? null : ThinkingGeneration.Generate(model, fmt,
                o.Trace == TraceMode.Own ? promptIds : chunk.Select((p, i) => promptIds[i].Concat(fmt.Tokenizer.Encode(fmt.Thinking(p))).ToArray()).ToList(),
                promptIds.Select(p => p.Length).ToList(), bottleneck: true, maxNew, chunk.Max(p => fmt.Tokenizer.Encode(p.Answer).Length) + 4,
                continueThought: o.Trace == TraceMode.Own);
            using var outcome = bottleneck is null ? gen.Generate(starts, new GenerationConfig(MaxNewTokens: maxNew, StopTokens: stops)) : null;
            for (int i = 0; i < chunk.Count; i++)
            {
                int index = firstIndex + at + i;
                int[] trace = bottleneck is not null ? [.. promptIds[i], .. bottleneck[i].Continuation]
                    : [.. starts[i], .. outcome!.Tokens[i], .. outcome.MatchedStopToken[i] is int stop ? new[] { stop } : []];
                var sample = MakeSample(fmt, index, chunk[i], promptIds[i], trace, o.K, out var reason);
                if (sample is null) skipped.Add(new SkippedProblem(index, reason!));
                else samples.Add(sample);
            }
            batchDone?.Invoke(at + chunk.Count, samples.Count(s => s.Verified), skipped.Count);
        }
        return (samples, skipped);
    }

    /// <summary>A sample from a finished trace, or null with the reason it cannot be one.</summary>
    public static TraceSample? MakeSample(TraceFormat fmt, int index, TaskProblem problem, int[] promptIds, int[] traceIds, int k, out string? reason)
    {
        var pos = fmt.Locate(traceIds, promptIds.Length);
        if (pos is null)
        {
            reason = "thinking never closed";
            return null;
        }
        var (pre, post, firstAnswer) = pos.Value;
        if (post - k + 1 <= pre)
        {
            reason = $"thinking has {post - pre} token(s), fewer than K = {k}";
            return null;
        }
        var answer = fmt.ParseAnswer(traceIds[promptIds.Length..], thinking: true);
        bool ok = answer is not null && fmt.Family.Verify(problem, answer);
        var s = new TraceSample(index, problem, promptIds, traceIds, pre, post, firstAnswer, answer, ok);
        LeakRule.Check(s, k);
        reason = null;
        return s;
    }

    /// <summary>
    /// h_pre [n, D] and h_post [n, K, D] at <paramref name="point"/> for given samples, in <paramref name="dtype"/> on the CPU.
    /// Each row's forward pass covers its trace only up to PostPosition, so tokens from the first answer token on
    /// cannot affect the states (and <see cref="LeakRule.Check"/> refuses any sample whose positions would).
    /// </summary>
    /// <param name="format">The trace format, for bottleneck traces (their slots take positions as if the thought were absent).</param>
    public static (Tensor Pre, Tensor Post) States(DecoderLM model, IReadOnlyList<TraceSample> samples, string point, int k,
        ScalarType dtype = ScalarType.Float32, int batchSize = 64, TraceFormat? format = null)
    {
        ArgumentNullException.ThrowIfNull(samples);
        foreach (var s in samples) LeakRule.Check(s, k);
        int d = model.Config.HiddenSize;
        if (samples.Count == 0) return (zeros(0, d, dtype: dtype), zeros(0, k, d, dtype: dtype));
        var hooks = new HookSet([HookSpec.Capture(point)]);
        long pad = model.Config.PadTokenId ?? 0;
        var pres = new List<Tensor>();
        var posts = new List<Tensor>();
        try
        {
            using var _ = no_grad();
            for (int at = 0; at < samples.Count; at += batchSize)
            {
                using var scope = NewDisposeScope();
                var chunk = samples.Skip(at).Take(batchSize).ToList();
                int b = chunk.Count;
                // Each row stops at its post position: nothing from the answer on enters the forward pass.
                var cut = chunk.Select(s => s.TraceIds[..(s.PostPosition + 1)]).ToList();
                var (ids, mask) = TokenBatch.RightPad(cut, pad);
                var where = chunk.SelectMany(s => LeakRule.TargetPositions(s, k).Select(p => (long)p)).ToArray();
                var dev = model.Device;
                Tensor? positions = null, expiry = null;
                if (format?.Slots > 0)
                    (positions, expiry) = Models.SequenceLayout.Batch(chunk.Select((s, i) => format.Layout(cut[i], s.PromptIds.Length)).ToList(),
                        cut.Select(c => c.Length).ToList(), (int)ids.shape[1]);
                using var output = model.Forward(ids.to(dev), attentionMask: mask.to(dev),
                    hooks: hooks, logits: LogitsMode.None, positions: positions?.to(dev), keyExpiry: expiry?.to(dev));
                var h = output.Capture(HookSpec.Capture(point).Key);
                var idx = tensor(where).view(b, k + 1, 1).expand(b, k + 1, d).to(dev);
                var picked = h.gather(1, idx).to(dtype).cpu();
                pres.Add(picked.select(1, 0).contiguous().DetachFromDisposeScope());
                posts.Add(picked.narrow(1, 1, k).contiguous().DetachFromDisposeScope());
            }
            return (cat(pres, 0), cat(posts, 0));
        }
        finally
        {
            foreach (var t in pres.Concat(posts)) t.Dispose();
        }
    }
}
