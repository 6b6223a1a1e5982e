using LatentLab.Latents;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

public enum ProbeMethod { Ridge, Logistic }

/// <summary>One value to read out of the states: its class label for each train and test problem.</summary>
public sealed record ProbeTarget(string Name, int[] Train, int[] Test);

/// <summary>How well a linear probe reads <see cref="Target"/> out of <see cref="Source"/> on the test set.</summary>
public sealed record ProbeScore(string Target, string Source, double Accuracy, double Majority, int Classes, int TestCount, double Alpha)
{
    /// <summary>Accuracy above the majority-class baseline (the probe's real information).</summary>
    public double Lift => Accuracy - Majority;
}

public sealed record ProbeOptions
{
    public ProbeMethod Method { get; init; } = ProbeMethod.Ridge;
    /// <summary>Ridge penalties tried, as multiples of the number of training rows; the best on a 20% train holdout is refit on all.</summary>
    public double[] Alphas { get; init; } = [1e-4, 1e-3, 1e-2, 1e-1, 1, 10];
    /// <summary>Logistic regression: full-batch Adam steps and the L2 weight.</summary>
    public int LogisticSteps { get; init; } = 300;
    public double LogisticL2 { get; init; } = 1e-3;
    public long Seed { get; init; }
}

/// <summary>
/// Linear probes on standardised features, fit on the train set and scored on the test set. Ridge is a closed-form
/// one-vs-rest regression onto one-hot labels (deterministic, cheap even for K·D features through the dual form);
/// logistic is multinomial with L2.
/// </summary>
public static class Probes
{
    /// <summary>
    /// Probe targets from the problems' intermediates: "s{step}.{name}" for every value present in all problems, with
    /// between 2 and <paramref name="maxClasses"/> distinct values on the train set (wide bitmasks are left out).
    /// </summary>
    public static IReadOnlyList<ProbeTarget> FromIntermediates(IReadOnlyList<TraceSample> train, IReadOnlyList<TraceSample> test,
        int maxClasses = 32, int maxTargets = 64)
    {
        if (train.Count == 0 || test.Count == 0) return [];
        static Dictionary<string, int> Flat(TraceSample s)
        {
            var d = new Dictionary<string, int>(StringComparer.Ordinal);
            var steps = s.Problem.Intermediates;
            for (int i = 0; i < steps.Count; i++)
                foreach (var (k, v) in steps[i]) d[$"s{i}.{k}"] = v;
            return d;
        }
        var trainFlat = train.Select(Flat).ToList();
        var testFlat = test.Select(Flat).ToList();
        var keys = trainFlat[0].Keys.Where(k => trainFlat.All(d => d.ContainsKey(k)) && testFlat.All(d => d.ContainsKey(k)))
            .OrderBy(k => int.Parse(k[1..k.IndexOf('.')], System.Globalization.CultureInfo.InvariantCulture)).ThenBy(k => k, StringComparer.Ordinal);
        var targets = new List<ProbeTarget>();
        foreach (var k in keys)
        {
            var tr = trainFlat.Select(d => d[k]).ToArray();
            int distinct = tr.Distinct().Count();
            if (distinct < 2 || distinct > maxClasses) continue;
            targets.Add(new ProbeTarget(k, tr, testFlat.Select(d => d[k]).ToArray()));
            if (targets.Count == maxTargets) break;
        }
        return targets;
    }

    /// <summary>Fits a probe on xTrain [N, ...] → yTrain and scores it on xTest (features are flattened per row).</summary>
    public static ProbeScore Fit(string target, string source, Tensor xTrain, int[] yTrain, Tensor xTest, int[] yTest, ProbeOptions? options = null)
    {
        var o = options ?? new ProbeOptions();
        if (xTrain.shape[0] != yTrain.Length) throw new ArgumentException($"probe '{target}' on {source}: {xTrain.shape[0]} train rows but {yTrain.Length} labels");
        if (xTest.shape[0] != yTest.Length) throw new ArgumentException($"probe '{target}' on {source}: {xTest.shape[0]} test rows but {yTest.Length} labels");
        if (yTrain.Length < 5) throw new ArgumentException($"probe '{target}' on {source}: need at least 5 training rows");
        using var scope = NewDisposeScope();
        using var _ = no_grad();

        var classes = yTrain.Distinct().Order().ToArray();
        var index = classes.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => p.i);
        var trainIdx = yTrain.Select(y => (long)index[y]).ToArray();
        var testIdx = yTest.Select(y => index.TryGetValue(y, out var i) ? i : -1).ToArray(); // unseen labels are always wrong
        int majorityClass = (int)trainIdx.GroupBy(i => i).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).First().Key;
        double majority = yTest.Length == 0 ? double.NaN : testIdx.Count(i => i == majorityClass) / (double)yTest.Length;

        var xtr = xTrain.reshape(xTrain.shape[0], -1).to(ScalarType.Float64);
        var xte = xTest.reshape(xTest.shape[0], -1).to(ScalarType.Float64);
        var mean = xtr.mean([0], keepdim: true);
        var std = xtr.std(0, keepdim: true).clamp_min(1e-8);
        xtr = (xtr - mean) / std;
        xte = (xte - mean) / std;
        var ytr = tensor(trainIdx);

        double alpha;
        int[] predicted;
        if (o.Method == ProbeMethod.Ridge)
        {
            alpha = ChooseAlpha(xtr, ytr, classes.Length, o);
            predicted = ToInts(RidgeFit(xtr, ytr, classes.Length, alpha * xtr.shape[0])(xte).argmax(1));
        }
        else
        {
            alpha = o.LogisticL2;
            predicted = ToInts(LogisticFit(xtr, ytr, classes.Length, o)(xte).argmax(1));
        }
        int correct = 0;
        for (int i = 0; i < testIdx.Length; i++) if (predicted[i] == testIdx[i]) correct++;
        double acc = yTest.Length == 0 ? double.NaN : correct / (double)yTest.Length;
        return new ProbeScore(target, source, acc, majority, classes.Length, yTest.Length, alpha);
    }

    static int[] ToInts(Tensor t) => t.to(ScalarType.Int32).data<int>().ToArray();

    static double ChooseAlpha(Tensor x, Tensor y, int classes, ProbeOptions o)
    {
        if (o.Alphas.Length == 1) return o.Alphas[0];
        long n = x.shape[0];
        long hold = Math.Max(1, n / 5);
        using var g = new Generator((ulong)o.Seed + 17);
        var perm = randperm(n, generator: g);
        var fitIdx = perm.narrow(0, 0, n - hold);
        var holdIdx = perm.narrow(0, n - hold, hold);
        var (xf, yf, xh, yh) = (x.index_select(0, fitIdx), y.index_select(0, fitIdx), x.index_select(0, holdIdx), y.index_select(0, holdIdx));
        double best = o.Alphas[0], bestAcc = -1;
        foreach (var a in o.Alphas)
        {
            using var scope = NewDisposeScope();
            double acc = RidgeFit(xf, yf, classes, a * xf.shape[0])(xh).argmax(1).eq(yh).to(ScalarType.Float64).mean().item<double>();
            if (acc > bestAcc + 1e-12) { bestAcc = acc; best = a; }
        }
        return best;
    }

    /// <summary>Ridge onto centred one-hot labels; primal (F×F) or dual (N×N) solve, whichever is smaller.</summary>
    static Func<Tensor, Tensor> RidgeFit(Tensor x, Tensor y, int classes, double lambda)
    {
        var onehot = nn.functional.one_hot(y, classes).to(ScalarType.Float64);
        var yMean = onehot.mean([0], keepdim: true);
        var xMean = x.mean([0], keepdim: true);
        var xc = x - xMean;
        var yc = onehot - yMean;
        long n = xc.shape[0], f = xc.shape[1];
        Tensor w;
        if (f <= n)
            w = linalg.solve(xc.t().matmul(xc) + lambda * eye(f, dtype: ScalarType.Float64), xc.t().matmul(yc));
        else
            w = xc.t().matmul(linalg.solve(xc.matmul(xc.t()) + lambda * eye(n, dtype: ScalarType.Float64), yc));
        return z => (z - xMean).matmul(w) + yMean;
    }

    static Func<Tensor, Tensor> LogisticFit(Tensor x, Tensor y, int classes, ProbeOptions o)
    {
        var xf = x.to(ScalarType.Float32);
        using var g = new Generator((ulong)o.Seed + 29);
        var w = new TorchSharp.Modules.Parameter(randn([xf.shape[1], classes], generator: g) * 0.01);
        var b = new TorchSharp.Modules.Parameter(zeros(classes));
        using (enable_grad())
        {
            using var opt = optim.Adam([w, b], lr: 0.05);
            for (int step = 0; step < o.LogisticSteps; step++)
            {
                using var scope = NewDisposeScope();
                opt.zero_grad();
                var loss = nn.functional.cross_entropy(xf.matmul(w) + b, y) + o.LogisticL2 * w.square().sum();
                loss.backward();
                opt.step();
            }
        }
        var wd = w.detach();
        var bd = b.detach();
        return z => z.to(ScalarType.Float32).matmul(wd) + bd;
    }
}
