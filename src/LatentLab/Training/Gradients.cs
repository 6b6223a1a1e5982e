using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentLab.Training;

/// <summary>Global gradient norm and clipping over a parameter set (all gradients treated as one vector).</summary>
public static class Gradients
{
    /// <summary>
    /// Scales every gradient so their global L2 norm is at most <paramref name="maxNorm"/> (0 = no clipping)
    /// and returns the norm before clipping, which is what's worth logging: it shows how often and how hard clipping bites.
    /// </summary>
    public static double ClipGlobalNorm(IReadOnlyList<Parameter> parameters, double maxNorm)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxNorm);
        if (maxNorm == 0) return GlobalNorm(parameters);
        return nn.utils.clip_grad_norm_(parameters, maxNorm);
    }

    /// <summary>L2 norm of all gradients together (parameters without a gradient count as zero).</summary>
    public static double GlobalNorm(IEnumerable<Parameter> parameters)
    {
        using var scope = NewDisposeScope();
        double sum = 0;
        foreach (var p in parameters)
        {
            var g = p.grad;
            if (g is null) continue;
            sum += g.to(ScalarType.Float64).square().sum().item<double>();
        }
        return Math.Sqrt(sum);
    }
}
