using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using LatentLab.IO;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using LatentLab.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentLab.Methods.Recurrence;

/// <summary>One evaluation during training: where the schedules were and how many answers verified.</summary>
public sealed record CurvePoint(long Step, double P, int K, double Loss, Proportion Accuracy);

/// <summary>A trained (or evaluated) arm: its verified accuracy on the test set and what one answer costs.</summary>
/// <remarks>
/// <see cref="Accuracy"/> is graded at the schedule's end value of p (0: pure latent steps). A gated schedule can stop
/// short of it; then <see cref="PReached"/> is where p stood after the last update and <see cref="AtPReached"/> the
/// accuracy graded there, so a report shows both what the arm was trained at and what pure latent steps give.
/// </remarks>
public sealed record RecurrenceResult(string Name, string Mode, int K, bool Pause, Proportion Accuracy, double FlopsPerAnswer,
    double TrainSeconds, double FinalLoss, IReadOnlyList<CurvePoint> Curve, string? RunDir, double? PReached = null, Proportion? AtPReached = null)
{
    public JsonObject ToJson() => new()
    {
        ["name"] = Name, ["mode"] = Mode, ["k"] = K, ["pause"] = Pause,
        ["correct"] = Accuracy.Successes, ["total"] = Accuracy.Trials, ["accuracy"] = Accuracy.Value,
        ["low"] = Accuracy.Low, ["high"] = Accuracy.High, ["flops"] = FlopsPerAnswer,
        ["train_seconds"] = TrainSeconds, ["final_loss"] = double.IsFinite(FinalLoss) ? FinalLoss : null,
        ["run_dir"] = RunDir, ["p_reached"] = PReached,
        ["at_p_reached"] = AtPReached is { } r ? new JsonObject { ["correct"] = r.Successes, ["total"] = r.Trials, ["accuracy"] = r.Value } : null,
        ["curve"] = new JsonArray(Curve.Select(c => (JsonNode)new JsonObject
        {
            ["step"] = c.Step, ["p"] = c.P, ["k"] = c.K, ["loss"] = c.Loss,
            ["correct"] = c.Accuracy.Successes, ["total"] = c.Accuracy.Trials,
        }).ToArray()),
    };
}

/// <summary>
/// The schedules and the per-step bookkeeping of a recurrence run, as the one <see cref="Trainer"/> sees it:
/// answer-only loss, p annealing and the K curriculum (p is extra state, so a gated run resumes bit-exactly),
/// and ‖∂L/∂latent_k‖ for every latent step, read after each backward pass and logged with p and K.
/// </summary>
public sealed class RecurrenceTrainable : ITrainable
{
    readonly LatentRecurrence _model;
    readonly RecurrenceOptions _o;
    readonly Func<long, int, RecurrenceBatch> _data;
    // p as it stands before the next update; a tensor so checkpoints carry it (gated annealing depends on past losses).
    readonly Tensor _p;
    readonly List<(int Index, Tensor Latent)> _watched = new();
    double[] _latentNorms = [];
    int _lastK;
    double _lastP;

    public RecurrenceTrainable(LatentRecurrence model, RecurrenceOptions o, Func<long, int, RecurrenceBatch> data)
    {
        _model = model;
        _o = o;
        _data = data;
        _p = tensor(new[] { o.P.Start }, dtype: ScalarType.Float64);
    }

    public nn.Module Module => _model;

    /// <summary>p used by update <paramref name="step"/>.</summary>
    public double PAt(long step) => _o.P.LossDriven ? _p.item<double>() : _o.P.At(step, _o.Steps);

    /// <summary>How far the p annealing has gone (0 at Start, 1 at End); drives the K curriculum.</summary>
    public double Annealed(double p) => _o.P.Start == _o.P.End ? 1 : (_o.P.Start - p) / (_o.P.Start - _o.P.End);

    public int KAt(double p) => _o.Pause ? _o.K : _o.KCurriculum.At(_o.K, Annealed(p));

    public TrainLoss Loss(long step, int micro)
    {
        double p = PAt(step);
        int k = KAt(p);
        (_lastP, _lastK) = (p, k);
        var batch = _data(step, micro);
        var trace = _model.Reason(batch.PromptIds, batch.PromptMask, k, p);
        if (micro == 0) DisposeWatched();
        for (int i = 0; i < trace.Latents.Count; i++)
        {
            var h = trace.Latents[i];
            if (!h.requires_grad) continue;
            h.retain_grad();
            _watched.Add((i, h.DetachFromDisposeScope()));
        }
        var loss = _model.AnswerLoss(trace, batch);
        // Gated annealing needs the update's loss (the trainer runs one micro-batch per update here).
        LastLoss = loss.detach().to(ScalarType.Float64).item<double>();
        return new TrainLoss(loss, batch.AnswerTokens);
    }

    public void AfterStep(long step)
    {
        // Latent gradients of this update (summed over micro-batches, each already divided by their count).
        int n = _watched.Count == 0 ? 0 : _watched.Max(w => w.Index) + 1;
        var sq = new double[n];
        using (var scope = NewDisposeScope())
            foreach (var (i, h) in _watched)
                if (h.grad is { } g) sq[i] += g.to(ScalarType.Float64).square().sum().item<double>();
        _latentNorms = sq.Select(Math.Sqrt).ToArray();
        DisposeWatched();

        if (_o.P.LossDriven)
        {
            double p = _p.item<double>(), delta = _o.P.GateDecrement(_o.Steps);
            double next = LastLoss < _o.P.GateLoss ? Math.Max(_o.P.End, p - delta)
                : _o.P.Kind == PAnnealing.Tracking ? Math.Min(_o.P.Start, p + delta) : p;
            next = Math.Min(next, _o.P.DeadlineAt(step + 1, _o.Steps));
            using var _ = no_grad();
            _p.fill_(next);
        }
    }

    /// <summary>The loss, p and K of the latest update.</summary>
    public double LastLoss { get; private set; } = double.NaN;
    public double LastP => _lastP;
    public int LastK => _lastK;

    public IEnumerable<KeyValuePair<string, object>> StepMetrics(long step)
    {
        var row = new List<KeyValuePair<string, object>> { new("p", _lastP), new("k", (long)_lastK) };
        for (int i = 0; i < _latentNorms.Length; i++) row.Add(new($"grad_latent_{i}", _latentNorms[i]));
        return row;
    }

    public IEnumerable<(string Name, Tensor Tensor)> ExtraState() => [("recurrence.p", _p)];

    void DisposeWatched()
    {
        foreach (var (_, h) in _watched) h.Dispose();
        _watched.Clear();
    }
}

/// <summary>Trains and evaluates one latent-recurrence arm through the one <see cref="Trainer"/>.</summary>
public static class RecurrenceTraining
{
    /// <summary>The arm's display name, from its settings.</summary>
    public static string ArmName(RecurrenceOptions o) =>
        o.Pause ? $"pause K={o.K}" : o.K == 0 ? "K=0 (answer only)" : $"latent K={o.K}" + (o.Mode == RecurrenceMode.Depth ? " depth" : "");

    public static RecurrenceResult Train(RecurrenceOptions o, TextWriter? log = null, CancellationToken cancel = default)
    {
        o.Validate();
        log ??= Console.Out;
        TorchRuntime.Initialize();
        var family = TaskRegistry.Get(o.Task);
        int difficulty = o.Difficulty ?? family.Difficulty.Default;
        var fmt = TraceFormat.ForModel(o.Model, family);
        var device = TorchRuntime.ParseDevice(o.Device);
        TorchRuntime.Seed(o.Seed);
        var baseModel = Checkpoints.Load(o.Model, device: device);
        var trainDir = Path.Combine(o.OutDir, "train");
        var compute = ComputePolicy.Apply(o.Compute, baseModel, Path.Combine(trainDir, "config.json"), log);
        using var model = Build(baseModel, o);
        model.Checkpointing = o.Checkpointing;
        model.SetComputeDType(compute.DType);
        int pad = fmt.Tokenizer.PadId ?? 0;

        RecurrenceBatch Data(long step, int micro)
        {
            // A pure function of (seed, step, micro): a resumed run sees the same problems.
            long s = Seeds.For(o.Seed, step, micro);
            var problems = TaskSplits.Generate(family, Split.Train, o.BatchSize, difficulty, s);
            return RecurrenceData.Batch(problems.Select(p => RecurrenceData.Example(fmt, p)).ToList(), pad, device);
        }

        var trainable = new RecurrenceTrainable(model, o, Data);
        var evalSet = TaskSplits.Generate(family, Split.Validation, o.EvalProblems, difficulty, o.Seed + 104729);
        var curve = new List<CurvePoint>();
        long evalEvery = o.EvalPoints > 0 ? Math.Max(1, o.Steps / o.EvalPoints) : 0;
        var trainerConfig = new TrainerConfig
        {
            Steps = o.Steps,
            LearningRate = o.LearningRate,
            WarmupSteps = o.WarmupSteps,
            MinLrRatio = 0.1,
            WeightDecay = 0.0,
            ClipNorm = 1.0,
            LogEvery = 1,
            EvalEvery = evalEvery,
            CheckpointEvery = Math.Max(10, o.Steps / 4),
            KeepCheckpoints = 1,
            Seed = o.Seed,
            OutDir = trainDir,
            ProgressBar = o.ProgressBar,
        };
        var runConfig = new JsonObject
        {
            ["recurrence"] = o.ToJson(), ["model"] = baseModel.Config.ToHuggingFace(), ["compute"] = compute.ToJson(),
        };
        var trainer = new Trainer(trainerConfig, runConfig, log)
        {
            Evaluate = done =>
            {
                // The schedules as they stood for the update just done: accuracy vs p over training.
                double p = trainable.LastP;
                int k = trainable.LastK;
                var acc = Accuracy(Grade(model, fmt, evalSet, k, p));
                curve.Add(new CurvePoint(done, p, k, trainable.LastLoss, acc));
                return new Dictionary<string, double> { ["accuracy"] = acc.Value, ["p"] = p, ["k"] = k };
            },
        };
        var sw = Stopwatch.StartNew();
        var result = trainer.Run(trainable, cancel);
        double seconds = sw.Elapsed.TotalSeconds;

        var test = TaskSplits.Generate(family, Split.Test, o.TestProblems, difficulty, o.Seed + 7919 * difficulty);
        var graded = Grade(model, fmt, test, o.K, o.P.End);
        // A gated schedule may stop short of its end value: grade the arm where it was trained as well.
        double reached = trainable.PAt(o.Steps);
        bool shortOfEnd = !o.Pause && o.K > 0 && Math.Abs(reached - o.P.End) > 1e-9;
        Proportion? atReached = shortOfEnd ? Accuracy(Grade(model, fmt, test, o.K, reached)) : null;
        var arm = new RecurrenceResult(ArmName(o), o.Mode.ToString().ToLowerInvariant(), o.K, o.Pause, Accuracy(graded),
            graded.Average(g => Flops(model.Config, o, g)), seconds, result.FinalLoss, curve, Path.GetFullPath(o.OutDir), reached, atReached);
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "result.json"), arm.ToJson().ToJsonString(RecurrenceOptions.Json));
        WriteSamples(Path.Combine(o.OutDir, "answers.jsonl"), graded);
        log.WriteLine($"{arm.Name}: {arm.Accuracy} at p={o.P.End}, K={o.K}" + (atReached is { } r ? $" ({r} at p={reached:F3}, where training stopped)" : "") +
                      $"; {arm.FlopsPerAnswer:E2} FLOPs per answer; trained in {seconds:F0} s");
        return arm;
    }

    /// <summary>The recurrence model a run's options describe, around <paramref name="baseModel"/> (training and re-grading build it alike).</summary>
    static LatentRecurrence Build(DecoderLM baseModel, RecurrenceOptions o) =>
        new(baseModel, o.Mode, o.LoraRank, o.BridgeMlp, o.Pause ? o.K : 0, o.MarkerDecode) { LatentScale = o.LatentScale };

    /// <summary>
    /// Re-grades a trained run folder (its config.json and newest checkpoint) at any K and p, e.g. to see how an arm
    /// trained at K = 4 answers with K = 8 steps, or at p = 0.5.
    /// </summary>
    public static RecurrenceResult Evaluate(string runDir, int? k = null, double? p = null, int? problems = null, TextWriter? log = null)
    {
        log ??= Console.Out;
        TorchRuntime.Initialize();
        var cfgPath = Path.Combine(runDir, "train", "config.json");
        if (!File.Exists(cfgPath)) throw new FileNotFoundException($"{runDir} is not a recurrence run folder (no train/config.json)", cfgPath);
        var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(cfgPath))!["run"]?["recurrence"]
                   ?? throw new InvalidDataException($"{cfgPath}: no run.recurrence section");
        var o = System.Text.Json.JsonSerializer.Deserialize<RecurrenceOptions>(node.ToJsonString(), RecurrenceOptions.Json)!;
        var ckpt = RunCheckpoints.FindLatest(Path.Combine(runDir, "train", "checkpoints"))
                   ?? throw new FileNotFoundException($"{runDir}: no complete checkpoint under train/checkpoints");
        var family = TaskRegistry.Get(o.Task);
        int difficulty = o.Difficulty ?? family.Difficulty.Default;
        var fmt = TraceFormat.ForModel(o.Model, family);
        var device = TorchRuntime.ParseDevice(o.Device);
        var baseModel = Checkpoints.Load(o.Model, device: device);
        using var model = Build(baseModel, o);
        using (no_grad())
        using (var f = SafetensorsCheckpoint.Open(Path.Combine(ckpt.Path, RunCheckpoints.ModelFile)))
            foreach (var (name, prm) in model.named_parameters())
            {
                using var t = f.Read(name, prm.dtype, prm.device);
                prm.copy_(t);
            }
        int kk = k ?? o.K;
        double pp = p ?? o.P.End;
        var test = TaskSplits.Generate(family, Split.Test, problems ?? o.TestProblems, difficulty, o.Seed + 7919 * difficulty);
        var graded = Grade(model, fmt, test, kk, pp);
        var r = new RecurrenceResult(ArmName(o with { K = kk }), o.Mode.ToString().ToLowerInvariant(), kk, o.Pause, Accuracy(graded),
            graded.Average(g => Flops(model.Config, o with { K = kk }, g)), 0, double.NaN, [], Path.GetFullPath(runDir));
        log.WriteLine($"{r.Name} (trained at K={o.K}) at p={pp}: {r.Accuracy}; {r.FlopsPerAnswer:E2} FLOPs per answer");
        return r;
    }

    /// <summary>One graded answer: the prompt and answer lengths (compute accounting) and whether the verifier accepted it.</summary>
    public sealed record Graded(TaskProblem Problem, string? Answer, bool Correct, int PromptTokens, int MarkerTokens, int GeneratedTokens);

    /// <summary>Greedy answers after <paramref name="k"/> latent steps at <paramref name="p"/>, checked by the task's exact verifier.</summary>
    public static IReadOnlyList<Graded> Grade(LatentRecurrence model, TraceFormat fmt, IReadOnlyList<TaskProblem> problems, int k, double p, int batchSize = 128)
    {
        var results = new List<Graded>(problems.Count);
        int pad = fmt.Tokenizer.PadId ?? 0;
        var stops = fmt.StopTokens;
        for (int start = 0; start < problems.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var chunk = problems.Skip(start).Take(batchSize).Select(pr => RecurrenceData.Example(fmt, pr)).ToList();
            var batch = RecurrenceData.Batch(chunk, pad, model.Reasoner.Device);
            int maxNew = chunk.Max(x => x.Answer.Length) + 4;
            var answers = model.Answer(batch.PromptIds, batch.PromptMask, batch.Marker, k, p, maxNew, stops.ToHashSet());
            for (int i = 0; i < chunk.Count; i++)
            {
                var text = fmt.ParseAnswer(answers[i], thinking: false);
                bool ok = text is not null && fmt.Family.Verify(chunk[i].Problem, text);
                // The stop token is sampled too (one forward), unless the budget ran out first.
                int generated = answers[i].Length + (answers[i].Length < maxNew ? 1 : 0);
                results.Add(new Graded(chunk[i].Problem, text, ok, chunk[i].Prompt.Length, chunk[i].Marker.Length, generated));
            }
        }
        return results;
    }

    public static Proportion Accuracy(IReadOnlyList<Graded> g) => Proportion.Wilson(g.Count(x => x.Correct), g.Count);

    /// <summary>
    /// Forward FLOPs of one answer (<see cref="Throughput.DecoderForwardFlops"/>; a KV-cached pass over n positions
    /// costs what one causal pass over n does). Append and pause: one pass over question, K latent or pause positions,
    /// the bridged latent (none with marker decoding), the marker and the answer. Depth: the question's T positions K + 1 times, then the
    /// decoder over the T bridged states, the marker and the answer. The bridge (2d² per position) is left out.
    /// </summary>
    public static double Flops(TransformerConfig c, RecurrenceOptions o, Graded g)
    {
        int tail = (o.MarkerDecode ? 0 : 1) + g.MarkerTokens + g.GeneratedTokens;
        if (o.Mode == RecurrenceMode.Depth && !o.Pause)
            return (o.K + 1) * Throughput.DecoderForwardFlops(c, 1, g.PromptTokens)
                   + Throughput.DecoderForwardFlops(c, 1, g.PromptTokens + tail - 1);
        return Throughput.DecoderForwardFlops(c, 1, g.PromptTokens + o.K + tail);
    }

    static void WriteSamples(string path, IReadOnlyList<Graded> graded)
    {
        var lines = graded.Take(50).Select(g => new JsonObject
        {
            ["prompt"] = g.Problem.Prompt, ["answer"] = g.Answer, ["expected"] = g.Problem.Answer, ["correct"] = g.Correct,
        }.ToJsonString());
        AtomicFile.WriteAllText(path, string.Join("\n", lines) + "\n");
    }
}

/// <summary>A log that passes every line except the trainer's per-step lines, of which it keeps every Nth.</summary>
public sealed class EveryNthStepLog(TextWriter inner, int n) : TextWriter
{
    public override System.Text.Encoding Encoding => inner.Encoding;

    public override void WriteLine(string? value)
    {
        if (value is not null && value.StartsWith("step ", StringComparison.Ordinal))
        {
            var head = value.AsSpan(5);
            int slash = head.IndexOf('/');
            if (slash > 0 && long.TryParse(head[..slash], NumberStyles.None, CultureInfo.InvariantCulture, out var s)
                && s % n != 0 && !value.Contains(" eval", StringComparison.Ordinal) && !value.Contains("accuracy", StringComparison.Ordinal))
            {
                var rest = head[(slash + 1)..];
                int space = rest.IndexOf(' ');
                if (space < 0 || !long.TryParse(rest[..space], NumberStyles.None, CultureInfo.InvariantCulture, out var total) || s != total) return;
            }
        }
        inner.WriteLine(value);
    }

    public override void Write(char value) => inner.Write(value);
    public override void Flush() => inner.Flush();
}
