using System.Text.Json;
using System.Text.Json.Nodes;
using LatentLab.IO;
using LatentLab.Models;
using LatentLab.Tensors;
using LatentLab.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Tests;

/// <summary>A tiny Llama and a deterministic next-token task for in-process trainer tests.</summary>
sealed class TinyTask : ITrainable, IDisposable
{
    public const int Rows = 8, Length = 12;
    public readonly DecoderLM Model;
    public readonly int RowsPerMicro;
    readonly int _vocab;

    public TinyTask(long seed = 5, int rowsPerMicro = Rows)
    {
        TorchRuntime.Initialize();
        TorchRuntime.Seed(seed);
        Model = new DecoderLM(TinyModels.Config("LlamaForCausalLM"));
        _vocab = Model.Config.VocabSize;
        RowsPerMicro = rowsPerMicro;
    }

    public nn.Module Module => Model;

    /// <summary>Rows of arithmetic progressions mod (V − 3), a pure function of the step.</summary>
    public Tensor Batch(long step)
    {
        using var g = new Generator((ulong)Seeds.For(7, step));
        var start = randint(3, _vocab, [Rows, 1], generator: g);
        var stride = randint(1, 5, [Rows, 1], generator: g);
        return (start + stride * arange(Length, dtype: ScalarType.Int64).unsqueeze(0)).remainder(_vocab - 3) + 3;
    }

    public TrainLoss Loss(long step, int micro)
    {
        var rows = Batch(step).narrow(0, micro * RowsPerMicro, RowsPerMicro);
        var logits = Model.Forward(rows.narrow(1, 0, Length - 1)).Logits!;
        var loss = nn.functional.cross_entropy(logits.reshape(-1, _vocab), rows.narrow(1, 1, Length - 1).reshape(-1));
        return new TrainLoss(loss, rows.numel());
    }

    public void Dispose() => Model.Dispose();
}

public sealed class TrainerTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-trainer").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    TrainerConfig Config(string name, long steps = 6) => new()
    {
        Steps = steps, LearningRate = 1e-2, WarmupSteps = 2, LogEvery = 2, EvalEvery = 3, CheckpointEvery = 2,
        KeepCheckpoints = 2, Seed = 3, OutDir = Path.Combine(_dir, name), ProgressBar = false,
    };

    [Fact]
    public void ScheduleWarmsUpLinearlyThenFollowsCosineToTheFloor()
    {
        var c = new TrainerConfig { Steps = 110, WarmupSteps = 10, LearningRate = 1.0, MinLrRatio = 0.1 };
        Assert.Equal(0.1, LrSchedule.At(0, c), 12);
        Assert.Equal(0.5, LrSchedule.At(4, c), 12);
        Assert.Equal(1.0, LrSchedule.At(9, c), 12);
        Assert.Equal(1.0, LrSchedule.At(10, c), 12);
        // A third of the way through the decay (33 of 99 steps): 0.1 + 0.5·(1 + cos(π/3))·0.9.
        Assert.Equal(0.775, LrSchedule.At(43, c), 12);
        Assert.Equal(0.1, LrSchedule.At(109, c), 12);
        for (long s = 11; s < 110; s++) Assert.True(LrSchedule.At(s, c) < LrSchedule.At(s - 1, c), $"not decreasing at {s}");
        // No warm-up: the first step already runs at the peak.
        Assert.Equal(2.0, LrSchedule.At(0, 50, 2.0, 0, 0.0), 12);
        Assert.Equal(0.0, LrSchedule.At(49, 50, 2.0, 0, 0.0), 12);
    }

    [Fact]
    public void ClippingReportsThePreClipNormAndScalesToTheLimit()
    {
        TorchRuntime.Initialize();
        using var scope = NewDisposeScope();
        var a = new TorchSharp.Modules.Parameter(zeros(2));
        var b = new TorchSharp.Modules.Parameter(zeros(1));
        a.grad = tensor(new float[] { 3, 0 });
        b.grad = tensor(new float[] { 4 });
        var ps = new[] { a, b };

        Assert.Equal(5.0, Gradients.ClipGlobalNorm(ps, 0), 5); // 0 = measure only
        Assert.Equal(new float[] { 3, 0 }, a.grad!.data<float>().ToArray());

        Assert.Equal(5.0, Gradients.ClipGlobalNorm(ps, 10), 5); // under the limit: untouched
        Assert.Equal(4f, b.grad!.item<float>(), 5);

        Assert.Equal(5.0, Gradients.ClipGlobalNorm(ps, 1.0), 5);
        Assert.Equal(0.6f, a.grad!.data<float>()[0], 5);
        Assert.Equal(0.8f, b.grad!.item<float>(), 5);
        Assert.Equal(1.0, Gradients.GlobalNorm(ps), 5);
    }

    [Fact]
    public void AccumulatingKMicroBatchesEqualsOneBatchOfKTimesTheSize()
    {
        using var task = new TinyTask(rowsPerMicro: 2);
        using var whole = new TinyTask(rowsPerMicro: TinyTask.Rows);
        using (no_grad())
            foreach (var ((_, p), (_, q)) in task.Model.named_parameters().Zip(whole.Model.named_parameters())) q.copy_(p);

        var split = Trainer.Accumulate(task, step: 3, microBatches: 4);
        var one = Trainer.Accumulate(whole, step: 3, microBatches: 1);
        Assert.Equal(one.Loss, split.Loss, 5);
        Assert.Equal(one.Tokens, split.Tokens);
        double worst = 0;
        foreach (var ((name, p), (_, q)) in task.Model.named_parameters().Zip(whole.Model.named_parameters()))
        {
            using var s = NewDisposeScope();
            Assert.NotNull(p.grad);
            worst = Math.Max(worst, (p.grad! - q.grad!).abs().max().item<float>());
        }
        Assert.True(worst < 1e-6, $"accumulated gradients differ by {worst:E2}");
        Assert.True(Gradients.GlobalNorm(task.Model.parameters()) > 1e-3); // the comparison is not of zeros
    }

    [Fact]
    public void EmaFollowsTheFormulaOnHandMadeTensors()
    {
        TorchRuntime.Initialize();
        using var online = nn.Linear(2, 1, hasBias: true);
        using (no_grad())
        {
            online.weight!.copy_(tensor(new float[] { 1, 2 }).view(1, 2));
            online.bias!.copy_(tensor(new float[] { -1 }));
        }
        using var ema = new Ema(online);
        using (no_grad())
        {
            online.weight!.copy_(tensor(new float[] { 3, 4 }).view(1, 2));
            online.bias!.copy_(tensor(new float[] { 1 }));
        }
        ema.Update(online, 0.9); // θ' = 0.9·θ' + 0.1·θ
        Assert.Equal(new[] { 1.2f, 2.2f }, ema.Shadow["weight"].data<float>().ToArray().Select(v => MathF.Round(v, 5)));
        Assert.Equal(-0.8f, ema.Shadow["bias"].item<float>(), 5);
        ema.Update(online, 0.5);
        Assert.Equal(new[] { 2.1f, 3.1f }, ema.Shadow["weight"].data<float>().ToArray().Select(v => MathF.Round(v, 5)));
        ema.Update(online, 1.0); // momentum 1 freezes
        Assert.Equal(2.1f, ema.Shadow["weight"].data<float>()[0], 5);

        using var target = nn.Linear(2, 1, hasBias: true);
        ema.CopyTo(target);
        Assert.Equal(3.1f, target.weight!.data<float>()[1], 5);

        // As a JEPA target encoder: the target's own parameters are the shadow.
        using var jepa = Ema.IntoTarget(online, target);
        Assert.False(target.weight!.requires_grad);
        Assert.Equal(3f, target.weight!.data<float>()[0], 5);
        using (no_grad()) online.weight!.copy_(tensor(new float[] { 13, 4 }).view(1, 2));
        jepa.Update(online, 0.75);
        Assert.Equal(5.5f, target.weight!.data<float>()[0], 5); // 0.75·3 + 0.25·13

        var sched = new EmaSchedule(0.996, 1.0);
        Assert.Equal(0.996, sched.At(0, 101), 12);
        Assert.Equal(0.998, sched.At(50, 101), 12);
        Assert.Equal(1.0, sched.At(100, 101), 12);
        var cos = new EmaSchedule(0.99, 1.0, Cosine: true);
        Assert.Equal(0.995, cos.At(50, 101), 12);
        Assert.Throws<ArgumentOutOfRangeException>(() => ema.Update(online, 1.5));
    }

    [Fact]
    public void RunWritesParsableMetricsTensorBoardAndCheckpoints()
    {
        using var task = new TinyTask();
        var cfg = Config("metrics");
        var evals = new List<long>();
        var log = new StringWriter();
        var trainer = new Trainer(cfg, new JsonObject { ["task"] = "tiny" }, log)
        {
            Evaluate = step => { evals.Add(step); return new Dictionary<string, double> { ["score"] = step * 0.5 }; },
        };
        var result = trainer.Run(task);
        Assert.Equal(6, result.Steps);
        Assert.Equal(new long[] { 3, 6 }, evals);

        var rows = Jsonl.ReadAll<JsonObject>(trainer.MetricsPath);
        Assert.Equal(new long[] { 2, 3, 4, 6 }, rows.Select(r => (long)r["step"]!));
        foreach (var r in rows)
        {
            foreach (var key in new[] { "loss", "lr", "grad_norm", "tokens_per_s", "tokens" })
                Assert.True(r[key] is not null && double.IsFinite((double)r[key]!), $"{key} missing or not finite in {r.ToJsonString()}");
        }
        Assert.Equal(1.5, (double)rows[1]["eval_score"]!);
        Assert.Null(rows[0]["eval_score"]);
        Assert.True((double)rows[^1]["loss"]! < (double)rows[0]["loss"]!, "loss should fall on this easy task");
        Assert.Equal(LrSchedule.At(1, cfg), (double)rows[0]["lr"]!, 12);

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(cfg.OutDir, "config.json")))!;
        Assert.Equal("tiny", (string)config["run"]!["task"]!);
        Assert.Equal(6, (long)config["trainer"]!["steps"]!);

        var ckpts = Path.Combine(cfg.OutDir, "checkpoints");
        Assert.Equal("step-000006", File.ReadAllText(Path.Combine(ckpts, "latest")).Trim());
        Assert.Equal(new[] { "step-000004", "step-000006" }, Directory.GetDirectories(ckpts).Select(Path.GetFileName).Order().ToArray()!);
        using (var weights = SafetensorsCheckpoint.Open(Path.Combine(ckpts, "step-000006", RunCheckpoints.ModelFile)))
            Assert.Equal(task.Model.named_parameters().Select(p => p.name), weights.Names);
        using (var opt = SafetensorsCheckpoint.Open(Path.Combine(ckpts, "step-000006", RunCheckpoints.OptimizerFile)))
        {
            Assert.True(opt.Contains("exp_avg_sq.model.layers.0.self_attn.q_proj.weight"));
            Assert.Equal(6, opt.Read("step.model.norm.weight").item<long>());
        }

        // TensorBoard: well-formed records (length, masked CRC32C, payload, CRC) whose scalars match metrics.jsonl.
        var events = Directory.GetFiles(Path.Combine(cfg.OutDir, "tb"), "events.out.tfevents.*");
        Assert.Single(events);
        var scalars = TensorBoardReader.Scalars(events[0]);
        var losses = scalars.Where(s => s.Tag == "train/loss").ToList();
        Assert.Equal(new long[] { 2, 3, 4, 6 }, losses.Select(s => s.Step));
        Assert.Equal((float)(double)rows[^1]["loss"]!, losses[^1].Value);
        Assert.Contains(scalars, s => s.Tag == "eval/score" && s.Step == 6 && s.Value == 3f);

        Assert.Contains("step 6/6", log.ToString());
        // A finished run started again does no more work.
        var again = new Trainer(cfg, new JsonObject { ["task"] = "tiny" }, new StringWriter()).Run(task);
        Assert.Equal(6, again.ResumedFrom);
    }

    [Fact]
    public void ResumeSkipsHalfWrittenCheckpointFolders()
    {
        var dir = Path.Combine(_dir, "ckpts");
        void Write(long step) => RunCheckpoints.Save(dir, new CheckpointState { Step = step }, d =>
            File.WriteAllBytes(Path.Combine(d, RunCheckpoints.ModelFile), new byte[100 + step]), keep: 10);
        Write(4);
        Write(8);
        Assert.Equal(8, RunCheckpoints.FindLatest(dir)!.Step);

        // Newer folders that a crash (or anything else) left incomplete must all be passed over.
        var noState = Directory.CreateDirectory(Path.Combine(dir, "step-000012")).FullName;
        File.WriteAllBytes(Path.Combine(noState, RunCheckpoints.ModelFile), new byte[50]);
        var truncated = Path.Combine(dir, "step-000016");
        CopyDir(Path.Combine(dir, "step-000008"), truncated);
        File.WriteAllBytes(Path.Combine(truncated, RunCheckpoints.ModelFile), new byte[10]);
        File.WriteAllText(Path.Combine(truncated, RunCheckpoints.StateFile), File.ReadAllText(Path.Combine(truncated, RunCheckpoints.StateFile)).Replace("\"step\": 8", "\"step\": 16"));
        var missing = Path.Combine(dir, "step-000020");
        CopyDir(Path.Combine(dir, "step-000008"), missing);
        File.Delete(Path.Combine(missing, RunCheckpoints.ModelFile));
        var badJson = Directory.CreateDirectory(Path.Combine(dir, "step-000024")).FullName;
        File.WriteAllText(Path.Combine(badJson, RunCheckpoints.StateFile), "{\"step\": 24, \"files\": {");
        CopyDir(Path.Combine(dir, "step-000008"), Path.Combine(dir, ".tmp-step-000028-abc"));
        File.WriteAllText(Path.Combine(dir, RunCheckpoints.LatestFile), "step-000024\n");

        var latest = RunCheckpoints.FindLatest(dir);
        Assert.NotNull(latest);
        Assert.Equal(8, latest!.Step);
        Assert.EndsWith("step-000008", latest.Path);
        Assert.False(RunCheckpoints.TryVerify(truncated, out _, out var why));
        Assert.Contains("bytes", why);
        Assert.False(RunCheckpoints.TryVerify(noState, out _, out why));
        Assert.Contains(RunCheckpoints.StateFile, why);

        // The next save cleans the temporary leftover and becomes the newest.
        Write(32);
        Assert.False(Directory.Exists(Path.Combine(dir, ".tmp-step-000028-abc")));
        Assert.Equal(32, RunCheckpoints.FindLatest(dir)!.Step);
    }

    [Fact]
    public void TrainerResumesFromTheLastCompleteCheckpointNotABrokenNewerOne()
    {
        using var task = new TinyTask();
        var cfg = Config("broken", steps: 4) with { EvalEvery = 0 };
        new Trainer(cfg, log: new StringWriter()).Run(task);
        var ckpts = Path.Combine(cfg.OutDir, "checkpoints");
        // Pretend the final checkpoint's rename happened but its data is gone.
        File.Delete(Path.Combine(ckpts, "step-000004", RunCheckpoints.OptimizerFile));
        var log = new StringWriter();
        var result = new Trainer(cfg, log: log).Run(task);
        Assert.Equal(2, result.ResumedFrom);
        Assert.Contains("resumed from", log.ToString());
        Assert.True(RunCheckpoints.TryVerify(Path.Combine(ckpts, "step-000004"), out _, out _));
    }

    [Fact]
    public void ResumingWithADifferentConfigIsAnError()
    {
        using var task = new TinyTask();
        var cfg = Config("mismatch", steps: 2) with { EvalEvery = 0 };
        new Trainer(cfg, log: new StringWriter()).Run(task);
        var e = Assert.Throws<InvalidOperationException>(() => new Trainer(cfg with { LearningRate = 0.5 }, log: new StringWriter()).Run(task));
        Assert.Contains("different config", e.Message);
    }

    /// <summary>
    /// A bit flipped in any file of the newest checkpoint (what bit rot or a bad copy does; sizes stay the same) is caught
    /// on the next run, named in one warning, and the run falls back to the older checkpoint and retrains the difference
    /// to the same bytes as the uninterrupted run.
    /// </summary>
    [Theory]
    [InlineData(RunCheckpoints.ModelFile)]
    [InlineData(RunCheckpoints.OptimizerFile)]
    [InlineData(RunCheckpoints.RngFile)]
    [InlineData(RunCheckpoints.StateFile)]
    public void AFlippedBitInACheckpointIsNamedAndTheRunResumesFromAnOlderOne(string file)
    {
        var cfg = Config("straight") with { EvalEvery = 0 };
        using (var task = new TinyTask()) new Trainer(cfg, log: new StringWriter()).Run(task);
        var damaged = cfg with { OutDir = Path.Combine(_dir, "damaged") };
        DamageKit.CopyTree(cfg.OutDir, damaged.OutDir);
        var target = Path.Combine(damaged.OutDir, "checkpoints", "step-000006", file);
        if (file == RunCheckpoints.StateFile) DamageKit.FlipDigitAfter(target, "\"seed\"");
        else DamageKit.FlipBit(target, -3);

        var log = new StringWriter();
        TrainResult result;
        using (var task = new TinyTask()) result = new Trainer(damaged, log: log).Run(task);
        var warnings = log.ToString().Split('\n').Where(l => l.StartsWith("warning:", StringComparison.Ordinal)).ToList();
        Assert.Single(warnings);
        Assert.Contains("step-000006", warnings[0]);
        Assert.Contains(file, warnings[0]);
        Assert.Contains("damaged", warnings[0]);
        Assert.Equal(4, result.ResumedFrom);
        foreach (var f in new[] { RunCheckpoints.ModelFile, RunCheckpoints.OptimizerFile, RunCheckpoints.RngFile })
            Assert.True(File.ReadAllBytes(Path.Combine(cfg.OutDir, "checkpoints", "step-000006", f))
                .SequenceEqual(File.ReadAllBytes(Path.Combine(damaged.OutDir, "checkpoints", "step-000006", f))), $"{f} differs from the uninterrupted run");
    }

    [Fact]
    public void NoCheckpointVerifyingIsAClearErrorAndOldCheckpointsStillLoad()
    {
        var cfg = Config("none", steps: 4) with { EvalEvery = 0 };
        using var task = new TinyTask();
        new Trainer(cfg, log: new StringWriter()).Run(task);
        var ckpts = Path.Combine(cfg.OutDir, "checkpoints");

        // Written before checksums: the state file had sizes only. It still resumes, and says it is unverified.
        var old = Path.Combine(ckpts, "step-000004", RunCheckpoints.StateFile);
        var json = JsonNode.Parse(File.ReadAllText(old))!.AsObject();
        json.Remove("checksums");
        json.Remove("self_checksum");
        File.WriteAllText(old, json.ToJsonString());
        var log = new StringWriter();
        Assert.Equal(4, new Trainer(cfg, log: log).Run(task).ResumedFrom);
        Assert.Contains(FileChecksum.Unverified, log.ToString());

        DamageKit.FlipBit(Path.Combine(ckpts, "step-000002", RunCheckpoints.ModelFile), -3);
        File.WriteAllText(old, File.ReadAllText(old).Replace("\"model.safetensors\":", "\"model.safetensorz\":"));
        var e = Assert.Throws<InvalidDataException>(() => new Trainer(cfg, log: new StringWriter()).Run(task));
        Assert.Contains("none of its 2 checkpoint(s) verifies", e.Message);
        Assert.Contains(RunCheckpoints.ModelFile, e.Message);
    }

    /// <summary>
    /// Run folders get copied between machines and renamed: a half-finished run copied to a new path resumes there
    /// (the output path, also inside the caller's own options, is not part of what defines the run) and ends with
    /// exactly the bytes of an uninterrupted run.
    /// </summary>
    [Fact]
    public void AHalfFinishedRunCopiedToANewPathResumesToTheSameBytes()
    {
        JsonObject RunConfig(string outDir) => new() { ["task"] = "tiny", ["teacher"] = new JsonObject { ["out_dir"] = outDir, ["progress_bar"] = null } };
        var cfg = Config("whole") with { EvalEvery = 0 };
        using (var task = new TinyTask()) new Trainer(cfg, RunConfig(cfg.OutDir), new StringWriter()).Run(task);

        var half = cfg with { OutDir = Path.Combine(_dir, "half") };
        using (var task = new TinyTask())
        using (var cancel = new CancellationTokenSource())
        {
            var stopping = new Trainable(task.Model, task.Loss, afterStep: step => { if (step == 3) cancel.Cancel(); });
            Assert.ThrowsAny<OperationCanceledException>(() => new Trainer(half, RunConfig(half.OutDir), new StringWriter()).Run(stopping, cancel.Token));
        }
        Assert.Equal(4, RunCheckpoints.FindLatest(Path.Combine(half.OutDir, "checkpoints"))!.Step);

        var moved = cfg with { OutDir = Path.Combine(_dir, "elsewhere", "moved") };
        DamageKit.CopyTree(half.OutDir, moved.OutDir);
        Directory.Delete(half.OutDir, true);
        TrainResult result;
        using (var task = new TinyTask()) result = new Trainer(moved, RunConfig(moved.OutDir), new StringWriter()).Run(task);
        Assert.Equal(4, result.ResumedFrom);
        foreach (var f in new[] { RunCheckpoints.ModelFile, RunCheckpoints.OptimizerFile, RunCheckpoints.RngFile })
            Assert.True(File.ReadAllBytes(Path.Combine(cfg.OutDir, "checkpoints", "step-000006", f))
                .SequenceEqual(File.ReadAllBytes(Path.Combine(moved.OutDir, "checkpoints", "step-000006", f))), $"{f} differs from the uninterrupted run");
    }

    [Fact]
    public void NonFiniteLossAndBadConfigAreClearErrors()
    {
        using var task = new TinyTask();
        var nan = new Trainable(task.Model, (step, micro) => new TrainLoss(task.Loss(step, micro).Loss * double.NaN, 1));
        var e = Assert.Throws<InvalidOperationException>(() => new Trainer(Config("nan"), log: new StringWriter()).Run(nan));
        Assert.Contains("step 0", e.Message);
        var bad = Assert.Throws<ArgumentException>(() => new Trainer(new TrainerConfig { AccumulationSteps = 0 }));
        Assert.Contains("AccumulationSteps", bad.Message);
    }

    static void CopyDir(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}

/// <summary>Reads scalar summaries back from a TensorBoard event file, checking each record's framing and CRCs.</summary>
static class TensorBoardReader
{
    public readonly record struct Scalar(string Tag, long Step, float Value);

    public static List<Scalar> Scalars(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var result = new List<Scalar>();
        int at = 0, records = 0;
        while (at < bytes.Length)
        {
            Assert.True(at + 12 <= bytes.Length, $"{path}: truncated record header at {at}");
            ulong len = BitConverter.ToUInt64(bytes, at);
            Assert.Equal(Masked(Crc32C(bytes.AsSpan(at, 8))), BitConverter.ToUInt32(bytes, at + 8));
            var data = bytes.AsSpan(at + 12, (int)len);
            Assert.Equal(Masked(Crc32C(data)), BitConverter.ToUInt32(bytes, at + 12 + (int)len));
            at += 12 + (int)len + 4;
            records++;
            long step = 0;
            var values = new List<(string, float)>();
            foreach (var (field, wire, v, sub) in Fields(data.ToArray()))
            {
                if (field == 2 && wire == 0) step = (long)v;
                if (field == 5 && wire == 2)
                    foreach (var (vf, vw, _, value) in Fields(sub!))
                        if (vf == 1 && vw == 2)
                        {
                            string tag = ""; float x = float.NaN;
                            foreach (var (f, w, raw, s) in Fields(value!))
                            {
                                if (f == 1 && w == 2) tag = System.Text.Encoding.UTF8.GetString(s!);
                                if (f == 2 && w == 5) x = BitConverter.Int32BitsToSingle((int)raw);
                            }
                            values.Add((tag, x));
                        }
            }
            result.AddRange(values.Select(p => new Scalar(p.Item1, step, p.Item2)));
        }
        Assert.True(records > result.Count, "expected a file-version record before the scalars");
        return result;
    }

    static IEnumerable<(int Field, int Wire, ulong Value, byte[]? Bytes)> Fields(byte[] msg)
    {
        int i = 0;
        while (i < msg.Length)
        {
            ulong key = Varint(msg, ref i);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            switch (wire)
            {
                case 0: yield return (field, wire, Varint(msg, ref i), null); break;
                case 1: yield return (field, wire, BitConverter.ToUInt64(msg, i), null); i += 8; break;
                case 5: yield return (field, wire, BitConverter.ToUInt32(msg, i), null); i += 4; break;
                case 2:
                    int n = (int)Varint(msg, ref i);
                    yield return (field, wire, 0, msg.AsSpan(i, n).ToArray());
                    i += n;
                    break;
                default: throw new InvalidDataException($"unexpected protobuf wire type {wire}");
            }
        }
    }

    static ulong Varint(byte[] b, ref int i)
    {
        ulong v = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte x = b[i++];
            v |= (ulong)(x & 0x7f) << shift;
            if (x < 0x80) return v;
        }
    }

    static uint Masked(uint crc) => ((crc >> 15) | (crc << 17)) + 0xa282ead8u;

    static uint Crc32C(ReadOnlySpan<byte> data)
    {
        uint crc = 0xffffffffu;
        foreach (var b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        }
        return ~crc;
    }
}
