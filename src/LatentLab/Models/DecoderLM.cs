using LatentLab.Hooks;
using LatentLab.Tensors;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LatentLab.Models;

#pragma warning disable IDE1006 // HF weight names

public sealed class Attention : nn.Module
{
    readonly Proj q_proj, k_proj, v_proj, o_proj;
    readonly RmsNorm? q_norm, k_norm;
    readonly TransformerConfig _c;

    public Attention(TransformerConfig c) : base("self_attn")
    {
        _c = c;
        q_proj = new Proj("q_proj", c.HiddenSize, c.NumHeads * c.HeadDim, c.AttentionBias);
        k_proj = new Proj("k_proj", c.HiddenSize, c.NumKvHeads * c.HeadDim, c.AttentionBias);
        v_proj = new Proj("v_proj", c.HiddenSize, c.NumKvHeads * c.HeadDim, c.AttentionBias);
        o_proj = new Proj("o_proj", c.NumHeads * c.HeadDim, c.HiddenSize, c.OutputBias);
        if (c.QkNorm)
        {
            q_norm = new RmsNorm("q_norm", c.HeadDim, c.NormEps, c.Norm == NormKind.GemmaRmsNorm);
            k_norm = new RmsNorm("k_norm", c.HeadDim, c.NormEps, c.Norm == NormKind.GemmaRmsNorm);
        }
        RegisterComponents();
    }

    /// <param name="x">[B, T, D]</param>
    /// <param name="mask">which cached+new keys each query may see</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionMask mask, KvCache? cache, int layer) =>
        Forward(x, cos, sin, mask, cache, layer, null);

    internal Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionMask mask, KvCache? cache, int layer, HookRunner? hooks)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var q = q_proj.forward(x).view(b, t, _c.NumHeads, _c.HeadDim);
        var k = k_proj.forward(x).view(b, t, _c.NumKvHeads, _c.HeadDim);
        var v = v_proj.forward(x).view(b, t, _c.NumKvHeads, _c.HeadDim);
        if (q_norm is not null) { q = q_norm.forward(q); k = k_norm!.forward(k); }
        if (hooks is not null)
        {
            q = hooks.At(HookSite.AttnQ, layer, q);
            k = hooks.At(HookSite.AttnK, layer, k);
            v = hooks.At(HookSite.AttnV, layer, v);
        }
        v = v.transpose(1, 2);
        q = Rope.Apply(q.transpose(1, 2), cos, sin);
        k = Rope.Apply(k.transpose(1, 2), cos, sin);
        if (cache is not null) (k, v) = cache.Append(layer, k, v);

        int groups = _c.NumHeads / _c.NumKvHeads;
        if (groups > 1)
        {
            k = k.repeat_interleave(groups, dim: 1);
            v = v.repeat_interleave(groups, dim: 1);
        }
        Tensor o;
        bool wantsPattern = hooks is not null && (hooks.Wants(HookSite.AttnScores, layer) || hooks.Wants(HookSite.AttnPattern, layer));
        if (_c.AttnSoftcap is not null || wantsPattern)
        {
            // Explicit attention: soft-capping sits between the scores and the softmax, which fused attention cannot
            // express, and the scores and pattern hooks need the [B, heads, T, S] tensors the fused kernel never makes.
            var scores = q.matmul(k.transpose(-2, -1)).to(ScalarType.Float32) * _c.AttentionScale;
            if (_c.AttnSoftcap is { } cap) scores = (scores / cap).tanh() * cap;
            scores = scores.masked_fill(mask.Allowed.logical_not(), -1e30);
            if (hooks is not null) scores = hooks.At(HookSite.AttnScores, layer, scores);
            var pattern = scores.softmax(-1);
            if (hooks is not null) pattern = hooks.At(HookSite.AttnPattern, layer, pattern);
            o = pattern.to(v.dtype).matmul(v);
        }
        else
        {
            // Fused attention (flash kernel on CPU). It always scales by head_dim^-0.5, so fold the
            // family's own scale into q. The additive mask is finite (-1e30), so a fully masked row
            // (a padding query) gives a finite, ignored output instead of NaN.
            double fold = _c.AttentionScale * Math.Sqrt(_c.HeadDim);
            if (Math.Abs(fold - 1) > 1e-12) q = q * fold;
            o = mask.Causal
                ? F.scaled_dot_product_attention(q, k, v, null, 0, true)
                : F.scaled_dot_product_attention(q, k, v, mask.Bias(q.dtype));
        }
        o = o.transpose(1, 2);
        if (hooks is not null) o = hooks.At(HookSite.AttnZ, layer, o);
        return o_proj.forward(o.reshape(b, t, _c.NumHeads * _c.HeadDim)).MoveToOuterDisposeScope();
    }

    public IEnumerable<(string Name, Proj Proj)> Projections() =>
        new[] { ("q_proj", q_proj), ("k_proj", k_proj), ("v_proj", v_proj), ("o_proj", o_proj) };
}

public sealed class Mlp : nn.Module<Tensor, Tensor>
{
    readonly Proj gate_proj, up_proj, down_proj;
    readonly Activation _act;

    public Mlp(TransformerConfig c) : base("mlp")
    {
        gate_proj = new Proj("gate_proj", c.HiddenSize, c.IntermediateSize, false);
        up_proj = new Proj("up_proj", c.HiddenSize, c.IntermediateSize, false);
        down_proj = new Proj("down_proj", c.IntermediateSize, c.HiddenSize, false);
        _act = c.Activation;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Forward(x, null, -1);

    /// <summary>down(act(gate(x)) · up(x)), with the hook_pre (gate pre-activation) and hook_post (down's input) points.</summary>
    internal Tensor Forward(Tensor x, HookRunner? hooks, int layer)
    {
        using var scope = NewDisposeScope();
        var g = gate_proj.forward(x);
        if (hooks is not null) g = hooks.At(HookSite.MlpPre, layer, g);
        g = _act switch
        {
            Activation.SiLU => F.silu(g),
            Activation.GeluTanh => F.gelu(g, GELU.Approximate.tanh),
            _ => F.gelu(g),
        };
        var post = g * up_proj.forward(x);
        if (hooks is not null) post = hooks.At(HookSite.MlpPost, layer, post);
        return down_proj.forward(post).MoveToOuterDisposeScope();
    }

    public IEnumerable<(string Name, Proj Proj)> Projections() =>
        new[] { ("gate_proj", gate_proj), ("up_proj", up_proj), ("down_proj", down_proj) };
}

/// <summary>
/// One decoder block. Llama/Qwen: x += attn(norm(x)); x += mlp(norm(x)). Gemma 2/3 (sandwich):
/// x += post_attn_norm(attn(input_norm(x))); x += post_ff_norm(mlp(pre_ff_norm(x))).
/// </summary>
public sealed class Block : nn.Module
{
    readonly RmsNorm input_layernorm, post_attention_layernorm;
    readonly RmsNorm? pre_feedforward_layernorm, post_feedforward_layernorm;
    readonly Attention self_attn;
    readonly Mlp mlp;
    readonly bool _sandwich;

    public Block(TransformerConfig c, int index) : base($"{index}")
    {
        bool g = c.Norm == NormKind.GemmaRmsNorm;
        input_layernorm = new RmsNorm("input_layernorm", c.HiddenSize, c.NormEps, g);
        post_attention_layernorm = new RmsNorm("post_attention_layernorm", c.HiddenSize, c.NormEps, g);
        if (c.SandwichNorm)
        {
            pre_feedforward_layernorm = new RmsNorm("pre_feedforward_layernorm", c.HiddenSize, c.NormEps, g);
            post_feedforward_layernorm = new RmsNorm("post_feedforward_layernorm", c.HiddenSize, c.NormEps, g);
        }
        self_attn = new Attention(c);
        mlp = new Mlp(c);
        _sandwich = c.SandwichNorm;
        RegisterComponents();
    }

    public Attention SelfAttn => self_attn;
    public Mlp MlpModule => mlp;

    internal Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionMask mask, KvCache? cache, int layer, HookRunner hooks)
    {
        x = hooks.At(HookSite.ResidPre, layer, x);
        var a = self_attn.Forward(input_layernorm.forward(x), cos, sin, mask, cache, layer, hooks);
        if (_sandwich) a = post_attention_layernorm.forward(a);
        a = hooks.At(HookSite.AttnOut, layer, a);
        x = hooks.At(HookSite.ResidMid, layer, x + a);
        var m = _sandwich
            ? post_feedforward_layernorm!.forward(mlp.Forward(pre_feedforward_layernorm!.forward(x), hooks, layer))
            : mlp.Forward(post_attention_layernorm.forward(x), hooks, layer);
        m = hooks.At(HookSite.MlpOut, layer, m);
        return hooks.At(HookSite.ResidPost, layer, x + m);
    }
}

/// <summary>The `model.` part of the HF layout: embeddings, blocks, final norm.</summary>
public sealed class DecoderBody : nn.Module
{
    internal readonly Embedding embed_tokens;
    internal readonly ModuleList<Block> layers;
    internal readonly RmsNorm norm;

    public DecoderBody(TransformerConfig c) : base("model")
    {
        embed_tokens = nn.Embedding(c.VocabSize, c.HiddenSize);
        layers = new ModuleList<Block>(Enumerable.Range(0, c.NumLayers).Select(i => new Block(c, i)).ToArray());
        norm = new RmsNorm("norm", c.HiddenSize, c.NormEps, c.Norm == NormKind.GemmaRmsNorm);
        RegisterComponents();
    }
}

/// <summary>
/// The keys each query may see in one forward pass, shared by every layer of a kind (global or sliding):
/// <see cref="Allowed"/> [B, 1, T, S] as booleans, or <see cref="Causal"/> when plain causal masking says the same;
/// the additive form fused attention takes is built once per dtype, not once per layer.
/// </summary>
public sealed class AttentionMask(Tensor allowed, bool causal) : IDisposable
{
    Tensor? _bias;

    public Tensor Allowed { get; } = allowed;
    public bool Causal { get; } = causal;

    /// <summary>0 where allowed, -1e30 elsewhere (finite, so a fully masked padding query gives a finite, ignored output).</summary>
    public Tensor Bias(ScalarType dtype)
    {
        if (_bias is null || _bias.dtype != dtype)
        {
            _bias?.Dispose();
            using var scope = NewDisposeScope();
            _bias = zeros(Allowed.shape, dtype: dtype, device: Allowed.device).masked_fill(Allowed.logical_not(), -1e30).DetachFromDisposeScope();
        }
        return _bias;
    }

    public void Dispose() => _bias?.Dispose();
}

/// <summary>What a forward pass returns. Dispose it (or let an enclosing scope do so).</summary>
public sealed class ModelOutput : IDisposable
{
    public required Tensor? Logits { get; init; }
    /// <summary>Output of the final norm, [B, T, D] (or [B, 1, D] with last-only logits).</summary>
    public required Tensor Hidden { get; init; }
    public required IReadOnlyDictionary<string, Tensor> Captures { get; init; }

    public Tensor Capture(string key) => Captures.TryGetValue(key, out var t) ? t
        : throw new KeyNotFoundException($"nothing was captured under '{key}' (captured: {string.Join(", ", Captures.Keys)})");

    public void Dispose()
    {
        Logits?.Dispose();
        Hidden.Dispose();
        foreach (var t in Captures.Values) t.Dispose();
    }
}

public enum LogitsMode { All, LastOnly, None }

/// <summary>
/// One config-driven decoder for Llama, Qwen2/3 and Gemma 2/3 (as llama.cpp does it, not a copy per family).
/// Parameter names are Hugging Face's, so <see cref="Checkpoints"/> reads and writes transformers' layout.
/// </summary>
public sealed class DecoderLM : nn.Module
{
    readonly DecoderBody model;
    readonly Proj? lm_head;
    readonly Rope _rope;
    readonly Rope? _localRope;
    readonly Block[] _blocks;

    public TransformerConfig Config { get; }

    public DecoderLM(TransformerConfig config) : base("DecoderLM")
    {
        TorchRuntime.Initialize();
        config.Validate();
        Config = config;
        model = new DecoderBody(config);
        if (!config.TieEmbeddings) lm_head = new Proj("lm_head", config.HiddenSize, config.VocabSize, false);
        RegisterComponents();
        _blocks = model.layers.ToArray();
        _rope = new Rope(config.HeadDim, config.RopeTheta, config.RopeScaling);
        if (config.RopeLocalTheta is { } local && config.SlidingWindow is not null)
            _localRope = new Rope(config.HeadDim, local, new RopeScaling());
        InitWeights();
    }

    public IReadOnlyList<Block> Blocks => _blocks;
    public Tensor EmbeddingWeight => model.embed_tokens.weight!;
    public Tensor OutputWeight => lm_head?.Weight ?? model.embed_tokens.weight!;
    /// <summary>Dtype of the stored weights.</summary>
    public ScalarType DType => model.embed_tokens.weight!.dtype;

    /// <summary>
    /// Dtype activations are computed in. Setting bf16 on float32 weights is TorchSharp's missing autocast:
    /// matmuls and attention run in bf16 while the weights (and their gradients and optimiser state) stay
    /// float32; norms, softmax, RoPE and logits are float32 either way.
    /// </summary>
    public ScalarType ComputeDType
    {
        get => _computeDType ?? DType;
        set
        {
            _computeDType = value == DType ? null : value;
            foreach (var (_, p) in Projections()) p.ComputeDType = _computeDType;
        }
    }
    ScalarType? _computeDType;
    public Device Device => model.embed_tokens.weight!.device;

    /// <summary>GPT-2/Llama-style init (N(0, 0.02)) for training from scratch; loading overwrites it.</summary>
    void InitWeights()
    {
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("norm.weight") || name.EndsWith("layernorm.weight")) continue;
            if (name.EndsWith(".bias")) { p.zero_(); continue; }
            nn.init.normal_(p, 0, 0.02);
        }
    }

    /// <summary>Raw token embeddings [B, T, D] (before Gemma's sqrt(d) scaling, which Forward applies to ids and embeddings alike).</summary>
    public Tensor Embed(Tensor ids) => model.embed_tokens.forward(ids);

    /// <summary>
    /// One forward pass. Give token ids [B, T] or input embeddings [B, T, D] (soft tokens, in raw embedding
    /// space like <see cref="Embed"/>). <paramref name="attentionMask"/> [B, T] marks real tokens (1) and padding (0);
    /// positions follow the mask, so left padding works. With a cache, the new tokens attend to everything cached
    /// and are appended to it.
    /// <paramref name="positions"/> [B, T] overrides the RoPE positions (default: real tokens counted from 0, continuing
    /// the cache); <paramref name="keyExpiry"/> [B, T] hides a key from every query at that column of the sequence or
    /// later (cache columns count; long.MaxValue = never): with both, a bottleneck trace's answer sees the prompt and
    /// the slots but not the thought, and takes positions as if the thought were absent. The cache keeps both, so
    /// decoding honours them.
    /// </summary>
    public ModelOutput Forward(Tensor? inputIds = null, Tensor? inputEmbeds = null, Tensor? attentionMask = null,
        KvCache? cache = null, HookSet? hooks = null, LogitsMode logits = LogitsMode.All, Tensor? positions = null, Tensor? keyExpiry = null)
    {
        if ((inputIds is null) == (inputEmbeds is null))
            throw new ArgumentException("give exactly one of inputIds or inputEmbeds");
        var captures = new Dictionary<string, Tensor>();
        using var scope = NewDisposeScope();
        var c = Config;
        long b = inputIds?.shape[0] ?? inputEmbeds!.shape[0];
        long t = inputIds?.shape[1] ?? inputEmbeds!.shape[1];
        var dev = Device;
        long offset = cache?.Length ?? 0;
        if (cache is not null && cache.NumLayers != c.NumLayers)
            throw new ArgumentException($"cache has {cache.NumLayers} layers, model has {c.NumLayers}");

        var chunkMask = attentionMask?.to(ScalarType.Int64) ?? ones(b, t, dtype: ScalarType.Int64, device: dev);
        if (chunkMask.shape[0] != b || chunkMask.shape[1] != t)
            throw new ArgumentException($"attention mask shape [{string.Join(",", chunkMask.shape)}] does not match input [{b},{t}]");
        if (positions is not null && (positions.shape[0] != b || positions.shape[1] != t))
            throw new ArgumentException($"positions shape [{string.Join(",", positions.shape)}] does not match input [{b},{t}]");
        if (keyExpiry is not null && (keyExpiry.shape[0] != b || keyExpiry.shape[1] != t))
            throw new ArgumentException($"key expiry shape [{string.Join(",", keyExpiry.shape)}] does not match input [{b},{t}]");
        // Positions count real tokens only, so left-padded rows start at 0 like unpadded ones; a cache continues
        // from one past its last real position.
        var before = cache?.NextPositions?.to(dev) ?? zeros(b, dtype: ScalarType.Int64, device: dev);
        positions = positions?.to(ScalarType.Int64).to(dev) ?? (before.unsqueeze(1) + chunkMask.cumsum(1) - 1).clamp_min(0);
        Tensor fullMask;
        Tensor? expiry;
        if (cache is not null)
        {
            cache.AppendMask(chunkMask);
            cache.AppendExpiry(keyExpiry?.to(dev), t);
            cache.AdvancePositions(positions, chunkMask, before);
            fullMask = cache.Mask!;
            expiry = cache.Expiry;
        }
        else (fullMask, expiry) = (chunkMask, keyExpiry?.to(ScalarType.Int64).to(dev));
        long s = fullMask.shape[1];

        var runner = new HookRunner(hooks, c.NumLayers, inputIds, attentionMask is null ? null : chunkMask, offset, b, t, captures);

        // The residual stream stays in the weights' dtype; with a lower ComputeDType only the projections and
        // attention drop precision, and their outputs promote back when added (as under torch.autocast).
        var x = inputIds is not null ? model.embed_tokens.forward(inputIds) : inputEmbeds!.to(DType);
        if (c.ScaleEmbeddings) x = x * Math.Sqrt(c.HiddenSize);
        x = runner.At(HookSite.Embed, -1, x);

        // allowed[b, 0, i, j]: key j is real, not in the future of query i, and inside the window on sliding layers.
        var qIdx = arange(offset, offset + t, dtype: ScalarType.Int64, device: dev).view(1, 1, t, 1);
        var kIdx = arange(s, dtype: ScalarType.Int64, device: dev).view(1, 1, 1, s);
        var keyReal = fullMask.view(b, 1, 1, s).to(ScalarType.Bool);
        var causal = keyReal.logical_and(kIdx <= qIdx);
        if (expiry is not null) causal = causal.logical_and(qIdx < expiry.view(b, 1, 1, s));
        var sliding = c.SlidingWindow is { } w ? causal.logical_and((qIdx - kIdx) < w) : null;
        // With no cached prefix and no left padding, every real query sees exactly the keys at or before it, which
        // the fused kernel's is_causal expresses without a [B, 1, T, S] mask (about 2× faster at long prompts).
        // Right padding only changes what padding queries see, and their outputs are ignored.
        bool plainCausal = offset == 0 && expiry is null && (attentionMask is null || RightPadded(chunkMask));
        using var globalMask = new AttentionMask(causal, plainCausal);
        using var slidingMask = sliding is null ? null : new AttentionMask(sliding, plainCausal && s <= c.SlidingWindow!.Value);

        var (cos, sin) = _rope.Tables(positions);
        var (lcos, lsin) = _localRope is null ? (cos, sin) : _localRope.Tables(positions);

        for (int i = 0; i < c.NumLayers; i++)
        {
            bool slide = c.IsSliding(i);
            bool local = slide && _localRope is not null;
            x = _blocks[i].Forward(x, local ? lcos : cos, local ? lsin : sin, slide ? slidingMask! : globalMask, cache, i, runner);
        }

        if (logits == LogitsMode.LastOnly)
        {
            var lastIdx = (chunkMask * (arange(t, dtype: ScalarType.Int64, device: dev).unsqueeze(0) + 1)).argmax(1);
            x = x.gather(1, lastIdx.view(b, 1, 1).expand(b, 1, x.shape[2]));
        }
        var h = runner.At(HookSite.FinalNorm, -1, model.norm.forward(x));
        Tensor? outLogits = null;
        if (logits != LogitsMode.None) outLogits = runner.At(HookSite.Logits, -1, Logits(h)).MoveToOuterDisposeScope();
        return new ModelOutput { Logits = outLogits, Hidden = h.MoveToOuterDisposeScope(), Captures = captures };
    }

    /// <summary>
    /// The unembedding Forward applies: float32 logits [.., V] (soft-capped where the family caps) from final-norm
    /// outputs. Public so a caller holding a hidden state (latent recurrence's argmax) gets the very same numbers.
    /// </summary>
    public Tensor Logits(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        var z = (lm_head is not null ? lm_head.forward(hidden) : F.linear(hidden.to(ComputeDType), OutputWeight.to(ComputeDType))).to(ScalarType.Float32);
        if (Config.FinalSoftcap is { } fc) z = (z / fc).tanh() * fc;
        return z.MoveToOuterDisposeScope();
    }

    /// <summary>True when every row's mask is ones followed by zeros (no left padding, no holes).</summary>
    static bool RightPadded(Tensor mask)
    {
        long t = mask.shape[1];
        if (t < 2) return true;
        using var scope = NewDisposeScope();
        return mask.narrow(1, 1, t - 1).le(mask.narrow(1, 0, t - 1)).all().item<bool>();
    }

    /// <summary>Every Proj in the model with its HF module path (for LoRA and inspection).</summary>
    public IEnumerable<(string Path, Proj Proj)> Projections()
    {
        for (int i = 0; i < Blocks.Count; i++)
        {
            foreach (var (n, p) in Blocks[i].SelfAttn.Projections()) yield return ($"model.layers.{i}.self_attn.{n}", p);
            foreach (var (n, p) in Blocks[i].MlpModule.Projections()) yield return ($"model.layers.{i}.mlp.{n}", p);
        }
        if (lm_head is not null) yield return ("lm_head", lm_head);
    }

    public long ParameterCount(bool includeLora = false) =>
        named_parameters().Where(p => includeLora || !p.name.Contains(".lora.")).Sum(p => p.parameter.numel());
}
