using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Tensors;
using LatentLab.Training;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>
/// The three phases of JEPA-Reasoner training plus the coupled baseline, each one Trainer run (resumable: a killed
/// phase restarted with the same options continues from its last checkpoint) writing <c>{phase}/train</c> and
/// <c>{phase}/model</c> under the run folder:
/// <list type="number">
/// <item>pretrain: the Reasoner as an ordinary LM (tied embeddings as LM head, L2 off), loss on the continuation;</item>
/// <item>sst: LM head unused, L2 on; predicted latents against an EMA target encoder's latents of the true sequence,
/// loss k·(1 − cos) on reasoning positions only; effective rank and per-dimension spread are logged;</item>
/// <item>talker: the Reasoner frozen; the Talker learns to say the continuation from the Reasoner's own latent chains;</item>
/// <item>baseline: the same pre-trained transformer trained on as an LM on the same batches for as many steps as SST.</item>
/// </list>
/// </summary>
public static class ReasonerPhases
{
    public const string Pretrain = "pretrain", Sst = "sst", Baseline = "baseline";

    /// <summary>The Talker phase of a kind (mono or dual): its folder under the run, so both Talkers can read one Reasoner.</summary>
    public static string TalkerPhase(string kind) => $"talker-{kind}";

    public static IReasonerData Data(ReasonerOptions o)
    {
        if (o.Task.Trim().Equals("gsm8k", StringComparison.OrdinalIgnoreCase))
        {
            if (o.TrainFile is null) throw new ArgumentException("task gsm8k needs a training file (TrainFile: GSM8K jsonl)");
            var all = Gsm8kReasonerData.Load(o.TrainFile);
            if (o.HoldOut < 0 || o.HoldOut >= all.Count) throw new ArgumentException($"{o.TrainFile}: cannot hold out {o.HoldOut} of {all.Count} examples");
            return Gsm8kReasonerData.FromExamples(Path.GetFileName(o.TrainFile), all.Take(all.Count - o.HoldOut).ToList());
        }
        var family = TaskRegistry.Get(o.Task);
        return new TaskReasonerData(family, o.Difficulty ?? family.Difficulty.Default, o.TrainMinDifficulty);
    }

    static TrainerConfig TrainerFor(ReasonerOptions o, string phase, long steps, double lr, double weightDecay = 0.1) => new()
    {
        Steps = steps,
        LearningRate = lr,
        WarmupSteps = Math.Min(50, Math.Max(1, steps / 10)),
        MinLrRatio = 0.1,
        WeightDecay = weightDecay,
        ClipNorm = 1.0,
        LogEvery = Math.Max(1, steps / 20),
        EvalEvery = Math.Max(1, steps / 4),
        CheckpointEvery = Math.Max(2, steps / 5),
        KeepCheckpoints = 2,
        Seed = o.Seed,
        OutDir = Path.Combine(o.PhaseDir(phase), "train"),
        ProgressBar = o.ProgressBar,
    };

    static JsonObject RunConfig(ReasonerOptions o, string phase, ComputeChoice compute)
    {
        var options = o.ToJson();
        foreach (var key in NotUpstream(phase)) options.Remove(key);
        return new() { ["phase"] = phase, ["reasoner"] = options, ["compute"] = compute.ToJson() };
    }

    static readonly string[] SstOnlyKeys = ["momentum", "loss_scale", "rollout"];
    static readonly string[] SstKeys = ["sst_steps", "sst_lr", .. SstOnlyKeys];
    static readonly string[] TalkerKeys = ["talker", "talker_hidden", "talker_layers", "talker_encoder_layers", "talker_steps", "talker_lr", "talker_pool"];
    /// <summary>Options of the two token decoders' training (Talkers and baseline), not of pre-training or SST.</summary>
    static readonly string[] DecoderKeys = ["train_slips"];

    /// <summary>
    /// The options a phase's config.json leaves out: those of the phases that come after it (pre-training knows nothing
    /// of SST or the Talker; the baseline shares SST's steps and rate, not its loss). A finished pre-training (or SST)
    /// folder copied into a new run folder is then reused by runs that differ only downstream, e.g. a sweep of
    /// <c>--k</c> over one pre-trained model; a changed upstream option still stops the later phases from resuming.
    /// </summary>
    public static IReadOnlyList<string> NotUpstream(string phase) => phase switch
    {
        Pretrain => [.. SstKeys, .. TalkerKeys, .. DecoderKeys],
        Sst => [.. TalkerKeys, .. DecoderKeys],
        Baseline => [.. SstOnlyKeys, .. TalkerKeys],
        _ => [],
    };

    /// <summary>A phase of this run folder: its trainer settings, and the resolved options and compute choice for config.json.</summary>
    static TrainingPhase Phase(ReasonerOptions o, string phase, long steps, double lr, ComputeChoice compute, double weightDecay = 0.1) =>
        new(phase, TrainerFor(o, phase, steps, lr, weightDecay), RunConfig(o, phase, compute));

    /// <summary>What every phase does first: check the options, load the native library, build the data.</summary>
    static IReasonerData Begin(ReasonerOptions o)
    {
        o.Validate();
        TorchRuntime.Initialize();
        return Data(o);
    }

    /// <summary>The phase's compute dtype by the library's policy (kept from its config.json when resumed).</summary>
    static ComputeChoice UseCompute(ReasonerOptions o, string phase, DecoderLM model, TextWriter? log) =>
        ComputePolicy.Apply(o.Compute, model, Path.Combine(o.PhaseDir(phase), "train", "config.json"), log);

    /// <summary>
    /// Next-token cross-entropy on the continuation (the prompt is given, not predicted), for pre-training and the
    /// baseline. <paramref name="inputs"/> (one per example, the continuation's
    /// length) replaces the continuation the model reads, e.g. a slipped trace; the targets stay the true continuations.
    /// </summary>
    public static TrainLoss LmLoss(DecoderLM model, IReadOnlyList<ReasonerExample> xs, int pad, IReadOnlyList<int[]>? inputs = null)
    {
        var (ids, targets, mask, scored) = LmBatch.Build(xs.Select(x => (x.Prompt.Concat(x.Continuation).ToArray(), x.Prompt.Length)).ToList(), pad);
        if (inputs is not null)
        {
            CheckInputs(xs, inputs);
            var (slipped, t2, m2, _) = LmBatch.Build(xs.Select((x, i) => (x.Prompt.Concat(inputs[i]).ToArray(), x.Prompt.Length)).ToList(), pad);
            t2.Dispose();
            m2.Dispose();
            ids.Dispose();
            ids = slipped;
        }
        using (ids)
        using (targets)
        using (mask)
        {
            using var output = model.Forward(ids, attentionMask: mask);
            var loss = F.cross_entropy(output.Logits!.view(-1, model.Config.VocabSize), targets.view(-1), ignore_index: -100);
            return new TrainLoss(loss, scored);
        }
    }

    static int Pad(IReasonerData d) => d.Tokenizer.PadId ?? 0;

    /// <summary>What a decoder reads in place of the continuations must match them one for one, in length.</summary>
    static void CheckInputs(IReadOnlyList<ReasonerExample> xs, IReadOnlyList<int[]> inputs)
    {
        if (inputs.Count != xs.Count || inputs.Where((x, i) => x.Length != xs[i].Continuation.Length).Any())
            throw new ArgumentException("decoder inputs must match the continuations one for one, in length");
    }

    /// <summary>Phase 1: the Reasoner as an ordinary LM (L2 off).</summary>
    public static PhaseResult RunPretrain(ReasonerOptions o, TextWriter? log = null, CancellationToken cancel = default)
    {
        var data = Begin(o);
        var config = Reasoner.ModelConfig(data.Tokenizer, o.Hidden, o.Layers, o.Heads, 4096);
        TorchRuntime.Seed(o.Seed);
        using var model = new DecoderLM(config);
        var compute = UseCompute(o, Pretrain, model, log);
        var trainable = new Trainable(model, (step, micro) => LmLoss(model, data.Train(Seeds.For(o.Seed, step, micro), o.BatchSize), Pad(data)));
        var phase = Phase(o, Pretrain, o.PretrainSteps, o.PretrainLr, compute) with { Evaluate = _ => LmEval(model, data, o.Seed) };
        var settings = new ReasonerSettings { L2 = false, InputScale = Reasoner.MeanEmbeddingNorm(model), LatentSteps = data.MaxContinuation };
        return phase.Run(trainable, dir => new Reasoner(model, settings).Save(dir, data.Tokenizer), o.ModelDir(Pretrain), log, cancel);
    }

    /// <summary>Teacher-forced next-token accuracy on a fixed held-out-seed batch (training distribution).</summary>
    static IReadOnlyDictionary<string, double> LmEval(DecoderLM model, IReasonerData data, long seed)
    {
        var xs = data.Train(Seeds.For(seed ^ 0x5EED, -1), 64);
        var r = LmLoss(model, xs, Pad(data));
        return new Dictionary<string, double> { ["lm_loss"] = r.Loss.item<float>() };
    }

    /// <summary>Phase 2: self-supervised training of the latent loop against an EMA target encoder.</summary>
    public static PhaseResult RunSst(ReasonerOptions o, TextWriter? log = null, CancellationToken cancel = default)
    {
        var data = Begin(o);
        var src = o.ModelDir(Pretrain);
        using var online = LoadPretrained(src);
        var compute = UseCompute(o, Sst, online, log);
        using var target = LoadPretrained(src);
        target.ComputeDType = online.ComputeDType;
        target.eval();
        var settings = new ReasonerSettings { L2 = true, InputScale = Reasoner.MeanEmbeddingNorm(online), LatentSteps = data.MaxContinuation };
        var reasoner = new Reasoner(online, settings);
        var targetReasoner = new Reasoner(target, settings);
        using var ema = Ema.IntoTarget(online, target);
        // JEPA-Reasoner holds the momentum fixed; the schedule is where a rising one (I-JEPA's 0.996 → 1) would go.
        var momentum = new EmaSchedule(o.Momentum, o.Momentum);

        var trainable = new Trainable(online,
            (step, micro) => SstLoss(reasoner, targetReasoner, data.Train(Seeds.For(o.Seed + 1, step, micro), o.BatchSize), Pad(data), o.LossScale, o.Rollout),
            afterStep: step => ema.Update(online, momentum.At(step, o.SstSteps)),
            extraState: () => ema.State("target."));
        var evalSet = data.Train(Seeds.For(o.Seed ^ 0x5EED, -2), 64);
        var phase = Phase(o, Sst, o.SstSteps, o.SstLr, compute, weightDecay: 0.0) with
        {
            Evaluate = _ => SstEval(reasoner, targetReasoner, evalSet, Pad(data), o.LossScale),
        };
        return phase.Run(trainable, dir => reasoner.Save(dir, data.Tokenizer), o.ModelDir(Sst), log, cancel);
    }

    static DecoderLM LoadPretrained(string dir)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"{dir} not found: run the reasoner pretrain phase into the same run folder first");
        var m = Checkpoints.Load(dir);
        m.train();
        return m;
    }

    /// <summary>
    /// The target latents of a batch: the target encoder reads the true tokens (prompt and continuation) and its
    /// L2-normalised state at the position before continuation token j is the target for latent j. [B, C, D], no graph.
    /// </summary>
    public static Tensor TargetLatents(Reasoner target, ReasonerBatch batch)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        long p = batch.PromptIds.shape[1], c = batch.Continuation.shape[1];
        var ids = cat(new[] { batch.PromptIds, batch.Continuation.narrow(1, 0, c - 1) }, 1);
        var mask = cat(new[] { batch.PromptMask, batch.ContinuationMask.narrow(1, 0, c - 1) }, 1);
        using var output = target.Model.Forward(ids, attentionMask: mask, logits: LogitsMode.None);
        return target.ToLatent(output.Hidden.narrow(1, p - 1, c)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One SST micro-batch: latents predicted in parallel from the latents before them, scaled cosine loss against the
    /// target encoder's latents on reasoning positions. The inputs are the target latents (teacher forcing), except for
    /// the first ⌈<paramref name="rollout"/>·B⌉ rows, whose inputs are the online Reasoner's own free-running chain
    /// (no gradient through the rollout): those rows learn to steer a drifted chain back to the targets.
    /// </summary>
    public static TrainLoss SstLoss(Reasoner online, Reasoner target, IReadOnlyList<ReasonerExample> xs, int pad, double k, double rollout = 0)
    {
        using var batch = ReasonerBatch.Of(xs, pad);
        using var tau = TargetLatents(target, batch);
        long c = tau.shape[1];
        using var inputs = SstInputs(online, batch, tau, rollout);
        using var pred = online.PredictLatents(batch.PromptIds, batch.PromptMask, inputs);
        var loss = SstMath.ScaledCosineLoss(pred, tau, batch.ContinuationMask, k);
        return new TrainLoss(loss, batch.Tokens);
    }

    /// <summary>The latent inputs of an SST batch [B, C − 1, D]: target latents, with the first ⌈rollout·B⌉ rows replaced by the online chain.</summary>
    static Tensor SstInputs(Reasoner online, ReasonerBatch batch, Tensor tau, double rollout)
    {
        using var scope = NewDisposeScope();
        long b = tau.shape[0], c = tau.shape[1];
        var teacher = tau.narrow(1, 0, c - 1);
        int own = (int)Math.Ceiling(rollout * b);
        if (own == 0 || c < 2) return teacher.clone().MoveToOuterDisposeScope();
        Tensor chain;
        using (no_grad())
            chain = online.Reason(batch.PromptIds.narrow(0, 0, own), batch.PromptMask.narrow(0, 0, own), (int)c - 1);
        var mixed = own == b ? chain : cat(new[] { chain, teacher.narrow(0, own, b - own) }, 0);
        return mixed.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// SST diagnostics on a fixed batch: the teacher-forced loss, the cosine and token read-out accuracy of the free-running
    /// latent chain (read out as the LM head would: argmax of latent · embeddingsᵀ), and the effective rank and mean
    /// per-dimension spread of the chain's latents (collapse shows as both dropping).
    /// </summary>
    static IReadOnlyDictionary<string, double> SstEval(Reasoner online, Reasoner target, IReadOnlyList<ReasonerExample> xs, int pad, double k)
    {
        using var batch = ReasonerBatch.Of(xs, pad);
        var tau = TargetLatents(target, batch);
        long c = tau.shape[1];
        var tf = SstMath.ScaledCosineLoss(online.PredictLatents(batch.PromptIds, batch.PromptMask, tau.narrow(1, 0, c - 1)), tau, batch.ContinuationMask, k);
        var chain = online.Reason(batch.PromptIds, batch.PromptMask, (int)c);
        var m = batch.ContinuationMask.to(ScalarType.Bool);
        var cos = F.cosine_similarity(chain, tau, dim: -1).masked_select(m).mean().item<float>();
        var readout = chain.matmul(online.Model.EmbeddingWeight.to(ScalarType.Float32).t()).argmax(-1);
        var acc = readout.eq(batch.Continuation).masked_select(m).to(ScalarType.Float32).mean().item<float>();
        var valid = chain.index(m);
        return new Dictionary<string, double>
        {
            ["loss_teacher_forced"] = tf.item<float>(),
            ["chain_cos"] = cos,
            ["chain_readout_acc"] = acc,
            ["effective_rank"] = LatentMetrics.EffectiveRank(valid),
            ["dim_std"] = LatentMetrics.MeanDimensionStd(valid),
        };
    }

    /// <summary>Phase 3: the Reasoner frozen, a Talker trained to say the continuation from the Reasoner's own chains.</summary>
    public static PhaseResult RunTalker(ReasonerOptions o, TextWriter? log = null, CancellationToken cancel = default)
    {
        var data = Begin(o);
        var srcDir = o.ModelDir(Sst);
        if (!Directory.Exists(srcDir)) throw new DirectoryNotFoundException($"{srcDir} not found: run the reasoner sst phase into the same run folder first");
        using var reasoner = Reasoner.Load(srcDir);
        var compute = UseCompute(o, TalkerPhase(o.Talker), reasoner.Model, log);
        foreach (var p in reasoner.Model.parameters()) p.requires_grad = false;
        int steps = reasoner.Settings.LatentSteps;

        // The chains of a fixed pool of training problems, computed once (the Reasoner is frozen, so they never change).
        // Drawn batch by batch like the other phases' data, so a small problem space only repeats problems.
        var pool = Enumerable.Range(0, (o.TalkerPool + o.BatchSize - 1) / o.BatchSize)
            .SelectMany(i => data.Train(Seeds.For(o.Seed + 2, -1, i), o.BatchSize)).Take(o.TalkerPool).ToList();
        using var chains = Chains(reasoner, pool, Pad(data));

        var tok = data.Tokenizer;
        var talkerConfig = new TalkerConfig(o.Talker == "dual" ? TalkerKind.Dual : TalkerKind.Mono, reasoner.Model.Config.HiddenSize,
            TalkerConfig.DecoderConfig(tok.VocabSize, o.TalkerHidden, o.TalkerLayers, 4, 4096, tok.BosId, tok.EosId, tok.PadId), o.TalkerEncoderLayers);
        var slips = TrainingSlips(o, data);
        TorchRuntime.Seed(o.Seed + 3);
        using var talker = Talker.Create(talkerConfig);
        var trainable = new Trainable(talker, (step, micro) =>
        {
            var rng = new Random(unchecked((int)Seeds.For(o.Seed + 3, step, micro)));
            var idx = Enumerable.Range(0, o.BatchSize).Select(_ => rng.Next(pool.Count)).ToArray();
            using var idxT = tensor(idx.Select(i => (long)i).ToArray(), device: chains.device);
            using var lat = chains.index_select(0, idxT);
            var batch = idx.Select(i => pool[i]).ToList();
            // Fresh slips every step: the same problem is slipped at other places each time it is drawn.
            return TalkerLoss(talker, lat, batch, Pad(data), slips?.SlipTraces(batch, Seeds.For(o.Seed + 4, step, micro)));
        });
        var name = TalkerPhase(o.Talker);
        return Phase(o, name, o.TalkerSteps, o.TalkerLr, compute).Run(trainable, talker.Save, o.ModelDir(name), log, cancel);
    }

    /// <summary>The slips of slip-augmented decoder training (<see cref="ReasonerOptions.TrainSlips"/>), null when off.</summary>
    static GenerationSlips? TrainingSlips(ReasonerOptions o, IReasonerData data) => o.TrainSlips <= 0 ? null
        : data is TaskReasonerData task ? GenerationSlips.For(task, o.TrainSlips, o.Seed + 4)
        : throw new ArgumentException($"--train-slips needs a task family with a thinking trace (got '{o.Task}')");

    /// <summary>The Reasoner's latent chains [N, LatentSteps, D] for examples, in chunks, without gradients.</summary>
    public static Tensor Chains(Reasoner reasoner, IReadOnlyList<ReasonerExample> xs, int pad, int chunk = 128)
    {
        using var _ = no_grad();
        var parts = new List<Tensor>();
        for (int s = 0; s < xs.Count; s += chunk)
        {
            using var b = ReasonerBatch.Of(xs.Skip(s).Take(chunk).ToList(), pad);
            parts.Add(reasoner.Reason(b.PromptIds, b.PromptMask, reasoner.Settings.LatentSteps));
        }
        var all = cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return all;
    }

    /// <summary>
    /// Cross-entropy of the Talker on continuations (start token, then teacher forcing) given latent chains [B, L, D].
    /// <paramref name="inputs"/> (one per example, the continuation's length) replaces what is teacher-forced, e.g. a
    /// slipped trace; the targets stay the true continuations.
    /// </summary>
    public static TrainLoss TalkerLoss(Talker talker, Tensor latents, IReadOnlyList<ReasonerExample> xs, int pad, IReadOnlyList<int[]>? inputs = null)
    {
        int start = talker.Config.Decoder.BosTokenId ?? throw new InvalidOperationException("talker config has no bos token");
        if (inputs is not null) CheckInputs(xs, inputs);
        // Input j is the start token then the continuation shifted by one; target j is continuation token j.
        int t = xs.Max(x => x.Continuation.Length);
        var (ids, inputMask) = TokenBatch.RightPad(xs.Select((x, i) => (inputs?[i] ?? x.Continuation).Prepend(start).Take(t).ToArray()).ToList(), pad);
        var (targets, scored) = TokenBatch.RightPad(xs.Select(x => x.Continuation).ToList(), -100);
        using (ids)
        using (inputMask)
        using (targets)
        using (scored)
        {
            using var logits = talker.Logits(latents, ids);
            var loss = F.cross_entropy(logits.reshape(-1, logits.shape[^1]), targets.view(-1), ignore_index: -100);
            return new TrainLoss(loss, scored.sum().item<long>());
        }
    }

    /// <summary>The coupled baseline: the pre-trained transformer trained on as an LM, on SST's batches, for SST's steps.</summary>
    public static PhaseResult RunBaseline(ReasonerOptions o, TextWriter? log = null, CancellationToken cancel = default)
    {
        var data = Begin(o);
        using var model = LoadPretrained(o.ModelDir(Pretrain));
        var compute = UseCompute(o, Baseline, model, log);
        var slips = TrainingSlips(o, data);
        var trainable = new Trainable(model, (step, micro) =>
        {
            var batch = data.Train(Seeds.For(o.Seed + 1, step, micro), o.BatchSize);
            return LmLoss(model, batch, Pad(data), slips?.SlipTraces(batch, Seeds.For(o.Seed + 5, step, micro)));
        });
        var phase = Phase(o, Baseline, o.SstSteps, o.SstLr, compute) with { Evaluate = _ => LmEval(model, data, o.Seed) };
        return phase.Run(trainable, dir => { Checkpoints.Save(model, dir); data.Tokenizer.Save(dir); }, o.ModelDir(Baseline), log, cancel);
    }
}
