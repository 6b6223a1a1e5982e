using System.Diagnostics;
using static TorchSharp.torch;

namespace LatentLab.Tensors;

/// <summary>Measures this machine's own matmul rate, the yardstick benchmarks divide by.</summary>
public static class Throughput
{
    /// <summary>Best-of-N GFLOP/s of an n×n×n matmul in <paramref name="dtype"/> (2n³ flops each).</summary>
    public static double MatmulGflops(int n = 1024, ScalarType dtype = ScalarType.Float32, int repeats = 5, Device? device = null)
    {
        TorchRuntime.Initialize();
        using var scope = NewDisposeScope();
        var a = randn(n, n, device: device).to(dtype);
        var b = randn(n, n, device: device).to(dtype);
        a.matmul(b).Dispose(); // warm-up: thread pool and packing buffers
        double best = double.MaxValue;
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            using var c = a.matmul(b);
            if (device is not null && device.type == TorchSharp.DeviceType.CUDA) cuda.synchronize();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * n * n * n / best / 1e9;
    }

    /// <summary>Forward FLOPs of a decoder for B×T tokens: 2·params·tokens plus attention's 4·T²·heads·head_dim per layer and row.</summary>
    public static double DecoderForwardFlops(Models.TransformerConfig c, long batch, long seq)
    {
        long perLayer = (long)c.HiddenSize * c.NumHeads * c.HeadDim * 2 + (long)c.HiddenSize * c.NumKvHeads * c.HeadDim * 2
                        + 3L * c.HiddenSize * c.IntermediateSize;
        double matmulParams = (double)perLayer * c.NumLayers + (double)c.HiddenSize * c.VocabSize;
        double attention = 4.0 * seq * seq * c.NumHeads * c.HeadDim * c.NumLayers / 2; // causal: half the square
        return batch * (2.0 * matmulParams * seq + attention);
    }
}
