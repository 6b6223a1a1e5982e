using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.Hooks;
using LatentLab.IO;
using LatentLab.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LatentLab.Methods.JepaReasoner;

#pragma warning disable IDE1006 // field names are weight names

public enum TalkerKind { Mono, Dual }

/// <summary>
/// A Talker's shape. <see cref="Decoder"/> is the token decoder (its vocabulary is the Reasoner's); <see cref="LatentDim"/>
/// the Reasoner's width; <see cref="EncoderLayers"/> the Dual Talker's encoder depth (ignored by Mono).
/// </summary>
public sealed record TalkerConfig(TalkerKind Kind, int LatentDim, TransformerConfig Decoder, int EncoderLayers = 1)
{
    public const string ConfigFile = "talker.json", WeightsFile = "talker.safetensors";

    public JsonObject ToJson() => new()
    {
        ["kind"] = Kind.ToString().ToLowerInvariant(),
        ["latent_dim"] = LatentDim,
        ["encoder_layers"] = EncoderLayers,
        ["decoder"] = Decoder.ToHuggingFace(),
    };

    public static TalkerConfig FromJson(JsonObject o, string source)
    {
        try
        {
            var kind = (string?)o["kind"] switch
            {
                "mono" => TalkerKind.Mono,
                "dual" => TalkerKind.Dual,
                var k => throw new InvalidDataException($"{source}: unknown talker kind '{k}' (mono or dual)"),
            };
            return new TalkerConfig(kind, (int)o["latent_dim"]!, TransformerConfig.FromHuggingFace(o["decoder"]!.AsObject()), (int)(o["encoder_layers"] ?? 1));
        }
        catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{source}: not a talker config ({e.Message})", e);
        }
    }

    /// <summary>The small Llama-family decoder a Talker uses by default.</summary>
    public static TransformerConfig DecoderConfig(int vocab, int hidden, int layers, int heads, int maxPositions, int? bos, int? eos, int? pad) =>
        TransformerConfig.Small("LlamaForCausalLM", vocab, hidden, layers, heads, 3, maxPositions, bos, eos, pad);
}

/// <summary>One incremental decoding session of a Talker (see <see cref="Talker.StartDecoding"/>); owns its cache.</summary>
public abstract class TalkerDecoding : IDisposable
{
    /// <summary>Next decoder inputs [B, 1] → next-token logits [B, V].</summary>
    public abstract Tensor Step(Tensor ids);
    public abstract void Dispose();
}

/// <summary>
/// Turns a finished latent chain into tokens, trained with cross-entropy. It sees the whole chain before its first
/// token (continuous guidance) and its tokens never flow back into the chain (error containment).
/// </summary>
public abstract class Talker : nn.Module
{
    protected Talker(string name, TalkerConfig config) : base(name) => Config = config;

    public TalkerConfig Config { get; }

    /// <summary>
    /// Next-token logits [B, T, V] for decoder inputs <paramref name="inputIds"/> [B, T] (a start token followed by the
    /// tokens so far) given the latent chain [B, L, D]. Position i predicts token i + 1.
    /// </summary>
    public abstract Tensor Logits(Tensor latents, Tensor inputIds);

    /// <summary>
    /// Generates up to <paramref name="maxNew"/> tokens per row from the latent chain. <paramref name="choose"/> maps the
    /// step and that step's logits [B, V] to the tokens [B] (greedy argmax when null); a row stops after <paramref name="eos"/>.
    /// KV-cached for both Talkers (<see cref="StartDecoding"/>): the chain is read once, then one token per step.
    /// </summary>
    public int[][] Generate(Tensor latents, int maxNew, int eos, Func<int, Tensor, Tensor>? choose = null)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        long b = latents.shape[0];
        int start = Config.Decoder.BosTokenId ?? throw new InvalidOperationException("talker decoder config has no bos token");
        using var decoding = StartDecoding(latents);
        var logits = decoding.Step(full(b, 1, start, dtype: ScalarType.Int64, device: latents.device));
        var outRows = Enumerable.Range(0, (int)b).Select(_ => new List<int>()).ToArray();
        var done = new bool[b];
        for (int step = 0; step < maxNew && done.Any(d => !d); step++)
        {
            using var inner = NewDisposeScope();
            var next = (choose?.Invoke(step, logits) ?? logits.argmax(-1)).to(ScalarType.Int64);
            var values = next.cpu().data<long>().ToArray();
            for (int i = 0; i < b; i++)
            {
                if (done[i]) continue;
                outRows[i].Add((int)values[i]);
                if (values[i] == eos) done[i] = true;
            }
            if (step + 1 < maxNew && done.Any(d => !d)) logits = decoding.Step(next.view(b, 1)).MoveToOuterDisposeScope();
        }
        return outRows.Select(r => r.ToArray()).ToArray();
    }

    /// <summary>
    /// An incremental decoding session over one latent chain [B, L, D]: each <see cref="TalkerDecoding.Step"/> takes the
    /// next decoder input tokens [B, 1] (the start token first) and returns the next-token logits [B, V], keeping the
    /// keys and values of everything before in a cache. The same function as <see cref="Logits"/> (a test checks it).
    /// </summary>
    public abstract TalkerDecoding StartDecoding(Tensor latents);

    public static Talker Create(TalkerConfig config) => config.Kind switch
    {
        TalkerKind.Mono => new MonoTalker(config),
        TalkerKind.Dual => new DualTalker(config),
        _ => throw new ArgumentException($"unknown talker kind {config.Kind}"),
    };

    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(Path.Combine(dir, TalkerConfig.ConfigFile), Config.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        using var scope = NewDisposeScope();
        SafetensorsWriter.Write(Path.Combine(dir, TalkerConfig.WeightsFile),
            named_parameters().Select(p => new KeyValuePair<string, Tensor>(p.name, p.parameter.detach().contiguous())));
    }

    public static Talker Load(string dir)
    {
        var cfgPath = Path.Combine(dir, TalkerConfig.ConfigFile);
        if (!File.Exists(cfgPath)) throw new FileNotFoundException($"{cfgPath} not found: is {dir} a Talker folder written by `reasoner talker`?", cfgPath);
        JsonObject json;
        try { json = JsonNode.Parse(File.ReadAllText(cfgPath))!.AsObject(); }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException) { throw new InvalidDataException($"{cfgPath}: not valid JSON ({e.Message})", e); }
        var talker = Create(TalkerConfig.FromJson(json, cfgPath));
        var weights = Path.Combine(dir, TalkerConfig.WeightsFile);
        using var f = SafetensorsCheckpoint.Open(weights);
        using (no_grad())
            foreach (var (name, p) in talker.named_parameters())
            {
                if (!f.Contains(name)) throw new InvalidDataException($"{weights}: lacks '{name}'");
                using var t = f.Read(name, p.dtype, p.device);
                if (!t.shape.SequenceEqual(p.shape)) throw new InvalidDataException($"{weights}: '{name}' has shape [{string.Join(",", t.shape)}], the config implies [{string.Join(",", p.shape)}]");
                p.copy_(t);
            }
        talker.eval();
        return talker;
    }
}

/// <summary>Mono Talker: one decoder-only transformer that reads the (projected) latent chain as a prefix, then its tokens.</summary>
public sealed class MonoTalker : Talker
{
    readonly Proj latent_in;
    readonly DecoderLM decoder;

    public MonoTalker(TalkerConfig config) : base("MonoTalker", config)
    {
        latent_in = new Proj("latent_in", config.LatentDim, config.Decoder.HiddenSize, true);
        decoder = new DecoderLM(config.Decoder);
        RegisterComponents();
    }

    public DecoderLM Decoder => decoder;

    public override TalkerDecoding StartDecoding(Tensor latents) => new MonoDecoding(this, latents);

    /// <summary>Mono decoding: the projected chain and the start token fill the cache in one pass, then one token per step.</summary>
    sealed class MonoDecoding(MonoTalker talker, Tensor latents) : TalkerDecoding
    {
        readonly KvCache _cache = new(talker.decoder.Config.NumLayers);
        bool _started;

        public override Tensor Step(Tensor ids)
        {
            using var scope = NewDisposeScope();
            var d = talker.decoder;
            Tensor embeds = _started ? d.Embed(ids) : cat(new[] { talker.latent_in.forward(latents.to(ScalarType.Float32)), d.Embed(ids) }, 1);
            _started = true;
            using var output = d.Forward(inputEmbeds: embeds, cache: _cache, logits: LogitsMode.LastOnly);
            return output.Logits!.select(1, -1).MoveToOuterDisposeScope();
        }

        public override void Dispose() => _cache.Dispose();
    }

    public override Tensor Logits(Tensor latents, Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        long l = latents.shape[1], t = inputIds.shape[1];
        var embeds = cat(new[] { latent_in.forward(latents.to(ScalarType.Float32)), decoder.Embed(inputIds) }, 1);
        using var output = decoder.Forward(inputEmbeds: embeds);
        return output.Logits!.narrow(1, l, t).MoveToOuterDisposeScope();
    }
}

/// <summary>Cross-attention from decoder positions to encoder states; RoPE on both sides lets token i find latent i by offset.</summary>
public sealed class CrossAttention : nn.Module
{
    readonly Proj q_proj, k_proj, v_proj, o_proj;
    readonly int _heads, _headDim;

    public CrossAttention(TransformerConfig c) : base("cross_attn")
    {
        _heads = c.NumHeads;
        _headDim = c.HeadDim;
        q_proj = new Proj("q_proj", c.HiddenSize, c.NumHeads * c.HeadDim, false);
        k_proj = new Proj("k_proj", c.HiddenSize, c.NumHeads * c.HeadDim, false);
        v_proj = new Proj("v_proj", c.HiddenSize, c.NumHeads * c.HeadDim, false);
        o_proj = new Proj("o_proj", c.NumHeads * c.HeadDim, c.HiddenSize, false);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor memory, (Tensor Cos, Tensor Sin) qRope, (Tensor Cos, Tensor Sin) kRope)
    {
        using var scope = NewDisposeScope();
        return Forward(x, MemoryKv(memory, kRope), qRope).MoveToOuterDisposeScope();
    }

    /// <summary>The keys (after RoPE) and values of the encoded chain [B, heads, S, head dim]: computed once per chain when decoding with a cache.</summary>
    public (Tensor K, Tensor V) MemoryKv(Tensor memory, (Tensor Cos, Tensor Sin) kRope)
    {
        using var scope = NewDisposeScope();
        long b = memory.shape[0], s = memory.shape[1];
        var k = Rope.Apply(k_proj.forward(memory).view(b, s, _heads, _headDim).transpose(1, 2), kRope.Cos, kRope.Sin);
        var v = v_proj.forward(memory).view(b, s, _heads, _headDim).transpose(1, 2);
        return (k.MoveToOuterDisposeScope(), v.MoveToOuterDisposeScope());
    }

    /// <summary>Decoder positions x [B, T, H] (queries rotated by <paramref name="qRope"/>) attending to the chain's keys and values.</summary>
    public Tensor Forward(Tensor x, (Tensor K, Tensor V) memory, (Tensor Cos, Tensor Sin) qRope)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var q = Rope.Apply(q_proj.forward(x).view(b, t, _heads, _headDim).transpose(1, 2), qRope.Cos, qRope.Sin);
        var o = F.scaled_dot_product_attention(q, memory.K, memory.V);
        return o_proj.forward(o.transpose(1, 2).reshape(b, t, _heads * _headDim)).MoveToOuterDisposeScope();
    }
}

/// <summary>A decoder block of the Dual Talker: causal self-attention, cross-attention to the encoded chain, SwiGLU MLP (pre-norm).</summary>
public sealed class CrossBlock : nn.Module
{
    readonly RmsNorm input_layernorm, cross_layernorm, post_attention_layernorm;
    readonly Attention self_attn;
    readonly CrossAttention cross_attn;
    readonly Mlp mlp;

    public CrossBlock(TransformerConfig c, int index) : base($"{index}")
    {
        input_layernorm = new RmsNorm("input_layernorm", c.HiddenSize, c.NormEps, false);
        cross_layernorm = new RmsNorm("cross_layernorm", c.HiddenSize, c.NormEps, false);
        post_attention_layernorm = new RmsNorm("post_attention_layernorm", c.HiddenSize, c.NormEps, false);
        self_attn = new Attention(c);
        cross_attn = new CrossAttention(c);
        mlp = new Mlp(c);
        RegisterComponents();
    }

    public CrossAttention CrossAttn => cross_attn;

    public Tensor Forward(Tensor x, Tensor memory, (Tensor Cos, Tensor Sin) rope, AttentionMask causal, (Tensor Cos, Tensor Sin) memRope, int layer) =>
        Forward(x, cross_attn.MemoryKv(memory, memRope), rope, causal, null, layer);

    /// <summary>As above with the chain's keys and values given (<see cref="CrossAttention.MemoryKv"/>) and an optional self-attention cache.</summary>
    public Tensor Forward(Tensor x, (Tensor K, Tensor V) memory, (Tensor Cos, Tensor Sin) rope, AttentionMask self, KvCache? cache, int layer)
    {
        x = x + self_attn.Forward(input_layernorm.forward(x), rope.Cos, rope.Sin, self, cache, layer);
        x = x + cross_attn.Forward(cross_layernorm.forward(x), memory, rope);
        return x + mlp.forward(post_attention_layernorm.forward(x));
    }
}

/// <summary>
/// Dual Talker: a bidirectional encoder over the latent chain (the decoder's block type with an all-visible mask) and a
/// token decoder whose blocks cross-attend to the encoded chain.
/// </summary>
public sealed class DualTalker : Talker
{
    readonly Proj latent_in;
    readonly ModuleList<Block> encoder;
    readonly RmsNorm encoder_norm;
    readonly Embedding embed_tokens;
    readonly ModuleList<CrossBlock> layers;
    readonly RmsNorm norm;
    readonly Rope _rope;

    public DualTalker(TalkerConfig config) : base("DualTalker", config)
    {
        var c = config.Decoder;
        c.Validate();
        latent_in = new Proj("latent_in", config.LatentDim, c.HiddenSize, true);
        encoder = new ModuleList<Block>(Enumerable.Range(0, config.EncoderLayers).Select(i => new Block(c, i)).ToArray());
        encoder_norm = new RmsNorm("encoder_norm", c.HiddenSize, c.NormEps, false);
        embed_tokens = nn.Embedding(c.VocabSize, c.HiddenSize);
        layers = new ModuleList<CrossBlock>(Enumerable.Range(0, c.NumLayers).Select(i => new CrossBlock(c, i)).ToArray());
        norm = new RmsNorm("norm", c.HiddenSize, c.NormEps, false);
        RegisterComponents();
        _rope = new Rope(c.HeadDim, c.RopeTheta, c.RopeScaling);
        using var _ = no_grad();
        nn.init.normal_(embed_tokens.weight!, 0, 0.02);
    }

    (Tensor, Tensor) Tables(long b, long n, Device dev) => _rope.Tables(arange(n, dtype: ScalarType.Int64, device: dev).unsqueeze(0).expand(b, n));

    /// <summary>The encoded chain [B, L, H].</summary>
    public Tensor Encode(Tensor latents)
    {
        using var scope = NewDisposeScope();
        long b = latents.shape[0], l = latents.shape[1];
        var x = latent_in.forward(latents.to(ScalarType.Float32));
        var (cos, sin) = Tables(b, l, latents.device);
        using var all = new AttentionMask(ones(b, 1, l, l, dtype: ScalarType.Bool, device: latents.device), causal: false);
        var hooks = new HookRunner(null, encoder.Count, null, null, 0, b, l, new Dictionary<string, Tensor>());
        for (int i = 0; i < encoder.Count; i++) x = encoder[i].Forward(x, cos, sin, all, null, i, hooks);
        return encoder_norm.forward(x).MoveToOuterDisposeScope();
    }

    public override TalkerDecoding StartDecoding(Tensor latents) => new DualDecoding(this, latents);

    /// <summary>
    /// Dual decoding: the chain is encoded once and each block's cross-attention keys and values are computed once;
    /// the decoder's self-attention keeps a KV cache, so each step runs one token through the blocks.
    /// </summary>
    sealed class DualDecoding : TalkerDecoding
    {
        readonly DualTalker _t;
        readonly KvCache _cache;
        readonly (Tensor K, Tensor V)[] _memory;
        long _position;

        public DualDecoding(DualTalker talker, Tensor latents)
        {
            _t = talker;
            _cache = new KvCache(talker.layers.Count);
            using var scope = NewDisposeScope();
            var memory = talker.Encode(latents);
            var memRope = talker.Tables(latents.shape[0], latents.shape[1], latents.device);
            _memory = Enumerable.Range(0, talker.layers.Count).Select(i =>
            {
                var (k, v) = talker.layers[i].CrossAttn.MemoryKv(memory, memRope);
                return (k.DetachFromDisposeScope(), v.DetachFromDisposeScope());
            }).ToArray();
        }

        public override Tensor Step(Tensor ids)
        {
            using var scope = NewDisposeScope();
            long b = ids.shape[0], t = ids.shape[1];
            var dev = ids.device;
            var rope = _t._rope.Tables(arange(_position, _position + t, dtype: ScalarType.Int64, device: dev).unsqueeze(0).expand(b, t));
            _cache.AppendMask(ones(b, t, dtype: ScalarType.Int64, device: dev));
            long s = _cache.Mask!.shape[1];
            // Query i (absolute position _position + i) sees every key up to itself: the cached ones and the new ones before it.
            var qIdx = arange(_position, _position + t, dtype: ScalarType.Int64, device: dev).view(1, 1, t, 1);
            var kIdx = arange(s, dtype: ScalarType.Int64, device: dev).view(1, 1, 1, s);
            using var self = new AttentionMask((kIdx <= qIdx).expand(b, 1, t, s), causal: false);
            var x = _t.embed_tokens.forward(ids);
            for (int i = 0; i < _t.layers.Count; i++) x = _t.layers[i].Forward(x, _memory[i], rope, self, _cache, i);
            _position += t;
            return F.linear(_t.norm.forward(x.select(1, -1)), _t.embed_tokens.weight!).MoveToOuterDisposeScope();
        }

        public override void Dispose()
        {
            _cache.Dispose();
            foreach (var (k, v) in _memory) { k.Dispose(); v.Dispose(); }
        }
    }

    public override Tensor Logits(Tensor latents, Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        var memory = Encode(latents);
        long b = inputIds.shape[0], t = inputIds.shape[1], l = latents.shape[1];
        var dev = inputIds.device;
        var rope = Tables(b, t, dev);
        var memRope = Tables(b, l, dev);
        var idx = arange(t, dtype: ScalarType.Int64, device: dev);
        using var causal = new AttentionMask((idx.view(1, 1, 1, t) <= idx.view(1, 1, t, 1)).expand(b, 1, t, t), causal: true);
        var x = embed_tokens.forward(inputIds);
        for (int i = 0; i < layers.Count; i++) x = layers[i].Forward(x, memory, rope, causal, memRope, i);
        var h = norm.forward(x);
        return F.linear(h, embed_tokens.weight!).MoveToOuterDisposeScope();
    }
}
