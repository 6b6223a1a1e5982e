using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using LatentLab.Latents;
using LatentLab.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Methods.WorldModel;

/// <summary>Step traces as padded tensors: X [N, L, D] (row 0 the prompt, rows 1…n the steps), Valid [N, L], Steps[i] = n.</summary>
public sealed class StepBatch : IDisposable
{
    public StepBatch(Tensor x, Tensor valid, int[] steps)
    {
        X = x;
        Valid = valid;
        Steps = steps;
    }

    public Tensor X { get; }
    public Tensor Valid { get; }
    public int[] Steps { get; }
    public int Count => Steps.Length;

    /// <summary>The sequences of <paramref name="set"/>, padded to the longest (at most <paramref name="maxRows"/> rows).</summary>
    public static StepBatch Of(StepLatents set, int maxRows, IReadOnlyList<int>? which = null)
    {
        var idx = which ?? Enumerable.Range(0, set.Samples.Count).ToList();
        int l = idx.Count == 0 ? 1 : idx.Max(i => set.Samples[i].Rows);
        if (l > maxRows)
            throw new ArgumentException($"a trace has {l - 1} steps; the world model covers at most {maxRows - 1} (raise max steps)");
        using var scope = NewDisposeScope();
        var x = zeros(idx.Count, l, set.HiddenSize);
        var valid = zeros(idx.Count, l, dtype: ScalarType.Bool);
        for (int r = 0; r < idx.Count; r++)
        {
            var rows = set.Of(idx[r]);
            x[r].narrow(0, 0, rows.shape[0]).copy_(rows);
            valid[r].narrow(0, 0, rows.shape[0]).fill_(true);
        }
        return new StepBatch(x.MoveToOuterDisposeScope(), valid.MoveToOuterDisposeScope(), idx.Select(i => set.Samples[i].Steps.Count).ToArray());
    }

    public StepBatch Select(Tensor rows)
    {
        var r = rows.data<long>().ToArray();
        return new StepBatch(X.index_select(0, rows), Valid.index_select(0, rows), r.Select(i => Steps[i]).ToArray());
    }

    public void Dispose()
    {
        X.Dispose();
        Valid.Dispose();
    }
}

/// <summary>
/// The masks of training and scoring. Row 0 (the prompt) is never masked, so the context is never empty. A span mask
/// hides one contiguous run of steps whose length is a share in [min, max] of the trace's steps (at least one step); a
/// next-step mask hides every step from t on (t ≥ 1).
/// </summary>
public static class StepMasks
{
    /// <summary>Length of a span over <paramref name="steps"/> steps for a uniform draw u in [0, 1).</summary>
    public static int SpanLength(int steps, double min, double max, double u)
    {
        int lo = Math.Max(1, (int)Math.Ceiling(min * steps - 1e-9)), hi = Math.Max(lo, (int)Math.Floor(max * steps + 1e-9));
        hi = Math.Min(hi, steps);
        lo = Math.Min(lo, hi);
        return lo + (int)(u * (hi - lo + 1));
    }

    /// <summary>A mask [B, L] for each row: a span with probability 1 − nextShare, else next-step.</summary>
    public static Tensor Draw(int[] steps, long length, WorldModelConfig c, Random rng)
    {
        var m = new bool[steps.Length * length];
        for (int r = 0; r < steps.Length; r++)
        {
            int n = steps[r];
            if (n == 0) continue;
            int from, to;
            if (rng.NextDouble() < c.NextStepShare)
            {
                from = 1 + rng.Next(n);
                to = n + 1;
            }
            else
            {
                int len = SpanLength(n, c.SpanMin, c.SpanMax, rng.NextDouble());
                from = 1 + rng.Next(n - len + 1);
                to = from + len;
            }
            for (int p = from; p < to; p++) m[r * length + p] = true;
        }
        return tensor(m).view(steps.Length, length);
    }

    /// <summary>Next-step mask: steps t … n of a trace with n steps hidden, in a sequence of <paramref name="length"/> rows.</summary>
    public static bool[] NextStep(int n, int t, long length)
    {
        var m = new bool[length];
        for (int p = t; p <= n; p++) m[p] = true;
        return m;
    }
}

/// <summary>Everything that defines a world-model run; written to its config.json.</summary>
public sealed record WorldTrainOptions
{
    public WorldModelConfig Model { get; init; } = new();
    public long Steps { get; init; } = 400;
    public int BatchSize { get; init; } = 64;
    public double LearningRate { get; init; } = 1e-3;
    public Training.EmaSchedule Ema { get; init; } = new();
    /// <summary>Learn from traces whose steps are all right and whose answer verified (what good reasoning looks like).</summary>
    public bool CorrectOnly { get; init; } = true;
    public long EvalEvery { get; init; } = 100;
    public long Seed { get; init; }
    public string OutDir { get; init; } = "runs/rjepa/world";
    public bool? ProgressBar { get; init; }

    public JsonObject ToJson() => JsonSerializer.SerializeToNode(this, WorldModelConfig.Json)!.AsObject();
}

/// <summary>
/// The loss of one update, as the one <see cref="Trainer"/> sees it: draw masks, predict the masked steps, compare with
/// the stop-gradient targets; after the update, pull the target encoder towards the context encoder with τ from the schedule.
/// Step metrics: the loss parts and the collapse monitors (per-dimension std and effective rank of the predictions).
/// </summary>
public sealed class WorldModelTrainable : ITrainable
{
    readonly WorldModel _wm;
    readonly StepBatch _data;
    readonly WorldTrainOptions _o;
    readonly Dictionary<string, double> _last = new();

    public WorldModelTrainable(WorldModel wm, StepBatch data, WorldTrainOptions o)
    {
        _wm = wm;
        _data = data;
        _o = o;
    }

    public nn.Module Module => _wm;

    public TrainLoss Loss(long step, int micro)
    {
        var rng = new Random(unchecked((int)Seeds.For(_o.Seed, step, micro)));
        var rows = Enumerable.Range(0, Math.Min(_o.BatchSize, _data.Count)).Select(_ => (long)rng.Next(_data.Count)).ToArray();
        using var batch = _data.Select(tensor(rows));
        var masked = StepMasks.Draw(batch.Steps, batch.X.shape[1], _wm.Config, rng);
        var (loss, parts) = Objective(_wm, batch.X, masked, batch.Valid);
        foreach (var (k, v) in parts) _last[k] = v;
        return new TrainLoss(loss, masked.sum().item<long>());
    }

    /// <summary>The training objective on one masked batch, with its parts as numbers.</summary>
    public static (Tensor Loss, Dictionary<string, double> Parts) Objective(WorldModel wm, Tensor x, Tensor masked, Tensor valid)
    {
        var c = wm.Config;
        var dev = wm.context.parameters().First().device;
        masked = masked.to(dev);
        using var pass = wm.Forward(x.to(dev), masked, valid.to(dev));
        var sel = masked.view(-1);
        var pred = pass.Predicted.view(-1, pass.Predicted.shape[^1])[sel];
        var tgt = pass.Target.view(-1, pass.Target.shape[^1])[sel];
        var jepa = wm.Distance(pred, tgt).mean();
        var latent = wm.Distance(pass.PredictedLatent.view(-1, wm.Dim)[sel], pass.Latent.view(-1, wm.Dim)[sel]).mean();
        // VICReg's variance hinge on the predictions and the context encoding: keeps every feature's std near 1.
        var ctx = pass.Context.view(-1, pass.Context.shape[^1])[valid.to(dev).view(-1)];
        var variance = nn.functional.relu(1 - (pred.var(0) + 1e-4).sqrt()).mean() + nn.functional.relu(1 - (ctx.var(0) + 1e-4).sqrt()).mean();
        var loss = jepa + c.LatentWeight * latent + c.VarianceWeight * variance;
        var parts = new Dictionary<string, double>
        {
            ["jepa"] = jepa.item<float>(), ["latent"] = latent.item<float>(), ["variance"] = variance.item<float>(),
        };
        if (c.InfoNceWeight > 0 && pred.shape[0] > 1)
        {
            var logits = nn.functional.normalize(pred, dim: 1).matmul(nn.functional.normalize(tgt, dim: 1).t()) / c.InfoNceTemperature;
            var nce = nn.functional.cross_entropy(logits, arange(pred.shape[0], dtype: ScalarType.Int64, device: dev));
            loss = loss + c.InfoNceWeight * nce;
            parts["infonce"] = nce.item<float>();
        }
        if (pred.shape[0] > 1)
        {
            parts["pred_std"] = LatentMetrics.MeanDimensionStd(pred);
            parts["target_std"] = LatentMetrics.MeanDimensionStd(tgt);
        }
        return (loss, parts);
    }

    public void AfterStep(long step) => _wm.Ema.Update(_wm.context, _o.Ema.At(step, _o.Steps));

    public IEnumerable<KeyValuePair<string, object>> StepMetrics(long step)
    {
        foreach (var (k, v) in _last) yield return new(k, v);
        yield return new("tau", _o.Ema.At(step, _o.Steps));
    }
}

/// <summary>A trained world model and what its training logged.</summary>
public sealed record WorldTrainResult(string Dir, double Seconds, double FinalLoss, IReadOnlyDictionary<string, double> Eval, int TrainTraces);

public static class WorldModelTraining
{
    /// <summary>Trains on <paramref name="train"/> (its correct traces unless told otherwise), watching held-out loss on right vs wrong traces in <paramref name="heldOut"/>.</summary>
    public static (WorldModel Model, WorldTrainResult Result) Train(StepLatents train, StepLatents? heldOut, WorldTrainOptions o,
        TextWriter? log = null, CancellationToken cancel = default)
    {
        log ??= Console.Out;
        Tensors.TorchRuntime.Initialize();
        using var good = train.Where(s => !o.CorrectOnly || IsGood(s));
        if (good.Samples.Count < 2) throw new ArgumentException($"world model: {good.Samples.Count} training trace(s){(o.CorrectOnly ? " with every step right" : "")}; need at least 2");
        Tensors.TorchRuntime.Seed(o.Seed);
        var wm = new WorldModel(train.HiddenSize, o.Model);
        wm.SetStandardisation(good.Latents);
        using var data = StepBatch.Of(good, o.Model.MaxSteps);
        var trainable = new WorldModelTrainable(wm, data, o);
        var cfg = new TrainerConfig
        {
            Steps = o.Steps, LearningRate = o.LearningRate, WarmupSteps = Math.Max(1, o.Steps / 20), WeightDecay = 0.05, ClipNorm = 1.0,
            LogEvery = Math.Max(1, o.Steps / 8), EvalEvery = o.EvalEvery, CheckpointEvery = Math.Max(50, o.Steps / 4), KeepCheckpoints = 2,
            Seed = o.Seed, OutDir = Path.Combine(o.OutDir, "train"), ProgressBar = o.ProgressBar,
        };
        var phase = new TrainingPhase("world-model", cfg, new JsonObject { ["rjepa"] = o.ToJson() })
        {
            Evaluate = heldOut is null ? null : _ => HeldOut(wm, heldOut),
        };
        var r = phase.Run(trainable, wm.Save, Path.Combine(o.OutDir, "model"), log, cancel);
        wm.eval();
        return (wm, new WorldTrainResult(r.ModelDir, r.Seconds, r.Train.FinalLoss, r.Train.FinalEval, good.Samples.Count));
    }

    public static bool IsGood(StepSample s) => s.Verified && s.FirstWrongStep is null;

    /// <summary>Held-out next-step error on right and on wrong traces, and the collapse monitors on the predictions.</summary>
    public static IReadOnlyDictionary<string, double> HeldOut(WorldModel wm, StepLatents set)
    {
        var scores = WorldScoring.Score(wm, set);
        var right = scores.Where((s, i) => IsGood(set.Samples[i])).Select(s => s.Mean).ToList();
        var wrong = scores.Where((s, i) => !IsGood(set.Samples[i])).Select(s => s.Mean).ToList();
        var m = new Dictionary<string, double>
        {
            ["heldout_error_right"] = right.Count > 0 ? right.Average() : double.NaN,
            ["heldout_error_wrong"] = wrong.Count > 0 ? wrong.Average() : double.NaN,
        };
        if (right.Count > 0 && wrong.Count > 0) m["heldout_auroc"] = Auroc.Of(wrong, right).Value;
        var (std, rank) = WorldScoring.Collapse(wm, set);
        m["pred_dim_std"] = std;
        m["pred_effective_rank"] = rank;
        return m;
    }
}
