using static TorchSharp.torch;

namespace LatentLab.Models;

/// <summary>
/// Per-layer keys and values ([batch, kv_heads, length, head_dim], keys after RoPE) plus the padding mask
/// of everything cached so far. The cache owns its tensors: dispose it when done.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor?[] _keys;
    readonly Tensor?[] _values;
    Tensor? _mask; // [B, S] int64, 1 = real token
    Tensor? _expiry; // [B, S] int64: the first query column that no longer sees the key (null: every key stays visible)
    Tensor? _next; // [B] int64: the RoPE position the next real token of each row takes (null: the count of real tokens)
    readonly bool _keepGraph;

    /// <param name="keepGraph">Keep the autograd graph of cached keys and values, so a loss on later positions
    /// reaches the earlier positions through attention (training through a cache, as latent recurrence does);
    /// off (the default) for generation, where the cache must not hold a graph alive.</param>
    public KvCache(int numLayers, bool keepGraph = false)
    {
        _keys = new Tensor?[numLayers];
        _values = new Tensor?[numLayers];
        _keepGraph = keepGraph;
    }

    public bool KeepsGraph => _keepGraph;

    public int NumLayers => _keys.Length;
    public long Length => _mask?.shape[1] ?? 0;
    public Tensor? Mask => _mask;

    /// <summary>
    /// [B, S]: for each cached key, the first query column from which it is hidden (long.MaxValue: never); null when
    /// no key was ever hidden. This is how a bottleneck trace keeps its thought out of the answer's sight while
    /// decoding (see <see cref="DecoderLM.Forward"/>'s keyExpiry).
    /// </summary>
    public Tensor? Expiry => _expiry;

    /// <summary>[B]: the position the next real token of each row takes (one past the last real position so far).</summary>
    public Tensor? NextPositions => _next ?? _mask?.sum(1);
    public Tensor? Keys(int layer) => _keys[layer];
    public Tensor? Values(int layer) => _values[layer];

    /// <summary>
    /// A cache pre-filled with a synthetic prefix (KV-prefix injection): one (K, V) pair per layer, each
    /// [batch or 1, kv_heads, P, head_dim], keys as the model stores them (after RoPE). Later tokens take
    /// positions P, P+1, ... and attend to every prefix slot.
    /// </summary>
    public static KvCache FromPrefix(IReadOnlyList<(Tensor Key, Tensor Value)> prefix, long batch)
    {
        var cache = new KvCache(prefix.Count);
        long p = prefix[0].Key.shape[2];
        for (int l = 0; l < prefix.Count; l++)
        {
            var (k, v) = prefix[l];
            if (k.dim() != 4 || v.dim() != 4 || k.shape[2] != p || v.shape[2] != p)
                throw new ArgumentException($"prefix layer {l}: expected [B, kv_heads, {p}, head_dim] keys and values");
            cache._keys[l] = (k.shape[0] == batch ? k : k.expand(batch, -1, -1, -1)).contiguous().DetachFromDisposeScope();
            cache._values[l] = (v.shape[0] == batch ? v : v.expand(batch, -1, -1, -1)).contiguous().DetachFromDisposeScope();
        }
        cache._mask = ones(batch, p, dtype: ScalarType.Int64, device: prefix[0].Key.device).DetachFromDisposeScope();
        return cache;
    }

    /// <summary>
    /// Hides the cached keys at columns [<paramref name="from"/>, <paramref name="to"/>) from every query at column
    /// <paramref name="hideFrom"/> or later (all rows): how a generator closes a bottleneck trace's thought once its
    /// slots are written.
    /// </summary>
    public void Hide(long from, long to, long hideFrom)
    {
        if (_mask is null || from < 0 || to > Length || from > to)
            throw new ArgumentOutOfRangeException(nameof(to), $"cannot hide columns [{from}, {to}) of a cache of length {Length}");
        using var scope = NewDisposeScope();
        var e = _expiry ?? full(_mask.shape[0], _mask.shape[1], long.MaxValue, dtype: ScalarType.Int64, device: _mask.device);
        var cols = arange(Length, dtype: ScalarType.Int64, device: _mask.device).unsqueeze(0);
        var hidden = cols.ge(from).logical_and(cols.lt(to));
        var updated = where(hidden, minimum(e, full_like(e, hideFrom)), e).DetachFromDisposeScope();
        _expiry?.Dispose();
        _expiry = updated;
    }

    /// <summary>
    /// A cache holding the given per-layer keys and values ([B, kv_heads, S, head_dim], keys after RoPE) and
    /// their [B, S] padding mask, as they are (no copy, graph kept when <paramref name="keepGraph"/>): how a
    /// recomputed step (gradient checkpointing) rebuilds the context it attended to.
    /// </summary>
    public static KvCache FromTensors(IReadOnlyList<(Tensor Key, Tensor Value)> kv, Tensor mask, bool keepGraph)
    {
        var cache = new KvCache(kv.Count, keepGraph);
        for (int l = 0; l < kv.Count; l++)
        {
            cache._keys[l] = kv[l].Key.alias().DetachFromDisposeScope();
            cache._values[l] = kv[l].Value.alias().DetachFromDisposeScope();
        }
        cache._mask = mask.to(ScalarType.Int64).alias().DetachFromDisposeScope();
        return cache;
    }

    internal void AppendMask(Tensor chunkMask)
    {
        var m = _mask is null ? chunkMask.to(ScalarType.Int64) : cat(new[] { _mask, chunkMask.to(ScalarType.Int64) }, 1);
        _mask?.Dispose();
        _mask = m.DetachFromDisposeScope();
    }

    /// <summary>Appends a chunk's key expiry ([B, T], or null: visible forever) after the mask has grown by that chunk.</summary>
    internal void AppendExpiry(Tensor? chunkExpiry, long chunk)
    {
        if (chunkExpiry is null && _expiry is null) return;
        long b = _mask!.shape[0], before = Length - chunk;
        var dev = _mask.device;
        var old = _expiry ?? full(b, before, long.MaxValue, dtype: ScalarType.Int64, device: dev);
        var add = chunkExpiry?.to(ScalarType.Int64) ?? full(b, chunk, long.MaxValue, dtype: ScalarType.Int64, device: dev);
        var e = cat(new[] { old, add }, 1).DetachFromDisposeScope();
        _expiry?.Dispose();
        _expiry = e;
    }

    /// <summary>Records where the next real token of each row goes: one past the last real position of the chunk.</summary>
    internal void AdvancePositions(Tensor positions, Tensor chunkMask, Tensor before)
    {
        // The last real token's position, not the largest: a bottleneck trace's slots go back behind its thought.
        var real = chunkMask.gt(0);
        long t = chunkMask.shape[1];
        var lastIdx = (real.to(ScalarType.Int64) * (arange(t, dtype: ScalarType.Int64, device: chunkMask.device).unsqueeze(0) + 1)).argmax(1, keepdim: true);
        var last = positions.gather(1, lastIdx).squeeze(1);
        var next = where(real.any(1), last + 1, before).DetachFromDisposeScope();
        _next?.Dispose();
        _next = next;
    }

    /// <summary>Copies another cache's expiry and next positions (rows broadcast from batch 1 when asked).</summary>
    internal void CopyLayout(KvCache from, Func<Tensor, Tensor> batch)
    {
        if (from._expiry is not null) { _expiry?.Dispose(); _expiry = batch(from._expiry).clone().DetachFromDisposeScope(); }
        if (from._next is not null) { _next?.Dispose(); _next = batch(from._next.unsqueeze(1)).squeeze(1).clone().DetachFromDisposeScope(); }
    }

    /// <summary>Appends this step's K/V for a layer and returns the full K/V to attend over.</summary>
    internal (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        var oldK = _keys[layer];
        var oldV = _values[layer];
        var newK = oldK is null ? k : cat(new[] { oldK, k }, 2);
        var newV = oldV is null ? v : cat(new[] { oldV, v }, 2);
        // The cache keeps its own references; callers' scopes may dispose theirs.
        _keys[layer] = (_keepGraph ? newK.alias() : newK.detach()).DetachFromDisposeScope();
        _values[layer] = (_keepGraph ? newV.alias() : newV.detach()).DetachFromDisposeScope();
        oldK?.Dispose();
        oldV?.Dispose();
        return (newK, newV);
    }

    public void Dispose()
    {
        foreach (var t in _keys) t?.Dispose();
        foreach (var t in _values) t?.Dispose();
        _mask?.Dispose();
        _expiry?.Dispose();
        _next?.Dispose();
    }
}
