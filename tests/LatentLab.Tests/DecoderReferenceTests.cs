using LatentLab.Models;
using LatentLab.Tensors;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Tests;

/// <summary>
/// An independent forward pass, written with explicit loops in double precision straight from the
/// families' definitions (RoPE rotate-half, GQA, both RMSNorm kinds, QK-norm, soft-capping, sliding
/// windows, sandwich norms), compared with DecoderLM's float32 output.
/// </summary>
public sealed class DecoderReferenceTests
{
    // float32 model against a float64 reference over two layers: 2e-4 absolute on logits of size ~1-10.
    const double Tolerance = 2e-4;

    [Theory]
    [MemberData(nameof(Archs))]
    public void ForwardMatchesDoublePrecisionReference(string arch)
    {
        TorchRuntime.Initialize();
        TorchRuntime.Seed(7);
        var cfg = TinyModels.Config(arch);
        using var model = new DecoderLM(cfg);
        Randomise(model);
        int[] ids = { 1, 5, 9, 17, 33, 2, 40, 11 };
        using var input = tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var output = model.Forward(input);
        var got = output.Logits!.squeeze(0).to(ScalarType.Float64).data<double>().ToArray();
        var want = Reference(cfg, Weights(model), ids);
        double maxDiff = got.Zip(want).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(maxDiff < Tolerance, $"{arch}: max |diff| = {maxDiff:E2}");
        // The comparison must not be vacuous: logits vary across positions and vocab.
        Assert.True(want.Max() - want.Min() > 0.5, $"{arch}: reference logits are nearly constant");
    }

    public static IEnumerable<object[]> Archs() => TinyModels.Architectures.Select(a => new object[] { a });

    /// <summary>A tiny model of a family with every weight (norms included) random, in eval mode: the tests' usual subject.</summary>
    internal static DecoderLM RandomTiny(string arch, long seed)
    {
        TorchRuntime.Initialize();
        TorchRuntime.Seed(seed);
        var m = new DecoderLM(TinyModels.Config(arch));
        Randomise(m);
        m.eval();
        return m;
    }

    /// <summary>Norm weights are 1 (or 0 for Gemma) at init, which would hide a wrong norm formula.</summary>
    internal static void Randomise(DecoderLM model)
    {
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (name.Contains("norm")) p.copy_(rand_like(p) * 0.8 + 0.6);
            else p.copy_(randn_like(p) * 0.3);
        }
    }

    static Dictionary<string, (double[] Data, long[] Shape)> Weights(DecoderLM model) =>
        model.named_parameters().ToDictionary(
            p => p.name,
            p => (p.parameter.detach().to(ScalarType.Float64).contiguous().data<double>().ToArray(), p.parameter.shape));

    static double[] Reference(TransformerConfig c, Dictionary<string, (double[] Data, long[] Shape)> w, int[] ids)
    {
        int T = ids.Length, D = c.HiddenSize, H = c.NumHeads, KV = c.NumKvHeads, hd = c.HeadDim, V = c.VocabSize;
        bool gemma = c.Norm == NormKind.GemmaRmsNorm;
        double[] W(string n) => w[n].Data;

        double[] Norm(double[] x, double[] weight)
        {
            double ms = x.Sum(v => v * v) / x.Length;
            double r = 1.0 / Math.Sqrt(ms + c.NormEps);
            return x.Select((v, i) => v * r * (gemma ? 1 + weight[i] : weight[i])).ToArray();
        }
        double[] MatVec(double[] m, int rows, int cols, double[] x, double[]? bias = null)
        {
            var y = new double[rows];
            for (int r = 0; r < rows; r++)
            {
                double s = bias?[r] ?? 0;
                for (int k = 0; k < cols; k++) s += m[r * cols + k] * x[k];
                y[r] = s;
            }
            return y;
        }
        double Act(double v) => c.Activation switch
        {
            Activation.SiLU => v / (1 + Math.Exp(-v)),
            Activation.GeluTanh => 0.5 * v * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v))),
            _ => throw new NotSupportedException(),
        };
        double[] InvFreq(int layer)
        {
            double theta = c.LayerRopeTheta(layer);
            var sc = c.LayerRopeScaling(layer);
            var inv = new double[hd / 2];
            for (int i = 0; i < hd / 2; i++)
            {
                double f = 1.0 / Math.Pow(theta, 2.0 * i / hd);
                if (sc.Kind == RopeScalingKind.Linear) f /= sc.Factor;
                else if (sc.Kind == RopeScalingKind.Llama3)
                {
                    double wl = 2 * Math.PI / f, lo = sc.OriginalMaxPositions / sc.LowFreqFactor, hi = sc.OriginalMaxPositions / sc.HighFreqFactor;
                    if (wl > lo) f /= sc.Factor;
                    else if (wl >= hi)
                    {
                        double smooth = (sc.OriginalMaxPositions / wl - sc.LowFreqFactor) / (sc.HighFreqFactor - sc.LowFreqFactor);
                        f = (1 - smooth) * f / sc.Factor + smooth * f;
                    }
                }
                inv[i] = f;
            }
            return inv;
        }
        void Rotate(double[] v, int off, int pos, double[] inv)
        {
            int half = hd / 2;
            for (int i = 0; i < half; i++)
            {
                double a = v[off + i], b = v[off + i + half], ang = pos * inv[i];
                v[off + i] = a * Math.Cos(ang) - b * Math.Sin(ang);
                v[off + i + half] = b * Math.Cos(ang) + a * Math.Sin(ang);
            }
        }

        var emb = W("model.embed_tokens.weight");
        var xs = new double[T][];
        for (int t = 0; t < T; t++)
        {
            xs[t] = new double[D];
            for (int d = 0; d < D; d++) xs[t][d] = emb[ids[t] * D + d] * (c.ScaleEmbeddings ? Math.Sqrt(D) : 1);
        }

        for (int l = 0; l < c.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            var inv = InvFreq(l);
            double[]? Bias(string n) => w.ContainsKey(p + n) ? W(p + n) : null;
            var qs = new double[T][]; var ks = new double[T][]; var vs = new double[T][];
            for (int t = 0; t < T; t++)
            {
                var h = Norm(xs[t], W(p + "input_layernorm.weight"));
                qs[t] = MatVec(W(p + "self_attn.q_proj.weight"), H * hd, D, h, Bias("self_attn.q_proj.bias"));
                ks[t] = MatVec(W(p + "self_attn.k_proj.weight"), KV * hd, D, h, Bias("self_attn.k_proj.bias"));
                vs[t] = MatVec(W(p + "self_attn.v_proj.weight"), KV * hd, D, h, Bias("self_attn.v_proj.bias"));
                for (int hh = 0; hh < H; hh++)
                {
                    if (c.QkNorm)
                    {
                        var n = Norm(qs[t][(hh * hd)..((hh + 1) * hd)], W(p + "self_attn.q_norm.weight"));
                        Array.Copy(n, 0, qs[t], hh * hd, hd);
                    }
                    Rotate(qs[t], hh * hd, t, inv);
                }
                for (int hh = 0; hh < KV; hh++)
                {
                    if (c.QkNorm)
                    {
                        var n = Norm(ks[t][(hh * hd)..((hh + 1) * hd)], W(p + "self_attn.k_norm.weight"));
                        Array.Copy(n, 0, ks[t], hh * hd, hd);
                    }
                    Rotate(ks[t], hh * hd, t, inv);
                }
            }
            double scale = 1.0 / Math.Sqrt(c.QueryPreAttnScalar ?? hd);
            for (int t = 0; t < T; t++)
            {
                var concat = new double[H * hd];
                for (int hh = 0; hh < H; hh++)
                {
                    int g = hh / (H / KV);
                    var sc = new List<(int S, double V)>();
                    for (int s = 0; s <= t; s++)
                    {
                        if (c.IsSliding(l) && t - s >= c.SlidingWindow) continue;
                        double dot = 0;
                        for (int i = 0; i < hd; i++) dot += qs[t][hh * hd + i] * ks[s][g * hd + i];
                        dot *= scale;
                        if (c.AttnSoftcap is { } cap) dot = Math.Tanh(dot / cap) * cap;
                        sc.Add((s, dot));
                    }
                    double mx = sc.Max(e => e.V), z = sc.Sum(e => Math.Exp(e.V - mx));
                    foreach (var (s, v) in sc)
                        for (int i = 0; i < hd; i++) concat[hh * hd + i] += Math.Exp(v - mx) / z * vs[s][g * hd + i];
                }
                var o = MatVec(W(p + "self_attn.o_proj.weight"), D, H * hd, concat, Bias("self_attn.o_proj.bias"));
                if (c.SandwichNorm) o = Norm(o, W(p + "post_attention_layernorm.weight"));
                var x = xs[t].Zip(o, (a, b) => a + b).ToArray();
                var h2 = Norm(x, W(p + (c.SandwichNorm ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight")));
                var gt = MatVec(W(p + "mlp.gate_proj.weight"), c.IntermediateSize, D, h2);
                var up = MatVec(W(p + "mlp.up_proj.weight"), c.IntermediateSize, D, h2);
                var m = MatVec(W(p + "mlp.down_proj.weight"), D, c.IntermediateSize, gt.Select((v, i) => Act(v) * up[i]).ToArray());
                if (c.SandwichNorm) m = Norm(m, W(p + "post_feedforward_layernorm.weight"));
                xs[t] = x.Zip(m, (a, b) => a + b).ToArray();
            }
        }

        var outW = c.TieEmbeddings ? emb : W("lm_head.weight");
        var logits = new double[T * V];
        for (int t = 0; t < T; t++)
        {
            var h = Norm(xs[t], W("model.norm.weight"));
            var z = MatVec(outW, V, D, h);
            for (int v = 0; v < V; v++)
                logits[t * V + v] = c.FinalSoftcap is { } fc ? Math.Tanh(z[v] / fc) * fc : z[v];
        }
        return logits;
    }
}
