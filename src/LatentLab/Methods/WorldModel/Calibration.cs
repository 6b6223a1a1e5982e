using System.Text.Json;
using LatentLab.IO;
using LatentLab.Latents;
using static TorchSharp.torch;

namespace LatentLab.Methods.WorldModel;

/// <summary>
/// An affine map y = x·W + b from one model's step latents (B, width D_b) to another's (A, width D_a), fitted by ridge
/// least squares on paired rows (the same traces read by both models). It lets a world model trained on A score B.
/// </summary>
public sealed class AffineMap : IDisposable
{
    public AffineMap(Tensor weight, Tensor bias)
    {
        Weight = weight;
        Bias = bias;
    }

    /// <summary>[D_b, D_a].</summary>
    public Tensor Weight { get; }
    /// <summary>[D_a].</summary>
    public Tensor Bias { get; }

    /// <summary>Fits on rows x [N, D_b] → y [N, D_a]; <paramref name="ridge"/> is added to the normal equations' diagonal (not the bias's).</summary>
    public static AffineMap Fit(Tensor x, Tensor y, double ridge = 1e-3)
    {
        if (x.dim() != 2 || y.dim() != 2 || x.shape[0] != y.shape[0])
            throw new ArgumentException($"calibration: need paired rows x [N, Db] and y [N, Da], got [{string.Join(",", x.shape)}] and [{string.Join(",", y.shape)}]");
        if (x.shape[0] < 2) throw new ArgumentException("calibration: need at least 2 paired rows");
        using var scope = NewDisposeScope();
        var xd = x.to(ScalarType.Float64);
        var yd = y.to(ScalarType.Float64);
        var xm = xd.mean([0], keepdim: true);
        var ym = yd.mean([0], keepdim: true);
        var xc = xd - xm;
        var gram = xc.t().matmul(xc) + ridge * eye(x.shape[1], dtype: ScalarType.Float64) * x.shape[0];
        var w = linalg.solve(gram, xc.t().matmul(yd - ym));
        var b = (ym - xm.matmul(w)).squeeze(0);
        return new AffineMap(w.to(ScalarType.Float32).MoveToOuterDisposeScope(), b.to(ScalarType.Float32).MoveToOuterDisposeScope());
    }

    public Tensor Apply(Tensor x) => x.to(ScalarType.Float32).matmul(Weight) + Bias;

    /// <summary>A step set with every latent mapped (same samples; new tensor).</summary>
    public StepLatents Apply(StepLatents set) => new(set.Samples, Apply(set.Latents));

    /// <summary>Share of y's variance the map explains on (x, y): 1 − Σ(y − ŷ)² / Σ(y − ȳ)².</summary>
    public double R2(Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        var yd = y.to(ScalarType.Float64);
        var res = (Apply(x).to(ScalarType.Float64) - yd).square().sum();
        var tot = (yd - yd.mean([0], keepdim: true)).square().sum();
        return 1 - res.item<double>() / Math.Max(1e-12, tot.item<double>());
    }

    public const string FileName = "calibration.safetensors";

    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        SafetensorsWriter.Write(Path.Combine(dir, FileName), new Dictionary<string, Tensor> { ["weight"] = Weight, ["bias"] = Bias }, new Dictionary<string, string>());
    }

    public static AffineMap Load(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"{dir}: no {FileName} (fit one with `rjepa calibrate`)", path);
        using var st = SafetensorsFile.Open(path);
        return new AffineMap(st.Read("weight", ScalarType.Float32), st.Read("bias", ScalarType.Float32));
    }

    public void Dispose()
    {
        Weight.Dispose();
        Bias.Dispose();
    }
}
