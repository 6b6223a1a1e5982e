using static TorchSharp.torch;

namespace LatentLab.Hooks;

/// <summary>
/// Applies a <see cref="HookSet"/> during one forward pass. Built once per forward; only the points that
/// some hook names are looked at, and only requested captures are kept.
/// </summary>
internal sealed class HookRunner
{
    readonly Dictionary<HookPoint, List<HookSpec>> _byPoint = new();
    readonly Dictionary<string, Tensor> _captures;
    readonly Tensor? _chunkIds;      // [B,T] token ids of this chunk, when the input was ids
    readonly Tensor? _chunkMask;     // [B,T] 1 for real tokens
    readonly long _offset;           // cache length before this chunk
    readonly long _batch, _len;

    public HookRunner(HookSet? hooks, int numLayers, Tensor? chunkIds, Tensor? chunkMask, long offset, long batch, long len,
        Dictionary<string, Tensor> captures)
    {
        _captures = captures;
        _chunkIds = chunkIds;
        _chunkMask = chunkMask;
        _offset = offset;
        _batch = batch;
        _len = len;
        if (hooks is null) return;
        foreach (var h in hooks.Hooks)
        {
            var p = HookPoint.Parse(h.Point).Resolve(numLayers);
            if (h.Action is HookAction.Add or HookAction.Replace && h.Value is null)
                throw new ArgumentException($"hook {h.Action} at {h.Point} has no tensor value");
            if (!_byPoint.TryGetValue(p, out var list)) _byPoint[p] = list = new List<HookSpec>();
            list.Add(h);
        }
    }

    public bool Any => _byPoint.Count > 0;

    public bool Wants(HookSite site, int layer = -1) => _byPoint.ContainsKey(new HookPoint(site, layer));

    /// <summary>Runs the hooks registered at a point; returns x unchanged (same object) when none are.</summary>
    public Tensor At(HookSite site, int layer, Tensor x)
    {
        var point = new HookPoint(site, layer);
        if (!_byPoint.TryGetValue(point, out var list)) return x;
        foreach (var h in list) x = Apply(h, x, point.PositionDim);
        return x;
    }

    /// <summary>Applies one hook to x, whose axis <paramref name="dim"/> holds this chunk's positions (any rank ≥ 2).</summary>
    Tensor Apply(HookSpec h, Tensor x, int dim)
    {
        var idx = Resolve(h, x.device);
        if (idx is null && h.At.Kind != PositionKind.All) return x; // positions not in this chunk
        if (h.Action == HookAction.Capture)
        {
            var got = idx is null ? x : x.gather(dim, Spread(idx, x, dim));
            if (h.Detach) got = got.detach();
            if (h.CaptureDType is { } dt) got = got.to(Tensors.TorchRuntime.ParseDType(dt));
            if (_captures.TryGetValue(h.Key, out var old)) old.Dispose();
            _captures[h.Key] = got.DetachFromDisposeScope();
            return x;
        }

        long p = idx is null ? _len : idx.shape[1];
        var value = h.Action == HookAction.Scale ? null : Shape(h.Value!, p, x, dim).to(x.dtype, x.device);
        if (idx is null)
        {
            return h.Action switch
            {
                HookAction.Add => x + value! * h.Scale,
                HookAction.Replace => value!.expand_as(x),
                _ => x * h.Scale,
            };
        }
        var index = Spread(idx, x, dim);
        var current = x.gather(dim, index);
        var updated = h.Action switch
        {
            HookAction.Add => current + value! * h.Scale,
            HookAction.Replace => value!.expand_as(current),
            _ => current * h.Scale,
        };
        // scatter (not scatter_) keeps autograd paths to both x and the hook's tensor.
        return x.scatter(dim, index, updated);
    }

    /// <summary>Positions [B, P] spread to x's shape with P on axis <paramref name="dim"/>, as gather and scatter want.</summary>
    Tensor Spread(Tensor idx, Tensor x, int dim)
    {
        var view = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
        view[0] = _batch;
        view[dim] = idx.shape[1];
        var target = x.shape.ToArray();
        target[dim] = idx.shape[1];
        return idx.view(view).expand(target);
    }

    Tensor Shape(Tensor v, long p, Tensor x, int dim)
    {
        // A value lacking the position axis, for a single position, means one value per row ([B, D] at the residual).
        if (v.dim() == x.dim() - 1 && p == 1 && v.shape[0] == _batch && _batch != 1) return v.unsqueeze(dim);
        return v;
    }

    /// <summary>
    /// Chunk-local indices [B, P] for the hook's positions, or null (all positions / none in this chunk). They are made
    /// on <paramref name="device"/>, the device of the tensor they will index: gather and scatter need both on one.
    /// </summary>
    internal Tensor? Resolve(HookSpec h, Device device)
    {
        var at = h.At;
        long total = _offset + _len;
        switch (at.Kind)
        {
            case PositionKind.All:
                return null;
            case PositionKind.Index:
            {
                long a = at.Start >= 0 ? at.Start : total + at.Start;
                long local = a - _offset;
                if (local < 0 || local >= _len) return null;
                return full(_batch, 1, local, dtype: ScalarType.Int64, device: device);
            }
            case PositionKind.Range:
            {
                long a = at.Start >= 0 ? at.Start : total + at.Start;
                long b = at.End > 0 ? at.End : total + at.End;
                long lo = Math.Max(a, _offset) - _offset, hi = Math.Min(b, total) - _offset;
                if (hi <= lo) return null;
                return arange(lo, hi, dtype: ScalarType.Int64, device: device).unsqueeze(0).expand(_batch, hi - lo).contiguous();
            }
            case PositionKind.Last:
            {
                if (_chunkMask is null) return full(_batch, 1, _len - 1, dtype: ScalarType.Int64, device: device);
                // Index of the last 1 in each row: argmax over (mask * position) works for right and left padding.
                var pos = arange(_len, dtype: ScalarType.Int64, device: device).unsqueeze(0);
                var last = (_chunkMask.to(ScalarType.Int64, device) * (pos + 1)).argmax(1, keepdim: true);
                return last;
            }
            default:
            {
                if (_chunkIds is null)
                    throw new ArgumentException($"hook at {h.Point}: token positions need token ids, but the input was embeddings");
                var rows = new long[_batch];
                var hits = (_chunkIds == at.TokenId).to(ScalarType.Int64).cpu();
                var acc = hits.data<long>().ToArray();
                for (int b = 0; b < _batch; b++)
                {
                    int seen = -1;
                    rows[b] = -1;
                    for (int t = 0; t < _len; t++)
                        if (acc[b * _len + t] == 1 && ++seen == at.Occurrence) { rows[b] = t; break; }
                    if (rows[b] < 0)
                        throw new ArgumentException($"hook at {h.Point}: token {at.TokenId} (occurrence {at.Occurrence}) not found in row {b}");
                }
                return tensor(rows, dtype: ScalarType.Int64).unsqueeze(1).to(device);
            }
        }
    }
}
