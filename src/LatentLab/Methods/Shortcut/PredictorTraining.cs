using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using LatentLab.Tensors;
using LatentLab.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>The predictor's loss terms. All act on float tensors; shapes are documented per term.</summary>
public static class PredictorLosses
{
    /// <summary>Latent alignment between prediction and (already stop-gradient) target, both [..., F]; reduced to a scalar.</summary>
    public static Tensor Align(Tensor pred, Tensor target, PredictorLoss kind) => kind switch
    {
        // 1 − cos: scale-free, so huge-norm states do not dominate; bounded in [0, 2].
        PredictorLoss.Cosine => 1 - nn.functional.cosine_similarity(pred, target, -1, 1e-8).mean(),
        PredictorLoss.Mse => nn.functional.mse_loss(pred, target),
        PredictorLoss.SmoothL1 => nn.functional.smooth_l1_loss(pred, target),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown predictor loss"),
    };

    /// <summary>
    /// VICReg variance term over a batch z [N, F]: mean over features of relu(γ − sqrt(var + ε)). Zero once every
    /// feature's std reaches γ; close to γ when the batch has collapsed to one point.
    /// </summary>
    public static Tensor Variance(Tensor z, double gamma = 1.0, double eps = 1e-4)
    {
        if (z.dim() != 2 || z.shape[0] < 2) throw new ArgumentException($"VICReg variance needs [N ≥ 2, F], got [{string.Join(",", z.shape)}]");
        var std = (z.var(0) + eps).sqrt();
        return nn.functional.relu(gamma - std).mean();
    }

    /// <summary>VICReg covariance term over z [N, F]: Σ_{i≠j} C_ij² / F with C the batch covariance (decorrelates features).</summary>
    public static Tensor Covariance(Tensor z)
    {
        if (z.dim() != 2 || z.shape[0] < 2) throw new ArgumentException($"VICReg covariance needs [N ≥ 2, F], got [{string.Join(",", z.shape)}]");
        long n = z.shape[0], f = z.shape[1];
        var c = z - z.mean([0], keepdim: true);
        var cov = c.t().matmul(c) / (n - 1);
        var off = cov - diag(diag(cov));
        return off.square().sum() / f;
    }
}

/// <summary>
/// The training-time module: the predictor plus optional online and target projectors. Only the predictor is saved
/// for use; the whole objective is what the trainer checkpoints (so an EMA target resumes exactly).
/// </summary>
public sealed class PredictorObjective : nn.Module
{
    readonly LatentPredictor predictor;
    readonly Linear? projector;
    readonly Linear? target_projector;
    readonly Ema? _ema;
    readonly EmaSchedule _schedule;

    public LatentPredictor Predictor => predictor;
    public Linear? Projector => projector;
    /// <summary>The projector the target passes through: the EMA copy, or the online projector itself.</summary>
    public Linear? TargetProjector => target_projector ?? projector;

    public PredictorObjective(LatentPredictor predictor) : base("predictor_objective")
    {
        this.predictor = predictor;
        var c = predictor.Config;
        if (c.ProjectorDim > 0)
        {
            projector = nn.Linear(predictor.D, c.ProjectorDim);
            if (c.EmaProjector) target_projector = nn.Linear(predictor.D, c.ProjectorDim);
        }
        RegisterComponents();
        if (target_projector is not null) _ema = Ema.IntoTarget(projector!, target_projector);
        _schedule = new EmaSchedule(c.EmaMomentum, 1.0);
    }

    /// <summary>One batch's loss from standardised pre [B, D] and standardised post [B, K, D]; parts are for logging.</summary>
    public (Tensor Loss, Dictionary<string, Tensor> Parts) Loss(Tensor zPre, Tensor zPost)
    {
        var c = predictor.Config;
        var pred = predictor.forward(zPre);
        // Stop-gradient target: nothing flows into the teacher's states (or the target projector).
        var target = zPost.detach();
        var parts = new Dictionary<string, Tensor>();
        Tensor total = zeros(1, device: pred.device).squeeze();
        if (c.LatentWeight > 0)
        {
            parts["latent"] = PredictorLosses.Align(pred, target, c.Loss);
            total = total + c.LatentWeight * parts["latent"];
        }
        var features = pred.reshape(-1, predictor.D);
        if (projector is not null)
        {
            var online = projector.forward(pred);
            Tensor projectedTarget;
            using (no_grad()) projectedTarget = TargetProjector!.forward(target).detach();
            parts["proj"] = PredictorLosses.Align(online, projectedTarget, c.Loss);
            total = total + c.ProjectorWeight * parts["proj"];
            features = online.reshape(-1, c.ProjectorDim);
        }
        if (c.VarWeight > 0)
        {
            parts["var"] = PredictorLosses.Variance(features);
            total = total + c.VarWeight * parts["var"];
        }
        if (c.CovWeight > 0)
        {
            parts["cov"] = PredictorLosses.Covariance(features);
            total = total + c.CovWeight * parts["cov"];
        }
        return (total, parts);
    }

    /// <summary>Pulls the EMA target projector towards the online one (momentum rising to 1 over training).</summary>
    public void AfterStep(long step) => _ema?.Update(projector!, _schedule.At(step, predictor.Config.Steps));

    /// <summary>Frees the training-only projectors while leaving the predictor alive for its caller.</summary>
    public void DisposeProjectors()
    {
        _ema?.Dispose();
        projector?.Dispose();
        target_projector?.Dispose();
    }
}

/// <summary>What a predictor run produced.</summary>
public sealed record PredictorRun(string RunDir, string PredictorDir, LatentPredictor Predictor, TrainResult Result);

/// <summary>
/// Phase 1: trains q(h_pre) → ĥ_post on in-memory tensors with the project's trainer (resumable, metrics.jsonl with
/// validation cosine and retrieval at every evaluation), then saves the predictor under RUN/predictor.
/// </summary>
public static class PredictorTraining
{
    public const string PredictorFolder = "predictor";

    public static PredictorRun Train(Tensor preTrain, Tensor postTrain, Tensor preVal, Tensor postVal,
        PredictorConfig cfg, string outDir, TextWriter? log = null, bool? progressBar = false)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        cfg.Validate();
        TorchRuntime.Initialize();
        if (preTrain.dim() != 2) throw new ArgumentException($"predictor training: pre must be [N, D], got [{string.Join(",", preTrain.shape)}]");
        int d = (int)preTrain.shape[1];

        // Parameters are drawn before the trainer runs, so seed here too (a resumed run overwrites them from its checkpoint).
        TorchRuntime.Seed(cfg.Seed);
        var predictor = new LatentPredictor(cfg, d);
        predictor.CheckShapes(preTrain, postTrain, "train set");
        predictor.CheckShapes(preVal, postVal, "validation set");
        if (preTrain.shape[0] < 2) throw new ArgumentException("predictor training: need at least 2 training problems");
        if (preVal.shape[0] < 2) throw new ArgumentException("predictor training: need at least 2 validation problems");
        predictor.FitStandardizer(preTrain, postTrain);

        var objective = new PredictorObjective(predictor);
        using var zPreTrain = predictor.StandardizePre(preTrain).detach();
        using var zPostTrain = predictor.StandardizePost(postTrain).detach();
        long nVal = Math.Min(preVal.shape[0], cfg.EvalPool);
        using var zPreVal = predictor.StandardizePre(preVal.narrow(0, 0, nVal)).detach();
        using var zPostVal = predictor.StandardizePost(postVal.narrow(0, 0, nVal)).detach();
        long n = zPreTrain.shape[0];

        var trainable = new Trainable(objective, (step, micro) =>
        {
            using var g = new Generator((ulong)Seeds.For(cfg.Seed, step, micro));
            var idx = randint(0, n, [cfg.BatchSize], generator: g);
            var (loss, _) = objective.Loss(zPreTrain.index_select(0, idx), zPostTrain.index_select(0, idx));
            return new TrainLoss(loss, cfg.BatchSize);
        }, objective.AfterStep);

        var phase = new TrainingPhase("predictor", new TrainerConfig
        {
            Steps = cfg.Steps, LearningRate = cfg.LearningRate, WarmupSteps = Math.Min(cfg.WarmupSteps, cfg.Steps),
            WeightDecay = cfg.WeightDecay, EvalEvery = cfg.EvalEvery, CheckpointEvery = cfg.CheckpointEvery,
            LogEvery = Math.Max(1, Math.Min(50, cfg.Steps / 10)), Seed = cfg.Seed, OutDir = outDir, ProgressBar = progressBar,
        }, RunConfig(cfg, preTrain, preVal))
        {
            Evaluate = _ => ValidationMetrics(objective, zPreVal, zPostVal),
        };
        var runDir = Path.GetFullPath(outDir);
        var result = phase.Run(trainable, predictor.Save, Path.Combine(runDir, PredictorFolder), log);
        // The projectors are training-only; the predictor lives on for the caller.
        objective.DisposeProjectors();
        return new PredictorRun(runDir, result.ModelDir, predictor, result.Train);
    }

    static JsonObject RunConfig(PredictorConfig cfg, Tensor preTrain, Tensor preVal) => new()
    {
        ["predictor"] = JsonNode.Parse(cfg.ToJsonString()),
        ["data"] = new JsonObject { ["train"] = preTrain.shape[0], ["val"] = preVal.shape[0], ["d"] = preTrain.shape[1] },
    };

    /// <summary>What training logs at each evaluation: the validation loss parts, cosine, retrieval and collapse monitors.</summary>
    static IReadOnlyDictionary<string, double> ValidationMetrics(PredictorObjective objective, Tensor zPre, Tensor zPost)
    {
        var predictor = objective.Predictor;
        var (loss, parts) = objective.Loss(zPre, zPost);
        var pred = predictor.forward(zPre);
        var m = new Dictionary<string, double> { ["loss"] = loss.item<float>() };
        foreach (var (k, v) in parts) m["loss_" + k] = v.item<float>();
        m["cos"] = LatentMetrics.MeanCosine(pred, zPost);
        m["cos_raw"] = LatentMetrics.MeanCosine(predictor.DestandardizePost(pred), predictor.DestandardizePost(zPost));
        var ranks = LatentMetrics.RetrievalRanks(pred, zPost);
        m["top1"] = LatentMetrics.TopK(ranks, 1);
        m["top5"] = LatentMetrics.TopK(ranks, 5);
        m["chance_top5"] = Math.Min(1.0, 5.0 / ranks.Length);
        var std = LatentMetrics.PerDimensionStd(pred);
        m["pred_std_mean"] = std.Average();
        m["pred_eff_rank"] = LatentMetrics.EffectiveRank(pred.reshape(pred.shape[0], -1));
        return m;
    }
}
