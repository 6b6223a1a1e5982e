using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Teacher;
using LatentLab.Tensors;
using LatentLab.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>
/// q(h_pre) → the keys and values of a bottleneck teacher's k slots at every layer (keys after RoPE at the slots'
/// positions, as the cache holds them). A residual MLP in standardised space: inputs and targets are standardised per
/// element from the training set, and the output layer starts at zero, so an untrained predictor puts the mean
/// training slot cache there (the floor arm) and training moves it from there.
/// With <see cref="ReadsPrompt"/> it reads the hook point's states at every prompt position ([B, P, D], the whole state
/// before thinking, not only its last token): k learned slot queries attend over them, and each slot's keys and values
/// come out of its own query's result.
/// </summary>
public sealed class KvPrefixPredictor : nn.Module<Tensor, Tensor>
{
    public int D { get; }
    public int Layers { get; }
    public int KvHeads { get; }
    public int Slots { get; }
    public int HeadDim { get; }
    /// <summary>Numbers per problem: layers × (keys, values) × kv_heads × slots × head_dim.</summary>
    public long Width => 2L * Layers * KvHeads * Slots * HeadDim;
    /// <summary>Input is the prompt's states at every position ([B, P, D] plus a [B, P] mask), not h_pre alone.</summary>
    public bool ReadsPrompt { get; }

    readonly Tensor pre_mean, pre_std, kv_mean, kv_std;
    readonly Linear input;
    readonly ModuleList<nn.Module<Tensor, Tensor>> blocks;
    readonly LayerNorm out_norm;
    readonly Linear output;
    readonly Parameter? queries;
    readonly Linear? keys;

    public KvPrefixPredictor(int d, int layers, int kvHeads, int slots, int headDim, int hidden = 512, int depth = 2, bool readsPrompt = false) : base("kv_prefix_predictor")
    {
        if (d < 1 || layers < 1 || kvHeads < 1 || slots < 1 || headDim < 1 || hidden < 1 || depth < 0)
            throw new ArgumentException($"kv-prefix predictor: sizes must be positive (d {d}, layers {layers}, kv heads {kvHeads}, slots {slots}, head dim {headDim}, hidden {hidden}, depth {depth})");
        (D, Layers, KvHeads, Slots, HeadDim, ReadsPrompt) = (d, layers, kvHeads, slots, headDim, readsPrompt);
        pre_mean = zeros(d);
        pre_std = ones(d);
        kv_mean = zeros(Width);
        kv_std = ones(Width);
        input = nn.Linear(d, hidden);
        blocks = new ModuleList<nn.Module<Tensor, Tensor>>();
        for (int i = 0; i < depth; i++) blocks.Add(new ResidualMlp(hidden, 0));
        out_norm = nn.LayerNorm(hidden);
        // One output row per slot when reading the prompt (each slot's query makes its own keys/values), else all at once.
        output = nn.Linear(hidden, readsPrompt ? Width / slots : Width);
        if (readsPrompt)
        {
            queries = nn.Parameter(randn(slots, hidden) * 0.02);
            keys = nn.Linear(hidden, hidden);
        }
        using (no_grad())
        {
            output.weight!.zero_();
            output.bias!.zero_();
        }
        RegisterComponents();
    }

    public static KvPrefixPredictor For(DecoderLM teacher, int slots, int hidden = 512, int depth = 2, bool readsPrompt = false)
    {
        var c = teacher.Config;
        return new KvPrefixPredictor(c.HiddenSize, c.NumLayers, c.NumKvHeads, slots, c.HeadDim, hidden, depth, readsPrompt);
    }

    /// <summary>Per-layer (keys, values), each [N, kv_heads, k, head_dim], as one [N, Width] float32 matrix.</summary>
    public static Tensor Flatten(IReadOnlyList<(Tensor Keys, Tensor Values)> kv)
    {
        using var scope = NewDisposeScope();
        long n = kv[0].Keys.shape[0];
        return cat(kv.SelectMany(x => new[] { x.Keys.reshape(n, -1), x.Values.reshape(n, -1) }).Select(t => t.to(ScalarType.Float32)).ToList(), 1)
            .MoveToOuterDisposeScope();
    }

    /// <summary>The inverse of <see cref="Flatten"/> (views of <paramref name="flat"/>, gradient kept).</summary>
    public IReadOnlyList<(Tensor Keys, Tensor Values)> Unflatten(Tensor flat)
    {
        if (flat.dim() != 2 || flat.shape[1] != Width) throw new ArgumentException($"kv-prefix predictor: expected [N, {Width}], got [{string.Join(",", flat.shape)}]");
        long n = flat.shape[0], one = (long)KvHeads * Slots * HeadDim;
        return Enumerable.Range(0, Layers).Select(l =>
            (flat.narrow(1, 2 * l * one, one).reshape(n, KvHeads, Slots, HeadDim),
             flat.narrow(1, (2 * l + 1) * one, one).reshape(n, KvHeads, Slots, HeadDim))).ToList();
    }

    /// <param name="pre">h_pre [N, D]; with <see cref="ReadsPrompt"/>, the real prompt positions' states stacked as [M, D].</param>
    public void FitStandardizer(Tensor pre, Tensor flat)
    {
        if (pre.dim() != 2 || pre.shape[1] != D || flat.dim() != 2 || flat.shape[1] != Width || (!ReadsPrompt && flat.shape[0] != pre.shape[0]))
            throw new ArgumentException($"kv-prefix predictor: expected pre [N, {D}] and slot cache [N, {Width}], got [{string.Join(",", pre.shape)}] and [{string.Join(",", flat.shape)}]");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        pre_mean.copy_(pre.to(ScalarType.Float32).mean([0]));
        pre_std.copy_(pre.to(ScalarType.Float32).std(0).clamp_min(1e-6));
        kv_mean.copy_(flat.to(ScalarType.Float32).mean([0]));
        kv_std.copy_(flat.to(ScalarType.Float32).std(0).clamp_min(1e-6));
    }

    public Tensor StandardizePre(Tensor pre) => (pre.to(ScalarType.Float32).to(pre_mean.device) - pre_mean) / pre_std;
    public Tensor StandardizeKv(Tensor flat) => (flat.to(ScalarType.Float32).to(kv_mean.device) - kv_mean) / kv_std;
    public Tensor DestandardizeKv(Tensor z) => z * kv_std + kv_mean;

    /// <summary>Standardised h_pre [B, D] → standardised slot cache [B, Width].</summary>
    public override Tensor forward(Tensor z) => Forward(z, null);

    /// <summary>Standardised input (h_pre [B, D], or prompt states [B, P, D] with their [B, P] mask) → standardised slot cache [B, Width].</summary>
    public Tensor Forward(Tensor z, Tensor? mask)
    {
        if (!ReadsPrompt)
        {
            var x = input.forward(z);
            foreach (var b in blocks) x = b.forward(x);
            return output.forward(out_norm.forward(x));
        }
        if (z.dim() != 3 || z.shape[2] != D) throw new ArgumentException($"kv-prefix predictor: expected prompt states [B, P, {D}], got [{string.Join(",", z.shape)}]");
        long batch = z.shape[0];
        var h = input.forward(z);                                                     // [B, P, H]
        var scores = queries!.unsqueeze(0).matmul(keys!.forward(h).transpose(1, 2)) / Math.Sqrt(h.shape[2]); // [B, k, P]
        if (mask is not null) scores = scores.masked_fill(mask.unsqueeze(1).eq(0), float.NegativeInfinity);
        var y = scores.softmax(-1).matmul(h) + queries.unsqueeze(0);                   // [B, k, H]
        foreach (var b in blocks) y = b.forward(y);
        // [B, k, layers·2·kv_heads·head_dim] → the flat layout [B, layers, 2, kv_heads, k, head_dim].
        return output.forward(out_norm.forward(y)).reshape(batch, Slots, Layers, 2, KvHeads, HeadDim)
            .permute(0, 2, 3, 4, 1, 5).reshape(batch, Width);
    }

    /// <summary>Raw prompt states [N, P, D] and their mask → predicted per-layer slot keys and values (float32, CPU, no gradient).</summary>
    public IReadOnlyList<(Tensor Keys, Tensor Values)> Predict(Tensor states, Tensor mask)
    {
        using var _ = no_grad();
        bool was = training;
        eval();
        try
        {
            using var scope = NewDisposeScope();
            var flat = DestandardizeKv(Forward(StandardizePre(states), mask.to(pre_mean.device))).cpu();
            return Unflatten(flat).Select(kv => (kv.Keys.contiguous().DetachFromDisposeScope(), kv.Values.contiguous().DetachFromDisposeScope())).ToList();
        }
        finally { if (was) train(); }
    }

    /// <summary>Either input kind → predicted per-layer slot keys and values (float32, CPU, no gradient).</summary>
    public IReadOnlyList<(Tensor Keys, Tensor Values)> Predict(KvInput x) => x.Mask is { } m ? Predict(x.States, m) : Predict(x.States);

    /// <summary>Raw h_pre [N, D] → predicted per-layer slot keys and values (float32, CPU, no gradient), in batches.</summary>
    public IReadOnlyList<(Tensor Keys, Tensor Values)> Predict(Tensor pre, int batchSize = 512)
    {
        if (ReadsPrompt) throw new InvalidOperationException("this kv-prefix predictor reads the prompt's states: call Predict(states, mask)");
        using var _ = no_grad();
        bool was = training;
        eval();
        try
        {
            var parts = new List<Tensor>();
            for (long s = 0; s < pre.shape[0]; s += batchSize)
            {
                using var scope = NewDisposeScope();
                var chunk = pre.narrow(0, s, Math.Min(batchSize, pre.shape[0] - s));
                parts.Add(DestandardizeKv(forward(StandardizePre(chunk))).cpu().DetachFromDisposeScope());
            }
            using var flat = cat(parts, 0);
            foreach (var p in parts) p.Dispose();
            return Unflatten(flat).Select(kv => (kv.Keys.contiguous(), kv.Values.contiguous())).ToList();
        }
        finally { if (was) train(); }
    }
}

/// <summary>
/// What a KV-prefix predictor reads for N problems: h_pre [N, D] (Mask null), or the hook point's states at every
/// prompt position, right-padded to [N, P, D] with their [N, P] mask (1 = a real position).
/// </summary>
public sealed record KvInput(Tensor States, Tensor? Mask) : IDisposable
{
    public bool IsPrompt => Mask is not null;
    public long Count => States.shape[0];
    public KvInput Rows(IReadOnlyList<int> idx) => new(ArmsCommon.Rows(States, idx), Mask is null ? null : ArmsCommon.Rows(Mask, idx));
    /// <summary>Every real position's state, [M, D] (what the standardiser is fitted on).</summary>
    public Tensor RealStates() => Mask is null ? States.alias() : States.reshape(-1, States.shape[2]).index_select(0, Mask.reshape(-1).nonzero().squeeze(1));

    /// <summary>Each prompt's state at its last real position, [N, D]: h_pre.</summary>
    public Tensor LastStates()
    {
        if (Mask is null) return States.alias();
        using var scope = NewDisposeScope();
        var last = (Mask.sum(1) - 1).view(-1, 1, 1).expand(-1, 1, States.shape[2]);
        return States.gather(1, last).squeeze(1).MoveToOuterDisposeScope();
    }

    /// <summary>The hook point's states at every position of each prompt (no gradient, float32, CPU), right-padded.</summary>
    public static KvInput Prompts(DecoderLM model, IReadOnlyList<int[]> prompts, string point, int batchSize = 128)
    {
        int p = prompts.Max(x => x.Length), d = model.Config.HiddenSize;
        var states = zeros(prompts.Count, p, d);
        var mask = zeros(prompts.Count, p, dtype: ScalarType.Int64);
        using var _ = no_grad();
        for (int start = 0; start < prompts.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var chunk = prompts.Skip(start).Take(batchSize).ToList();
            var (ids, m) = TokenBatch.RightPad(chunk, model.Config.PadTokenId ?? 0);
            using var output = model.Forward(ids.to(model.Device), attentionMask: m.to(model.Device),
                hooks: new Hooks.HookSet(new[] { Hooks.HookSpec.Capture(point) }), logits: LogitsMode.None);
            var h = output.Capture(point).to(ScalarType.Float32).cpu();
            states.narrow(0, start, chunk.Count).narrow(1, 0, h.shape[1]).copy_(h);
            mask.narrow(0, start, chunk.Count).narrow(1, 0, m.shape[1]).copy_(m);
        }
        return new KvInput(states, mask);
    }

    public void Dispose()
    {
        States.Dispose();
        Mask?.Dispose();
    }
}

/// <summary>
/// Trains the KV-prefix predictor on the arms' shared budget: loss = CE(answer | prompt ++ predicted slot cache ++
/// &lt;/think&gt;) through the frozen teacher + λ·MSE(standardised predicted cache, standardised true cache). The
/// gradient reaches the predictor through attention: the cache keeps the graph of the predicted keys and values.
/// </summary>
public static class KvPrefixTraining
{
    public static KvPrefixPredictor Train(DecoderLM teacher, TraceFormat fmt, IReadOnlyList<TraceSample> train, Tensor preTrain,
        IReadOnlyList<(Tensor Keys, Tensor Values)> slotTrain, ArmTraining budget, double lambda, string outDir, TextWriter? log = null,
        int hidden = 512) => Train(teacher, fmt, train, new KvInput(preTrain, null), slotTrain, budget, lambda, outDir, log, hidden);

    /// <param name="input">h_pre of the training samples, or their prompt states (the predictor then reads the whole prompt).</param>
    public static KvPrefixPredictor Train(DecoderLM teacher, TraceFormat fmt, IReadOnlyList<TraceSample> train, KvInput input,
        IReadOnlyList<(Tensor Keys, Tensor Values)> slotTrain, ArmTraining budget, double lambda, string outDir, TextWriter? log = null,
        int hidden = 512)
    {
        if (fmt.Slots == 0) throw new NotSupportedException($"{fmt}: the KV-prefix arm needs a teacher trained on bottleneck traces (teacher train --bottleneck k)");
        if (lambda < 0) throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "the cache-matching weight must be ≥ 0");
        int k = fmt.Slots, layers = teacher.Config.NumLayers;
        var examples = ArmExamples.Of("kv prefix", fmt, train, p => ArmsCommon.ShortcutPrompt(fmt, p));
        using var flatTrain = KvPrefixPredictor.Flatten(slotTrain);
        var predictor = KvPrefixPredictor.For(teacher, k, hidden, readsPrompt: input.IsPrompt);
        using (var real = input.RealStates()) predictor.FitStandardizer(real, flatTrain);
        predictor.to(teacher.Device);
        var restore = ArmsCommon.Freeze(teacher);
        try
        {
            var trainable = new Trainable(predictor, (step, micro) =>
            {
                var rows = examples.Draw(budget, step);
                var (ids, targets, mask, lossTokens) = examples.Batch(fmt, rows);
                var dev = teacher.Device;
                var sample = examples.SampleIndices(rows);
                int p = examples.Sequences[rows[0]].PromptLength - k - 1;
                ids = ids.to(dev);
                var rowsIn = input.Rows(sample);
                var z = predictor.Forward(predictor.StandardizePre(rowsIn.States), rowsIn.Mask?.to(dev));
                var mse = (z - predictor.StandardizeKv(ArmsCommon.Rows(flatTrain, sample))).square().mean();
                var slots = predictor.Unflatten(predictor.DestandardizeKv(z));
                var ce = AnswerLoss(teacher, ids, targets.to(dev), mask.to(dev), p, slots);
                return new TrainLoss(ce + lambda * mse, lossTokens);
            });
            budget.Run("kv prefix", trainable, outDir, log);
        }
        finally { restore(); }
        predictor.eval();
        return predictor;
    }

    /// <summary>
    /// Answer cross-entropy of teacher-forced batches through the frozen teacher, given predicted slot keys and values
    /// ([B, kv_heads, k, head_dim] per layer, graph kept): the teacher's own prompt cache (ids[:, :p]) ++ the slots,
    /// then everything from the end marker on (ids[:, p+k:]) run over that cache, scored where targets are set.
    /// </summary>
    public static Tensor AnswerLoss(DecoderLM teacher, Tensor ids, Tensor targets, Tensor mask, int p,
        IReadOnlyList<(Tensor Keys, Tensor Values)> slots)
    {
        int layers = teacher.Config.NumLayers, k = (int)slots[0].Keys.shape[2], t = (int)ids.shape[1];
        using var promptCache = new KvCache(layers);
        using (no_grad()) teacher.Forward(ids.narrow(1, 0, p), cache: promptCache, logits: LogitsMode.None).Dispose();
        var kv = Enumerable.Range(0, layers).Select(l =>
            (cat(new[] { promptCache.Keys(l)!, slots[l].Keys.to(promptCache.Keys(l)!.dtype) }, 2),
             cat(new[] { promptCache.Values(l)!, slots[l].Values.to(promptCache.Values(l)!.dtype) }, 2))).ToList();
        using var cache = KvCache.FromTensors(kv, ones(ids.shape[0], p + k, dtype: ScalarType.Int64, device: ids.device), keepGraph: true);
        using var output = teacher.Forward(ids.narrow(1, p + k, t - p - k), attentionMask: mask.narrow(1, p + k, t - p - k), cache: cache);
        return nn.functional.cross_entropy(output.Logits!.reshape(-1, teacher.Config.VocabSize),
            targets.narrow(1, p + k, t - p - k).reshape(-1), ignore_index: -100);
    }
}
