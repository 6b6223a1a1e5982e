using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Training;

/// <summary>
/// Exponential moving average of a module's parameters: θ' ← m·θ' + (1 − m)·θ, matched by parameter name.
/// Either a private shadow copy (an EMA of weights for evaluation; <see cref="CopyTo"/> puts it into a module),
/// or — via <see cref="IntoTarget"/> — the live parameters of a second module, which is how I-JEPA keeps its
/// target encoder: the target is never trained, only pulled towards the online encoder after each update.
/// </summary>
public sealed class Ema : IDisposable
{
    readonly Dictionary<string, Tensor> _shadow;
    readonly bool _ownsShadow;

    Ema(Dictionary<string, Tensor> shadow, bool ownsShadow)
    {
        _shadow = shadow;
        _ownsShadow = ownsShadow;
    }

    /// <summary>A shadow copy of <paramref name="module"/>'s current parameters (same dtype and device).</summary>
    public Ema(nn.Module module) : this(Snapshot(module), ownsShadow: true) { }

    /// <summary>
    /// Uses <paramref name="target"/>'s own parameters as the shadow: copies <paramref name="online"/>'s weights
    /// into it and turns off its gradients. Later <see cref="Update"/> calls move the target in place.
    /// </summary>
    public static Ema IntoTarget(nn.Module online, nn.Module target)
    {
        var shadow = target.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter, StringComparer.Ordinal);
        var ema = new Ema(shadow, ownsShadow: false);
        ema.Check(online, "online module");
        using (no_grad())
            foreach (var (name, p) in online.named_parameters()) shadow[name].copy_(p);
        foreach (var (_, p) in target.named_parameters()) p.requires_grad = false;
        return ema;
    }

    static Dictionary<string, Tensor> Snapshot(nn.Module module)
    {
        using var _ = no_grad();
        return module.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone().DetachFromDisposeScope(), StringComparer.Ordinal);
    }

    /// <summary>The averaged tensors by parameter name (live: checkpoint them, or read them).</summary>
    public IReadOnlyDictionary<string, Tensor> Shadow => _shadow;

    /// <summary>θ' ← m·θ' + (1 − m)·θ for every parameter; <paramref name="momentum"/> 1 freezes, 0 copies.</summary>
    public void Update(nn.Module module, double momentum)
    {
        if (momentum is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(momentum), momentum, "EMA momentum must be in [0, 1]");
        Check(module, "module");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        foreach (var (name, p) in module.named_parameters())
            _shadow[name].mul_(momentum).add_(p.detach(), alpha: 1 - momentum);
    }

    /// <summary>Writes the averaged weights into <paramref name="module"/> (e.g. to evaluate the EMA model).</summary>
    public void CopyTo(nn.Module module)
    {
        Check(module, "module");
        using var _ = no_grad();
        foreach (var (name, p) in module.named_parameters()) p.copy_(_shadow[name]);
    }

    /// <summary>The shadow as checkpoint state, names prefixed (pass these from <see cref="ITrainable.ExtraState"/>).</summary>
    public IEnumerable<(string Name, Tensor Tensor)> State(string prefix = "ema.") =>
        _shadow.Select(p => (prefix + p.Key, p.Value));

    void Check(nn.Module module, string what)
    {
        var names = module.named_parameters().Select(p => p.name).ToHashSet(StringComparer.Ordinal);
        var missing = _shadow.Keys.Where(k => !names.Contains(k)).ToList();
        var extra = names.Where(n => !_shadow.ContainsKey(n)).ToList();
        if (missing.Count > 0 || extra.Count > 0)
            throw new ArgumentException($"EMA: the {what}'s parameters do not match the shadow's " +
                $"(missing {string.Join(", ", missing.Take(3))}; unexpected {string.Join(", ", extra.Take(3))})");
        foreach (var (name, p) in module.named_parameters())
            if (!p.shape.SequenceEqual(_shadow[name].shape))
                throw new ArgumentException($"EMA: '{name}' has shape [{string.Join(",", p.shape)}] in the {what}, [{string.Join(",", _shadow[name].shape)}] in the shadow");
    }

    public void Dispose()
    {
        if (!_ownsShadow) return;
        foreach (var t in _shadow.Values) t.Dispose();
        _shadow.Clear();
    }
}

/// <summary>
/// EMA momentum over training: I-JEPA raises it linearly from 0.996 to 1.0; BYOL uses a cosine,
/// m(k) = 1 − (1 − m₀)·(cos(πk/K) + 1)/2. Both start at <see cref="Start"/> and end at <see cref="End"/>.
/// </summary>
public sealed record EmaSchedule(double Start = 0.996, double End = 1.0, bool Cosine = false)
{
    public double At(long step, long totalSteps)
    {
        if (totalSteps <= 1) return End;
        double t = Math.Clamp((double)step / (totalSteps - 1), 0, 1);
        double w = Cosine ? (1 - Math.Cos(Math.PI * t)) / 2 : t;
        return Start + (End - Start) * w;
    }
}
