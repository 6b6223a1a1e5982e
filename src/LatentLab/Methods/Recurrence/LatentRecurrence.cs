using LatentLab.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LatentLab.Methods.Recurrence;

/// <summary>
/// Maps the final latent back to where the frozen decoder reads its inputs: LayerNorm → Linear, the Linear
/// initialised to the identity (so it starts as a pass-through of the normalised latent), optionally followed by a
/// small residual MLP whose output layer starts at zero (so adding it changes nothing at initialisation).
/// </summary>
public sealed class Bridge : nn.Module<Tensor, Tensor>
{
    readonly LayerNorm norm;
    readonly Linear proj;
    readonly Linear? up, down;

    public Bridge(long d, bool mlp) : base("bridge")
    {
        norm = nn.LayerNorm(d);
        proj = nn.Linear(d, d);
        if (mlp)
        {
            up = nn.Linear(d, 2 * d);
            down = nn.Linear(2 * d, d);
        }
        RegisterComponents();
        using var _ = no_grad();
        proj.weight!.copy_(eye(d));
        proj.bias!.zero_();
        down?.weight!.zero_();
        down?.bias!.zero_();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = proj.forward(norm.forward(x));
        if (up is not null) y = y + down!.forward(F.gelu(up.forward(y)));
        return y.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// What the latent phase produced: the latents h_0 (the encoded question) … h_K, the logits whose argmax fed each
/// step's token path, and (append mode) the keys and values of every position, which the decoder attends to.
/// </summary>
public sealed record LatentTrace(IReadOnlyList<Tensor> Latents, IReadOnlyList<Tensor> Logits, IReadOnlyList<(Tensor K, Tensor V)>? Kv, Tensor Mask)
{
    public Tensor Final => Latents[^1];
}

/// <summary>
/// Latent recurrence (seed 004): encode the question, run K latent steps whose input is
/// <c>p · embed(argmax(logits)) + (1 − p) · latent</c> (token path detached), bridge the final latent, and let a
/// frozen decoder say the answer. Trainable: the latent-phase transformer (blocks and final norm of a full copy,
/// or LoRA adapters that are on only while reasoning, one base weight set for both phases) and the bridge
/// (and the pause embeddings of the pause-token control). Embeddings, unembedding and decoder stay frozen.
/// <para>
/// Latents are final-norm outputs, which live where the blocks read their input; embeddings are in raw space
/// and the model scales them by √d for Gemma. How a latent enters the mix is <see cref="LatentScale"/>: by default
/// rescaled to the mean norm of a token embedding (a final-norm output is far longer: ‖h‖ ≈ 14.8 against 0.88 for
/// the 2-digit char teacher, so at p = 0.97 the raw latent would already be half the input); with
/// <see cref="Recurrence.LatentScale.Raw"/> as <c>latent / s</c> (s = √d for Gemma, 1 otherwise), the seed's formula
/// in the space the blocks see.
/// </para>
/// </summary>
public sealed class LatentRecurrence : nn.Module
{
    readonly DecoderLM _reasoner, _decoder;
    readonly Bridge bridge;
    readonly Parameter? pause, gate;
    readonly double _scale, _embedNorm;

    /// <summary>How a latent enters the step input (see the class remarks).</summary>
    public LatentScale LatentScale { get; init; } = LatentScale.EmbeddingNorm;

    public RecurrenceMode Mode { get; }
    public bool UsesLora { get; }
    /// <summary>Recompute each latent step in backward (see <see cref="StepCheckpoint"/>) instead of keeping its activations.</summary>
    public bool Checkpointing { get; set; }
    public int PauseTokens => pause is null ? 0 : (int)pause.shape[0];
    /// <summary>The decoder starts at the marker (plus the gated bridged latent) instead of a bridged position before it.</summary>
    public bool MarkerDecode => gate is not null;
    public DecoderLM Reasoner => _reasoner;
    public DecoderLM Decoder => _decoder;
    public Bridge BridgeModule => bridge;
    public TransformerConfig Config => _reasoner.Config;

    /// <param name="model">The pretrained model. With <paramref name="loraRank"/> = 0 it becomes the trainable
    /// latent-phase transformer and a frozen copy decodes; with r &gt; 0 it gets LoRA adapters and serves both.</param>
    public LatentRecurrence(DecoderLM model, RecurrenceMode mode, int loraRank = 0, bool bridgeMlp = false, int pauseTokens = 0, bool markerDecode = false)
        : base("LatentRecurrence")
    {
        if (markerDecode && mode != RecurrenceMode.Append)
            throw new ArgumentException("marker decoding needs append mode (depth mode replaces the question's states; there is no cache to decode from)");
        Mode = mode;
        UsesLora = loraRank > 0;
        _reasoner = model;
        var c = model.Config;
        _scale = c.ScaleEmbeddings ? Math.Sqrt(c.HiddenSize) : 1.0;
        using (no_grad()) _embedNorm = model.EmbeddingWeight.detach().to(ScalarType.Float64).norm(1).mean().item<double>();
        if (UsesLora)
        {
            Lora.Attach(model, new LoraConfig(loraRank, 2.0 * loraRank,
                TargetModules: new[] { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" }));
            _decoder = model;
            register_module("model", model);
        }
        else
        {
            _decoder = new DecoderLM(c);
            _decoder.to(model.DType).to(model.Device);
            using (no_grad())
            {
                var src = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
                foreach (var (name, p) in _decoder.named_parameters()) p.copy_(src[name]);
            }
            _decoder.ComputeDType = model.ComputeDType;
            foreach (var (name, p) in model.named_parameters())
                p.requires_grad = !(name.StartsWith("model.embed_tokens.", StringComparison.Ordinal) || name.StartsWith("lm_head.", StringComparison.Ordinal));
            foreach (var p in _decoder.parameters()) p.requires_grad = false;
            register_module("reasoner", model);
            register_module("decoder", _decoder);
        }
        bridge = new Bridge(c.HiddenSize, bridgeMlp);
        bridge.to(model.DType).to(model.Device);
        register_module("bridge", bridge);
        if (pauseTokens > 0)
        {
            // Pause tokens start as the mean token embedding: "a token", but none in particular.
            using var _ = no_grad();
            var init = model.EmbeddingWeight.mean(new long[] { 0 }, keepdim: true).expand(pauseTokens, -1).clone();
            pause = new Parameter(init);
            register_parameter("pause", pause);
        }
        if (markerDecode)
        {
            gate = new Parameter(zeros(1, dtype: model.DType, device: model.Device));
            register_parameter("gate", gate);
        }
        _decoder.eval();
        _reasoner.eval();
    }

    /// <summary>The decoder's first inputs [B, m(+1), D]: the marker's embeddings, the first carrying g·bridge(latent)
    /// (marker decoding), or the bridged latent followed by them.</summary>
    Tensor DecodeStart(Tensor final, Tensor markerEmbeds)
    {
        if (gate is null) return cat(new[] { Bridged(final), markerEmbeds }, 1);
        var first = markerEmbeds.narrow(1, 0, 1) + gate * Bridged(final);
        return markerEmbeds.shape[1] == 1 ? first : cat(new[] { first, markerEmbeds.narrow(1, 1, markerEmbeds.shape[1] - 1) }, 1);
    }

    /// <summary>Sets the compute dtype of both phases (the library's policy decides it).</summary>
    public void SetComputeDType(ScalarType dtype)
    {
        _reasoner.ComputeDType = dtype;
        _decoder.ComputeDType = dtype;
    }

    /// <summary>LoRA on for the duration (reasoning), restoring the previous state after; nothing without LoRA.</summary>
    IDisposable Phase(bool reasoning)
    {
        if (!UsesLora) return NoOp.Instance;
        bool before = _reasoner.Projections().First(p => p.Proj.Lora is not null).Proj.LoraEnabled;
        Lora.SetEnabled(_reasoner, reasoning);
        return new Restore(() => Lora.SetEnabled(_reasoner, before));
    }

    sealed class NoOp : IDisposable { public static readonly NoOp Instance = new(); public void Dispose() { } }
    sealed class Restore(Action a) : IDisposable { public void Dispose() => a(); }

    /// <summary>
    /// The latent phase for left-padded prompts [B, T] (mask [B, T]). <paramref name="k"/> steps at interpolation
    /// <paramref name="p"/>; with the pause control, K learned embeddings follow the question instead.
    /// </summary>
    public LatentTrace Reason(Tensor promptIds, Tensor promptMask, int k, double p)
    {
        using var lora = Phase(reasoning: true);
        var latents = new List<Tensor>();
        var logits = new List<Tensor>();
        long b = promptIds.shape[0];
        var dev = _reasoner.Device;
        if (Mode == RecurrenceMode.Depth)
        {
            if (pause is not null) throw new InvalidOperationException("the pause-token control runs in append mode");
            var h = _reasoner.Forward(promptIds, attentionMask: promptMask, logits: LogitsMode.None).Hidden;
            latents.Add(h);
            for (int step = 0; step < k; step++)
            {
                var x = Mix(h, p, logits);
                h = Checkpointing
                    ? StepCheckpoint.apply(new Func<Tensor[], Tensor[]>(t => new[] { DepthStep(t[0], promptMask) }), x)[0]
                    : DepthStep(x, promptMask);
                latents.Add(h);
            }
            return new LatentTrace(latents, logits, null, promptMask);
        }

        var cache = new KvCache(Config.NumLayers, keepGraph: true);
        List<(Tensor K, Tensor V)> kv;
        Tensor mask;
        try
        {
            var enc = _reasoner.Forward(promptIds, attentionMask: promptMask, cache: cache, logits: LogitsMode.LastOnly);
            latents.Add(enc.Hidden);
            if (pause is not null)
            {
                var x = pause.unsqueeze(0).expand(b, -1, -1);
                var o = _reasoner.Forward(inputEmbeds: x, cache: cache, logits: LogitsMode.None);
                latents.Add(o.Hidden.narrow(1, o.Hidden.shape[1] - 1, 1));
            }
            kv = Enumerable.Range(0, Config.NumLayers).Select(l => (cache.Keys(l)!.alias(), cache.Values(l)!.alias())).ToList();
            mask = cache.Mask!.alias();
        }
        finally { cache.Dispose(); }
        if (pause is not null) return new LatentTrace(latents, logits, kv, mask);

        var ones1 = ones(b, 1, dtype: ScalarType.Int64, device: dev);
        var hPrev = latents[0];
        for (int step = 0; step < k; step++)
        {
            var x = Mix(hPrev, p, logits);
            Tensor[] outs;
            if (Checkpointing)
            {
                var pastMask = mask;
                var args = new List<object> { new Func<Tensor[], Tensor[]>(t => AppendStep(t[0], t.Skip(1).ToArray(), pastMask)), x };
                foreach (var (kk, vv) in kv) { args.Add(kk); args.Add(vv); }
                outs = StepCheckpoint.apply(args.ToArray()).ToArray();
            }
            else outs = AppendStep(x, kv.SelectMany(p2 => new[] { p2.K, p2.V }).ToArray(), mask);
            hPrev = outs[0];
            latents.Add(hPrev);
            kv = kv.Select((old, l) => (cat(new[] { old.K, outs[1 + 2 * l] }, 2), cat(new[] { old.V, outs[2 + 2 * l] }, 2))).ToList();
            mask = cat(new[] { mask, ones1 }, 1);
        }
        return new LatentTrace(latents, logits, kv, mask);
    }

    /// <summary>
    /// The step input p · embed(argmax(logits(h))) + (1 − p) · latent(h), the token path detached. The logits are
    /// the model's own unembedding of h (the same numbers its forward would give), computed without a graph.
    /// </summary>
    Tensor Mix(Tensor h, double p, List<Tensor> logits)
    {
        if (p == 0) return LatentInput(h);
        Tensor z;
        using (no_grad()) z = _reasoner.Logits(h.detach());
        logits.Add(z);
        Tensor e;
        using (no_grad()) e = _reasoner.Embed(z.argmax(-1)).detach();
        return e * p + LatentInput(h) * (1 - p);
    }

    /// <summary>h as a step input, in the raw embedding space: rescaled per position to the mean token-embedding norm, or h / s.</summary>
    public Tensor LatentInput(Tensor h) => LatentScale == LatentScale.Raw
        ? h * (1.0 / _scale)
        : h * (_embedNorm / h.norm(-1, keepdim: true).clamp_min(1e-6));

    Tensor DepthStep(Tensor x, Tensor mask)
    {
        using var lora = Phase(reasoning: true);
        return _reasoner.Forward(inputEmbeds: x, attentionMask: mask, logits: LogitsMode.None).Hidden;
    }

    /// <summary>One appended position: x [B, 1, D] attends to the past keys/values; returns h and this position's K, V per layer.</summary>
    Tensor[] AppendStep(Tensor x, Tensor[] pastKv, Tensor pastMask)
    {
        using var lora = Phase(reasoning: true);
        int layers = Config.NumLayers;
        var past = Enumerable.Range(0, layers).Select(l => (pastKv[2 * l], pastKv[2 * l + 1])).ToList();
        using var cache = KvCache.FromTensors(past, pastMask, keepGraph: true);
        long s = pastMask.shape[1];
        var o = _reasoner.Forward(inputEmbeds: x, cache: cache, logits: LogitsMode.None);
        var outs = new Tensor[1 + 2 * layers];
        outs[0] = o.Hidden;
        for (int l = 0; l < layers; l++)
        {
            outs[1 + 2 * l] = cache.Keys(l)!.narrow(2, s, 1);
            outs[2 + 2 * l] = cache.Values(l)!.narrow(2, s, 1);
        }
        return outs;
    }

    /// <summary>Bridge output in the raw embedding space the decoder's forward takes (see the class remarks on s).</summary>
    Tensor Bridged(Tensor latent) => bridge.forward(latent) * (1.0 / _scale);

    /// <summary>
    /// The frozen decoder's teacher-forced logits over [bridge(latent), marker, a_0 … a_{n-2}]: in append mode it
    /// attends to the latent phase's keys and values (question and latent positions); in depth mode it reads the
    /// bridged states of the whole sequence in place of the question.
    /// </summary>
    public Tensor DecodeLogits(LatentTrace trace, RecurrenceBatch batch)
    {
        using var lora = Phase(reasoning: false);
        long b = batch.Batch;
        var dev = _decoder.Device;
        var marker = tensor(batch.Marker.Select(i => (long)i).ToArray(), device: dev).view(1, -1).expand(b, -1);
        var start = DecodeStart(trace.Final, _decoder.Embed(marker));
        var inp = cat(new[] { start, _decoder.Embed(batch.AnswerIn) }, 1);
        if (Mode == RecurrenceMode.Depth)
        {
            long tail = marker.shape[1] + batch.AnswerIn.shape[1]; // the positions after the bridged states
            var mask = cat(new[] { trace.Mask, ones(b, tail, dtype: ScalarType.Int64, device: dev) }, 1);
            return _decoder.Forward(inputEmbeds: inp, attentionMask: mask).Logits!;
        }
        using var cache = KvCache.FromTensors(trace.Kv!, trace.Mask, keepGraph: true);
        return _decoder.Forward(inputEmbeds: inp, cache: cache).Logits!;
    }

    /// <summary>Cross-entropy on the answer tokens only (teacher-forced); nothing supervises the latents.</summary>
    public Tensor AnswerLoss(LatentTrace trace, RecurrenceBatch batch)
    {
        var logits = DecodeLogits(trace, batch);
        long n = batch.AnswerTargets.shape[1];
        var z = logits.narrow(1, logits.shape[1] - n, n);
        return F.cross_entropy(z.reshape(-1, Config.VocabSize), batch.AnswerTargets.reshape(-1), ignore_index: -100);
    }

    /// <summary>Greedy answers (token ids, stop token excluded) after <paramref name="k"/> latent steps at <paramref name="p"/>.</summary>
    public int[][] Answer(Tensor promptIds, Tensor promptMask, int[] marker, int k, double p, int maxNewTokens, IReadOnlyCollection<int> stopTokens)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var trace = Reason(promptIds, promptMask, k, p);
        using var lora = Phase(reasoning: false);
        long b = promptIds.shape[0];
        var dev = _decoder.Device;
        var m = tensor(marker.Select(i => (long)i).ToArray(), device: dev).view(1, -1).expand(b, -1);
        var first = DecodeStart(trace.Final, _decoder.Embed(m));
        using var cache = Mode == RecurrenceMode.Depth ? new KvCache(Config.NumLayers) : KvCache.FromTensors(trace.Kv!, trace.Mask, keepGraph: false);
        var mask = Mode == RecurrenceMode.Depth
            ? cat(new[] { trace.Mask, ones(b, m.shape[1], dtype: ScalarType.Int64, device: dev) }, 1)
            : null;
        var z = _decoder.Forward(inputEmbeds: first, attentionMask: mask, cache: cache, logits: LogitsMode.LastOnly).Logits!;
        var tokens = Enumerable.Range(0, (int)b).Select(_ => new List<int>()).ToArray();
        var done = new bool[b];
        for (int step = 0; step < maxNewTokens; step++)
        {
            var next = z.select(1, 0).argmax(-1).cpu().data<long>().ToArray();
            for (int i = 0; i < b; i++)
            {
                if (done[i]) continue;
                if (stopTokens.Contains((int)next[i])) done[i] = true;
                else tokens[i].Add((int)next[i]);
            }
            if (done.All(d => d) || step == maxNewTokens - 1) break;
            z = _decoder.Forward(tensor(next).view(b, 1).to(dev), cache: cache, logits: LogitsMode.LastOnly).Logits!;
        }
        return tokens.Select(t => t.ToArray()).ToArray();
    }
}
