using static TorchSharp.torch;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>Small numerical tools for looking inside latent chains: non-negative least squares and PCA.</summary>
public static class LatentAnalysis
{
    /// <summary>
    /// Non-negative least squares: the w ≥ 0 minimising ‖Σ_k w_k · basis_k − y‖² (basis: K vectors of length D).
    /// Cyclic coordinate descent on the normal equations (convex, so it converges to the optimum); K is a vocabulary
    /// of tens of tokens here, so the K×K Gram matrix is cheap.
    /// </summary>
    public static double[] Nnls(IReadOnlyList<float[]> basis, float[] y, int sweeps = 500, double tolerance = 1e-10)
    {
        int k = basis.Count;
        if (k == 0) throw new ArgumentException("NNLS needs at least one basis vector");
        int d = y.Length;
        if (basis.Any(v => v.Length != d)) throw new ArgumentException($"NNLS: every basis vector must have length {d} like the target");
        var gram = new double[k, k];
        var b = new double[k];
        for (int i = 0; i < k; i++)
        {
            for (int j = i; j < k; j++)
            {
                double s = 0;
                for (int t = 0; t < d; t++) s += (double)basis[i][t] * basis[j][t];
                gram[i, j] = gram[j, i] = s;
            }
            double c = 0;
            for (int t = 0; t < d; t++) c += (double)basis[i][t] * y[t];
            b[i] = c;
        }
        var w = new double[k];
        var grad = (double[])b.Clone(); // b − G·w, kept up to date
        for (int sweep = 0; sweep < sweeps; sweep++)
        {
            double maxStep = 0;
            for (int i = 0; i < k; i++)
            {
                if (gram[i, i] <= 1e-15) continue;
                double next = Math.Max(0, w[i] + grad[i] / gram[i, i]);
                double delta = next - w[i];
                if (delta == 0) continue;
                w[i] = next;
                for (int j = 0; j < k; j++) grad[j] -= gram[j, i] * delta;
                maxStep = Math.Max(maxStep, Math.Abs(delta));
            }
            if (maxStep < tolerance) break;
        }
        return w;
    }

    /// <summary>Projection of the rows of <paramref name="x"/> [N, D] onto their first two principal components, and the share of variance each explains.</summary>
    public static (double[] X, double[] Y, double[] Explained) Pca2(Tensor x)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var m = x.to(ScalarType.Float64).reshape(-1, x.shape[^1]);
        var mean = m.mean(new long[] { 0 }, keepdim: true);
        var centred = m - mean;
        var (_, s, vh) = linalg.svd(centred, fullMatrices: false);
        var proj = centred.matmul(vh.narrow(0, 0, 2).t());
        var var = s.square();
        var total = var.sum().item<double>();
        var explained = var.narrow(0, 0, Math.Min(2, var.shape[0])).data<double>().Select(v => total > 0 ? v / total : 0).ToArray();
        var px = proj.select(1, 0).data<double>().ToArray();
        var py = proj.select(1, 1).data<double>().ToArray();
        return (px, py, explained);
    }

    /// <summary>Projects <paramref name="extra"/> [M, D] onto the principal axes fitted on <paramref name="fit"/> [N, D] (for drawing vocabulary points into a latent PCA).</summary>
    public static (double[] FitX, double[] FitY, double[] ExtraX, double[] ExtraY, double[] Explained) Pca2With(Tensor fit, Tensor extra)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var m = fit.to(ScalarType.Float64).reshape(-1, fit.shape[^1]);
        var mean = m.mean(new long[] { 0 }, keepdim: true);
        var (_, s, vh) = linalg.svd(m - mean, fullMatrices: false);
        var axes = vh.narrow(0, 0, 2).t();
        var p = (m - mean).matmul(axes);
        var q = (extra.to(ScalarType.Float64) - mean).matmul(axes);
        var var = s.square();
        var total = var.sum().item<double>();
        var explained = var.narrow(0, 0, 2).data<double>().Select(v => v / total).ToArray();
        return (p.select(1, 0).data<double>().ToArray(), p.select(1, 1).data<double>().ToArray(),
            q.select(1, 0).data<double>().ToArray(), q.select(1, 1).data<double>().ToArray(), explained);
    }
}
