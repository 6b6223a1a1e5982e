using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.IO;
using LatentLab.Tensors;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentLab.Training;

/// <summary>The mean loss of one optimiser update (over its micro-batches) and the tokens it consumed.</summary>
public readonly record struct StepLoss(double Loss, long Tokens);

/// <summary>How a <see cref="Trainer.Run"/> ended.</summary>
public sealed record TrainResult(long ResumedFrom, long Steps, double FinalLoss, long Tokens,
    IReadOnlyDictionary<string, double> FinalEval, string FinalCheckpoint);

/// <summary>
/// The one training loop every method uses: AdamW, warm-up + cosine, global-norm clipping, gradient accumulation,
/// periodic evaluation, metrics.jsonl + TensorBoard, and checkpoints from which a killed run resumes to the same
/// final weights as an uninterrupted one. Per update:
/// <code>
///   lr ← schedule(step);  g ← Σ_micro ∇(loss(step, micro) / k);  n ← ‖g‖;  clip g to ClipNorm;  AdamW step;  AfterStep
/// </code>
/// Run folder: config.json, metrics.jsonl, tb/, checkpoints/step-NNNNNN/ and checkpoints/latest.
/// </summary>
public sealed class Trainer
{
    readonly TrainerConfig _c;
    readonly JsonObject? _runConfig;
    readonly TextWriter _log;

    public Trainer(TrainerConfig config, JsonObject? runConfig = null, TextWriter? log = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        _c = config;
        _runConfig = runConfig;
        _log = log ?? Console.Out;
    }

    public TrainerConfig Config => _c;
    public string RunDir => Path.GetFullPath(_c.OutDir);
    public string CheckpointsDir => Path.Combine(RunDir, "checkpoints");
    public string MetricsPath => Path.Combine(RunDir, "metrics.jsonl");

    /// <summary>
    /// Called every EvalEvery updates and after the last one with the number of updates done; returns named metrics
    /// (logged as eval_NAME). It runs with the module in eval mode, without gradients, and cannot disturb the
    /// training RNG stream (its state is saved before and restored after).
    /// </summary>
    public Func<long, IReadOnlyDictionary<string, double>>? Evaluate { get; init; }

    /// <summary>
    /// Trains <paramref name="model"/> to Config.Steps updates, resuming from the newest complete checkpoint in the run
    /// folder if there is one (a finished run returns at once). Seeds torch with Config.Seed on a fresh start.
    /// </summary>
    public TrainResult Run(ITrainable model, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        TorchRuntime.Initialize();
        Directory.CreateDirectory(RunDir);

        var named = model.TrainableParameters().ToList();
        if (named.Count == 0) throw new ArgumentException("trainer: the model has no parameter that requires a gradient");
        var parameters = named.Select(p => p.Parameter).ToList();
        using var optimizer = BuildOptimizer(named, out var order);

        var config = ResolvedConfig();
        // Warnings go out before any progress display starts, so plain lines are safe on the console too.
        var resume = RunCheckpoints.FindLatest(CheckpointsDir, warning => { _log.WriteLine($"warning: {warning}"); _log.Flush(); },
            ckpt =>
            {
                CheckSameConfig(config);
                return Restore(ckpt, model, optimizer, order);
            });
        long start = 0, tokens = 0;
        double lastLoss = double.NaN;
        if (resume is not null)
        {
            start = resume.Step;
            tokens = resume.State.Tokens;
            lastLoss = resume.State.Loss;
            MetricsLog.TruncateAfter(MetricsPath, start);
        }
        else
        {
            TorchRuntime.Seed(_c.Seed);
            if (File.Exists(MetricsPath)) File.Delete(MetricsPath);
        }
        AtomicFile.WriteAllText(Path.Combine(RunDir, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");

        var metrics = new MetricsLog(RunDir);
        var loop = new Loop(this, model, optimizer, order, parameters, metrics, start, tokens, lastLoss, resume?.Path);
        if (resume is not null) loop.Say($"resumed from {resume.Path} (step {start})");
        if (metrics.TensorBoardError is not null) loop.Say(metrics.TensorBoardError);
        if (_c.ProgressBar == false || _log is not IProgressLog live) return loop.Run(null, cancel);
        return live.WithProgress("train", _c.Steps, start, progress => loop.Run(progress, cancel));
    }

    /// <summary>
    /// Runs the micro-batches of update <paramref name="step"/>, back-propagating loss / k each time, so the
    /// accumulated gradient is that of the mean over all k micro-batches (k micro-batches of size b = one batch of k·b).
    /// </summary>
    public static StepLoss Accumulate(ITrainable model, long step, int microBatches)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(microBatches, 1);
        double loss = 0;
        long tokens = 0;
        for (int micro = 0; micro < microBatches; micro++)
        {
            using var scope = NewDisposeScope();
            var r = model.Loss(step, micro);
            if (r.Loss.numel() != 1) throw new InvalidOperationException($"trainer: the loss of step {step}, micro-batch {micro} has shape [{string.Join(",", r.Loss.shape)}]; it must be a scalar");
            double v = r.Loss.detach().to(ScalarType.Float64).item<double>();
            if (!double.IsFinite(v)) throw new InvalidOperationException($"trainer: the loss is {v} at step {step}, micro-batch {micro}; lower the learning rate or check the data");
            (r.Loss / microBatches).backward();
            loss += v / microBatches;
            tokens += r.Tokens;
        }
        return new StepLoss(loss, tokens);
    }

    /// <summary>Two groups as in nanoGPT: matrices get weight decay, vectors (norms, biases) do not.</summary>
    AdamW BuildOptimizer(List<(string Name, Parameter Parameter)> named, out List<(string Name, Parameter Parameter)> order)
    {
        var decay = named.Where(p => p.Parameter.dim() >= 2).ToList();
        var noDecay = named.Where(p => p.Parameter.dim() < 2).ToList();
        // AdamW keeps its per-parameter state in group order; checkpoints rely on the same order.
        order = decay.Concat(noDecay).ToList();
        var b = _c.Betas;
        var groups = new List<AdamW.ParamGroup>();
        if (decay.Count > 0) groups.Add(new AdamW.ParamGroup(decay.Select(p => p.Parameter), _c.LearningRate, b.Beta1, b.Beta2, _c.Eps, _c.WeightDecay, false, false));
        if (noDecay.Count > 0) groups.Add(new AdamW.ParamGroup(noDecay.Select(p => p.Parameter), _c.LearningRate, b.Beta1, b.Beta2, _c.Eps, 0, false, false));
        return new AdamW(groups, _c.LearningRate, b.Beta1, b.Beta2, _c.Eps, _c.WeightDecay);
    }

    JsonObject ResolvedConfig()
    {
        var trainer = JsonSerializer.SerializeToNode(_c with { OutDir = RunDir }, RunCheckpoints.Json)!.AsObject();
        return new JsonObject { ["trainer"] = trainer, ["run"] = _runConfig?.DeepClone() };
    }

    /// <summary>
    /// Resuming under a different config would silently mix two runs; only where output goes and how it is shown may
    /// differ. Those are the keys <c>out_dir</c> and <c>progress_bar</c> at any depth (the trainer's own and those of
    /// the caller's run section, e.g. a teacher's options), so a run folder copied or renamed resumes where it left off.
    /// </summary>
    void CheckSameConfig(JsonObject now)
    {
        var path = Path.Combine(RunDir, "config.json");
        if (!File.Exists(path)) return;
        JsonNode? before;
        try { before = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e); }
        static JsonNode? Comparable(JsonNode? n)
        {
            var c = n?.DeepClone();
            Strip(c);
            return c;
        }
        static void Strip(JsonNode? n)
        {
            if (n is JsonObject o)
            {
                o.Remove("out_dir");
                o.Remove("progress_bar");
                foreach (var (_, v) in o) Strip(v);
            }
            else if (n is JsonArray a)
                foreach (var v in a) Strip(v);
        }
        if (!JsonNode.DeepEquals(Comparable(before), Comparable(now)))
            throw new InvalidOperationException($"{RunDir} holds checkpoints of a run with a different config ({path}); " +
                "resume with the same settings, or choose a new OutDir");
    }

    /// <summary>
    /// Loads a checkpoint into the model, the optimiser and the RNG, checking each file's checksum from the bytes as they
    /// are read. Returns null, or what is damaged: the caller then restores an older checkpoint over whatever this one
    /// already copied in, so damaged values never survive. A checkpoint that does not fit the model is an error, not damage.
    /// </summary>
    static string? Restore(CheckpointInfo ckpt, ITrainable model, AdamW optimizer, List<(string Name, Parameter Parameter)> order)
    {
        using var _ = no_grad();
        var weights = model.Module.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter, StringComparer.Ordinal);
        if (Load(ckpt, RunCheckpoints.ModelFile, weights, null) is { } bad) return bad;
        var extra = model.ExtraState().ToDictionary(p => p.Name, p => p.Tensor, StringComparer.Ordinal);
        if (extra.Count > 0 && Load(ckpt, RunCheckpoints.ExtraFile, extra, null) is { } badExtra) return badExtra;

        var states = optimizer.state_dict().State;
        var moments = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var steps = new Dictionary<string, AdamW.State>(StringComparer.Ordinal);
        for (int i = 0; i < order.Count; i++)
        {
            var s = (AdamW.State)states[i];
            moments["exp_avg." + order[i].Name] = s.exp_avg;
            moments["exp_avg_sq." + order[i].Name] = s.exp_avg_sq;
            steps["step." + order[i].Name] = s;
        }
        if (Load(ckpt, RunCheckpoints.OptimizerFile, moments, (name, t) =>
            {
                if (!steps.TryGetValue(name, out var s)) return false;
                s.step = t.item<long>();
                steps.Remove(name);
                return true;
            }) is { } badOpt) return badOpt;
        if (steps.Count > 0)
            throw new InvalidDataException($"{Path.Combine(ckpt.Path, RunCheckpoints.OptimizerFile)}: checkpoint has no '{steps.Keys.First()}' (saved by a different model or optimiser setup?)");

        bool rng = false;
        return Load(ckpt, RunCheckpoints.RngFile, new Dictionary<string, Tensor>(), (name, t) =>
        {
            if (name != "torch.cpu") return false;
            torch.set_rng_state(t);
            rng = true;
            return true;
        }) ?? (rng ? null : throw new InvalidDataException($"{Path.Combine(ckpt.Path, RunCheckpoints.RngFile)}: no 'torch.cpu' generator state"));
    }

    /// <summary>
    /// Copies every tensor of one checkpoint file into <paramref name="into"/> by name (or hands it to <paramref name="other"/>),
    /// hashing the file as it goes. Null when it is intact (or predates checksums); otherwise what is damaged.
    /// </summary>
    static string? Load(CheckpointInfo ckpt, string fileName, Dictionary<string, Tensor> into, Func<string, Tensor, bool>? other)
    {
        var file = Path.Combine(ckpt.Path, fileName);
        string? expected = null;
        if (ckpt.Checksummed && !ckpt.State.Checksums.TryGetValue(fileName, out expected))
            return $"{Path.Combine(ckpt.Path, RunCheckpoints.StateFile)} lists no checksum for {fileName}";
        var missing = new HashSet<string>(into.Keys, StringComparer.Ordinal);
        string actual;
        try
        {
            using var f = SafetensorsFile.Open(file);
            actual = f.ReadAllHashed((name, t) =>
            {
                if (into.TryGetValue(name, out var target))
                {
                    if (!t.shape.SequenceEqual(target.shape))
                        throw new InvalidDataException($"{file}: '{name}' has shape [{string.Join(",", t.shape)}], the model has [{string.Join(",", target.shape)}]");
                    target.copy_(t);
                    missing.Remove(name);
                }
                else if (other is null || !other(name, t))
                    throw new InvalidDataException($"{file}: checkpoint has a tensor the model lacks: '{name}' (saved by a different model or optimiser setup?)");
            });
        }
        catch (Exception e) when (e is InvalidDataException or SafetensorsFormatException or IOException)
        {
            // A flipped bit in a header reads as a malformed file: the checksum tells damage from a genuine mismatch.
            if (expected is not null && FileChecksum.Check(file, expected) is { } damage) return damage;
            throw;
        }
        if (expected is not null && actual != expected)
            return $"{file} is damaged: its content checksum is {actual}, {expected} was recorded when it was written";
        if (missing.Count > 0)
            throw new InvalidDataException($"{file}: checkpoint has no '{missing.First()}' (saved by a different model or optimiser setup?)");
        return null;
    }

    /// <summary>One life of the loop (from a fresh start or a checkpoint to the end).</summary>
    sealed class Loop(Trainer owner, ITrainable model, AdamW optimizer, List<(string Name, Parameter Parameter)> order,
        List<Parameter> parameters, MetricsLog metrics, long start, long tokens, double lastLoss, string? lastCheckpoint)
    {
        readonly TrainerConfig _c = owner._c;
        readonly Stopwatch _clock = Stopwatch.StartNew();
        IReadOnlyDictionary<string, double> _lastEval = new Dictionary<string, double>();
        string _barLabel = "train";

        public void Say(string line)
        {
            owner._log.WriteLine(line);
            owner._log.Flush();
        }

        public TrainResult Run(Action<long, string>? progress, CancellationToken cancel)
        {
            long done = start;
            if (done >= _c.Steps)
            {
                Say($"already trained: {lastCheckpoint} is at step {done} of {_c.Steps}");
                return new TrainResult(start, done, lastLoss, tokens, _lastEval, lastCheckpoint!);
            }
            model.Module.train();
            long intervalTokens = 0;
            double intervalStart = _clock.Elapsed.TotalSeconds;
            double paused = 0; // evaluation and checkpoint time in the interval: not training, so not in tokens/s
            string? checkpoint = lastCheckpoint;
            for (long step = start; step < _c.Steps; step++)
            {
                cancel.ThrowIfCancellationRequested();
                double lr = LrSchedule.At(step, _c);
                foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
                StepLoss r;
                double gradNorm;
                using (var scope = NewDisposeScope())
                {
                    optimizer.zero_grad();
                    r = Accumulate(model, step, _c.AccumulationSteps);
                    gradNorm = Gradients.ClipGlobalNorm(parameters, _c.ClipNorm);
                    optimizer.step();
                }
                model.AfterStep(step);
                done = step + 1;
                tokens += r.Tokens;
                intervalTokens += r.Tokens;
                lastLoss = r.Loss;

                bool last = done == _c.Steps;
                bool log = done % _c.LogEvery == 0 || last;
                bool eval = owner.Evaluate is not null && ((_c.EvalEvery > 0 && done % _c.EvalEvery == 0) || last);
                if (log || eval)
                {
                    double now = _clock.Elapsed.TotalSeconds;
                    double tps = intervalTokens / Math.Max(1e-9, now - intervalStart - paused);
                    intervalTokens = 0;
                    intervalStart = now;
                    paused = 0;
                    var row = new List<KeyValuePair<string, object>>
                    {
                        new("loss", r.Loss), new("lr", lr), new("grad_norm", gradNorm),
                        new("tokens", tokens), new("tokens_per_s", tps), new("elapsed_s", now),
                    };
                    row.AddRange(model.StepMetrics(step));
                    if (eval)
                    {
                        double t0 = _clock.Elapsed.TotalSeconds;
                        _lastEval = RunEval(done);
                        paused += _clock.Elapsed.TotalSeconds - t0;
                        foreach (var (k, v) in _lastEval) row.Add(new("eval_" + k, v));
                    }
                    metrics.Write(done, row);
                    var text = string.Create(CultureInfo.InvariantCulture, $"step {done}/{_c.Steps} loss {r.Loss:F4} lr {lr:E2} |g| {gradNorm:F3} {tps:F0} tok/s");
                    if (eval) text += " " + string.Join(" ", _lastEval.Select(p => $"{p.Key} {p.Value.ToString("G4", CultureInfo.InvariantCulture)}"));
                    if (progress is null) Say(text);
                    else
                    {
                        // The bar's own columns show the position; its label stays short so it fits on one line.
                        _barLabel = string.Create(CultureInfo.InvariantCulture, $"loss {r.Loss:F4} {tps:F0} tok/s");
                        progress(done, _barLabel);
                        if (eval) Say(text);
                    }
                }
                else progress?.Invoke(done, _barLabel);

                if (last || (_c.CheckpointEvery > 0 && done % _c.CheckpointEvery == 0))
                {
                    double t0 = _clock.Elapsed.TotalSeconds;
                    checkpoint = Save(done, tokens, r.Loss, lr);
                    paused += _clock.Elapsed.TotalSeconds - t0;
                    Say($"checkpoint {Path.GetFileName(checkpoint)}");
                }
            }
            return new TrainResult(start, done, lastLoss, tokens, _lastEval, checkpoint!);
        }

        IReadOnlyDictionary<string, double> RunEval(long done)
        {
            using var rng = torch.get_rng_state();
            model.Module.eval();
            try
            {
                using var _ = no_grad();
                using var scope = NewDisposeScope();
                return new Dictionary<string, double>(owner.Evaluate!(done));
            }
            finally
            {
                model.Module.train();
                torch.set_rng_state(rng);
            }
        }

        string Save(long done, long tokensSoFar, double loss, double lr)
        {
            var state = new CheckpointState { Step = done, Tokens = tokensSoFar, Loss = loss, LearningRate = lr, Seed = _c.Seed };
            return RunCheckpoints.Save(owner.CheckpointsDir, state, dir =>
            {
                using var scope = NewDisposeScope();
                var meta = new Dictionary<string, string> { ["format"] = "pt" };
                SafetensorsWriter.Write(Path.Combine(dir, RunCheckpoints.ModelFile),
                    model.Module.named_parameters().Select(p => new KeyValuePair<string, Tensor>(p.name, p.parameter.detach())), meta);

                var states = optimizer.state_dict().State;
                var opt = new List<KeyValuePair<string, Tensor>>();
                for (int i = 0; i < order.Count; i++)
                {
                    var s = (AdamW.State)states[i];
                    opt.Add(new("exp_avg." + order[i].Name, s.exp_avg));
                    opt.Add(new("exp_avg_sq." + order[i].Name, s.exp_avg_sq));
                    opt.Add(new("step." + order[i].Name, torch.tensor(new[] { s.step })));
                }
                SafetensorsWriter.Write(Path.Combine(dir, RunCheckpoints.OptimizerFile), opt);

                var extra = model.ExtraState().Select(p => new KeyValuePair<string, Tensor>(p.Name, p.Tensor.detach())).ToList();
                if (extra.Count > 0) SafetensorsWriter.Write(Path.Combine(dir, RunCheckpoints.ExtraFile), extra);

                // Only the CPU generator: CUDA kernels used here draw no random numbers that affect training.
                SafetensorsWriter.Write(Path.Combine(dir, RunCheckpoints.RngFile), [new("torch.cpu", torch.get_rng_state())]);
            }, _c.KeepCheckpoints);
        }
    }
}
