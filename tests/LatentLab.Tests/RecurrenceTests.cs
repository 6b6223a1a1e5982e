using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using LatentLab.Evaluation;
using LatentLab.Generation;
using LatentLab.Methods.Recurrence;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using LatentLab.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Tests;

/// <summary>
/// Latent recurrence on tiny random models of every family: p = 1 is greedy decoding bit for bit, frozen parts get
/// no gradient and do not move, shapes in both modes, checkpointing gives the same gradients with less memory,
/// schedules, and a resumed run ends where an uninterrupted one does.
/// </summary>
public sealed class RecurrenceTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-recurrence").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    public static IEnumerable<object[]> Archs() => TinyModels.Architectures.Select(a => new object[] { a });

    static readonly int[] Marker = { 7 };

    /// <summary>Random prompts of two lengths (so left padding is exercised) and random answers of two lengths.</summary>
    static RecurrenceBatch Synthetic(long seed, int b = 3, int t = 6, int a = 3, int vocab = 64)
    {
        var rng = new Random((int)seed);
        int[] Tokens(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(8, vocab)).ToArray();
        var xs = Enumerable.Range(0, b).Select(i => new RecurrenceExample(null!, Tokens(t - i % 2), Marker, Tokens(a - i % 2))).ToList();
        return RecurrenceData.Batch(xs, 0, CPU);
    }

    [Theory]
    [MemberData(nameof(Archs))]
    public void PEqualsOneIsGreedyDecodingBitForBit(string arch)
    {
        using var model = DecoderReferenceTests.RandomTiny(arch, 11);
        using var rec = new LatentRecurrence(model, RecurrenceMode.Append);
        var prompts = new[] { new[] { 1, 9, 17, 33, 2, 40 }, new[] { 5, 12, 3, 44 } };
        const int k = 5;
        using var scope = NewDisposeScope();
        using var gen = new TextGenerator(model).Generate(prompts,
            new GenerationConfig(MaxNewTokens: k, StopTokens: Array.Empty<int>(), OutputLogits: true));
        var batch = RecurrenceData.Batch(prompts.Select(p => new RecurrenceExample(null!, p, Marker, new[] { 3, 4 })).ToList(),
            (int)(model.Config.PadTokenId ?? 0), CPU);
        using var _ = no_grad();
        var trace = rec.Reason(batch.PromptIds, batch.PromptMask, k, p: 1.0);
        Assert.Equal(k + 1, trace.Latents.Count);
        Assert.Equal(k, trace.Logits.Count);
        for (int s = 0; s < k; s++)
        {
            var want = gen.Logits!.narrow(1, s, 1);
            Assert.True(Same(trace.Logits[s], want), $"{arch}: step {s} logits differ from greedy decoding (max |diff| {(trace.Logits[s] - want).abs().max().item<float>():E2})");
            var tokens = trace.Logits[s].argmax(-1).squeeze(1).data<long>().ToArray();
            for (int i = 0; i < prompts.Length; i++) Assert.Equal(gen.Tokens[i][s], (int)tokens[i]);
        }
    }

    [Theory]
    [MemberData(nameof(Archs))]
    public void MarkerDecodeAtPEqualsOneReadsTheGreedyThoughtAsTheModelWould(string arch)
    {
        // With the gate at its initial 0 and p = 1, the decoder sees question ++ K greedy thought tokens (the cache) ++
        // marker ++ answer: the model's own forward over that sequence, so a ceiling by construction at K = the trace length.
        using var model = DecoderReferenceTests.RandomTiny(arch, 13);
        using var rec = new LatentRecurrence(model, RecurrenceMode.Append, markerDecode: true);
        Assert.True(rec.MarkerDecode);
        var prompts = new[] { new[] { 1, 9, 17, 33, 2, 40 }, new[] { 5, 12, 3, 44, 8, 21 } };
        int[] answer = [3, 4, 9];
        const int k = 4;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var batch = RecurrenceData.Batch(prompts.Select(p => new RecurrenceExample(null!, p, Marker, answer)).ToList(),
            (int)(model.Config.PadTokenId ?? 0), CPU);
        var trace = rec.Reason(batch.PromptIds, batch.PromptMask, k, p: 1.0);
        var logits = rec.DecodeLogits(trace, batch);
        long n = Marker.Length + batch.AnswerIn.shape[1];
        Assert.Equal(n, logits.shape[1]); // no bridged position
        using var gen = new TextGenerator(model).Generate(prompts, new GenerationConfig(MaxNewTokens: k, StopTokens: Array.Empty<int>()));
        for (int i = 0; i < prompts.Length; i++)
        {
            long[] seq = [.. prompts[i].Select(x => (long)x), .. gen.Tokens[i].Select(x => (long)x), .. Marker.Select(x => (long)x), .. answer[..^1].Select(x => (long)x)];
            var full = model.Forward(tensor(seq).view(1, -1)).Logits!;
            var want = full.narrow(1, seq.Length - n, n);
            var got = logits.narrow(0, i, 1);
            Assert.True((got - want).abs().max().item<float>() < 1e-4, $"{arch}: marker decode differs from the model's forward by {(got - want).abs().max().item<float>():E2}");
        }
        // The gate is what lets the bridged latent in: it is trainable.
        Assert.Contains(rec.named_parameters(), p => p.name == "gate" && p.parameter.requires_grad);
    }

    [Theory]
    [MemberData(nameof(Archs))]
    public void ALatentEntersWithTheNormOfATokenEmbedding(string arch)
    {
        using var model = DecoderReferenceTests.RandomTiny(arch, 17);
        using var rec = new LatentRecurrence(model, RecurrenceMode.Append);
        using var raw = new LatentRecurrence(DecoderReferenceTests.RandomTiny(arch, 17), RecurrenceMode.Append) { LatentScale = LatentScale.Raw };
        using var scope = NewDisposeScope();
        var h = randn(2, 3, model.Config.HiddenSize) * 7;
        double embedNorm = model.EmbeddingWeight.norm(1).mean().item<float>();
        var norms = rec.LatentInput(h).norm(-1).data<float>().ToArray();
        Assert.All(norms, n => Assert.Equal(embedNorm, n, 3));
        // Raw: the seed's formula, h / √d where the model scales its embeddings by √d (Gemma), h otherwise.
        double s = model.Config.ScaleEmbeddings ? Math.Sqrt(model.Config.HiddenSize) : 1;
        Assert.True(Same(raw.LatentInput(h), h * (1.0 / s)), $"{arch}: the raw latent input is not h / {s}");
    }

    [Theory]
    [MemberData(nameof(Archs))]
    public void ShapesInBothModesAndThePauseControl(string arch)
    {
        var c = TinyModels.Config(arch);
        foreach (var (mode, pause) in new[] { (RecurrenceMode.Append, 0), (RecurrenceMode.Depth, 0), (RecurrenceMode.Append, 2) })
        {
            using var model = DecoderReferenceTests.RandomTiny(arch, 3);
            using var rec = new LatentRecurrence(model, mode, pauseTokens: pause) { Checkpointing = mode == RecurrenceMode.Depth };
            using var scope = NewDisposeScope();
            var batch = Synthetic(1);
            long b = batch.Batch, t = batch.PromptIds.shape[1];
            var trace = rec.Reason(batch.PromptIds, batch.PromptMask, pause > 0 ? 0 : 3, 0.5);
            Assert.Equal(pause > 0 ? 2 : 4, trace.Latents.Count);
            foreach (var h in trace.Latents)
                Assert.Equal(new[] { b, mode == RecurrenceMode.Depth ? t : 1, (long)c.HiddenSize }, h.shape);
            var logits = rec.DecodeLogits(trace, batch);
            long bridged = mode == RecurrenceMode.Depth ? t : 1;
            Assert.Equal(new[] { b, bridged + Marker.Length + batch.AnswerIn.shape[1], (long)c.VocabSize }, logits.shape);
            var loss = rec.AnswerLoss(trace, batch);
            Assert.True(double.IsFinite(loss.item<float>()), $"{arch} {mode}: loss {loss.item<float>()}");
            var answers = rec.Answer(batch.PromptIds, batch.PromptMask, Marker, pause > 0 ? 0 : 3, 0.0, 4, new HashSet<int> { 1 });
            Assert.Equal((int)b, answers.Length);
            Assert.All(answers, a => Assert.True(a.Length <= 4));
        }
    }

    /// <summary>Same shape and bit-for-bit the same values.</summary>
    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    static Dictionary<string, Tensor> Snapshot(nn.Module m) =>
        m.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());

    [Theory]
    [InlineData("Gemma2ForCausalLM", 0)]
    [InlineData("Qwen3ForCausalLM", 0)]
    [InlineData("LlamaForCausalLM", 4)]
    public void FrozenPartsGetNoGradientAndDoNotMove(string arch, int loraRank)
    {
        using var model = DecoderReferenceTests.RandomTiny(arch, 5);
        using var rec = new LatentRecurrence(model, RecurrenceMode.Append, loraRank);
        bool Trainable(string name) => loraRank > 0
            ? name.Contains(".lora.") || name.StartsWith("bridge.")
            : name.StartsWith("bridge.") || (name.StartsWith("reasoner.") && !name.Contains("embed_tokens") && !name.Contains("lm_head"));
        var names = rec.named_parameters().Select(p => p.name).ToList();
        Assert.Contains(names, n => !Trainable(n));
        foreach (var (name, p) in rec.named_parameters()) Assert.Equal(Trainable(name), p.requires_grad);

        var before = Snapshot(rec);
        var trainable = new RecurrenceTrainable(rec, new RecurrenceOptions { Model = "-", K = 2, Steps = 3 }, (step, _) => Synthetic(step));
        var trainer = new Trainer(new TrainerConfig { Steps = 3, WarmupSteps = 0, LearningRate = 1e-2, LogEvery = 1, OutDir = Path.Combine(_dir, arch + loraRank), ProgressBar = false }, log: TextWriter.Null);
        // Gradients of one backward pass, before the trainer's steps.
        using (var scope = NewDisposeScope())
        {
            var r = trainable.Loss(0, 0);
            r.Loss.backward();
            foreach (var (name, p) in rec.named_parameters())
            {
                if (Trainable(name)) continue;
                Assert.True(p.grad is null, $"{name} is frozen but got a gradient");
            }
            Assert.Contains(rec.named_parameters(), p => Trainable(p.name) && p.parameter.grad is { } g && g.abs().sum().item<float>() > 0);
            trainable.AfterStep(0);
            foreach (var p in rec.parameters()) p.grad?.zero_();
        }
        trainer.Run(trainable);
        foreach (var (name, p) in rec.named_parameters())
        {
            bool same = Same(p.detach(), before[name]);
            if (Trainable(name)) { if (name.Contains("proj.weight") || name.Contains("lora_B")) Assert.False(same, $"{name} did not move"); }
            else Assert.True(same, $"{name} is frozen but changed");
        }
        if (loraRank > 0)
        {
            // Adapters are off while decoding: the decoder is the base model, whatever the adapters learned.
            using var plain = DecoderReferenceTests.RandomTiny(arch, 5);
            using var _ = no_grad();
            using var ids = tensor(new long[] { 1, 9, 17, 33 }).view(1, 4);
            foreach (var (_, proj) in rec.Reasoner.Projections()) proj.LoraEnabled = false;
            using var a = rec.Decoder.Forward(ids);
            using var b = plain.Forward(ids);
            Assert.True(Same(a.Logits!, b.Logits!));
        }
    }

    /// <summary>All trainable gradients and the latents' gradients after one backward pass.</summary>
    static (Dictionary<string, Tensor> Params, double[] Latents) Gradients(string arch, RecurrenceMode mode, bool checkpointing, int loraRank = 0)
    {
        using var model = DecoderReferenceTests.RandomTiny(arch, 21);
        using var rec = new LatentRecurrence(model, mode, loraRank) { Checkpointing = checkpointing };
        var t = new RecurrenceTrainable(rec, new RecurrenceOptions { Model = "-", K = 3, Steps = 10, KCurriculum = new KSchedule { Curriculum = false }, P = new PSchedule { Start = 0.5, End = 0.5 } },
            (step, _) => Synthetic(step + 40));
        using (var scope = NewDisposeScope())
        {
            t.Loss(0, 0).Loss.backward();
            t.AfterStep(0);
        }
        var norms = t.StepMetrics(0).Where(kv => kv.Key.StartsWith("grad_latent_")).Select(kv => (double)kv.Value).ToArray();
        var grads = rec.named_parameters().Where(p => p.parameter.grad is not null).ToDictionary(p => p.name, p => p.parameter.grad!.detach().clone());
        return (grads, norms);
    }

    [Theory]
    [InlineData("Qwen3ForCausalLM", RecurrenceMode.Append, 0)]
    [InlineData("Gemma2ForCausalLM", RecurrenceMode.Append, 0)]
    [InlineData("Gemma3ForCausalLM", RecurrenceMode.Depth, 0)]
    [InlineData("LlamaForCausalLM", RecurrenceMode.Append, 4)]
    public void CheckpointingGivesTheSameGradients(string arch, RecurrenceMode mode, int loraRank)
    {
        var (plain, plainLatents) = Gradients(arch, mode, checkpointing: false, loraRank);
        var (ckpt, ckptLatents) = Gradients(arch, mode, checkpointing: true, loraRank);
        Assert.Equal(plain.Keys.OrderBy(k => k), ckpt.Keys.OrderBy(k => k));
        Assert.True(plain.Count > 2);
        foreach (var (name, g) in plain)
        {
            double scale = Math.Max(1e-12, g.abs().max().item<float>());
            double diff = (g - ckpt[name]).abs().max().item<float>();
            // Same arithmetic; only the order in which parameter gradients are summed differs.
            Assert.True(diff <= 1e-5 * scale, $"{name}: max |diff| {diff:E2} of max |g| {scale:E2}");
        }
        Assert.Equal(4, plainLatents.Length);
        Assert.All(plainLatents, n => Assert.True(n > 0));
        for (int i = 0; i < plainLatents.Length; i++) Assert.Equal(plainLatents[i], ckptLatents[i], 1e-5 * plainLatents[i]);
    }

    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int MallocTrim(UIntPtr pad);

    /// <summary>Growth of the process's peak resident memory while <paramref name="run"/> runs (Linux: VmHWM, reset through clear_refs).</summary>
    static long PeakGrowth(Action run)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        MallocTrim(UIntPtr.Zero);
        static long Kb(string key) => long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith(key)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        File.WriteAllText("/proc/self/clear_refs", "5");
        long before = Kb("VmRSS:");
        run();
        return Kb("VmHWM:") - before;
    }

    [Fact]
    public void CheckpointingLowersPeakMemory()
    {
        if (!OperatingSystem.IsLinux()) return;
        TorchRuntime.Initialize();
        TorchRuntime.Seed(0);
        var cfg = TinyModels.Config("LlamaForCausalLM") with { HiddenSize = 256, IntermediateSize = 1024, NumHeads = 4, NumKvHeads = 4, HeadDim = 64 };
        using var model = new DecoderLM(cfg);
        using var rec = new LatentRecurrence(model, RecurrenceMode.Depth);
        var batch = Synthetic(3, b: 32, t: 32);
        void Step(bool checkpointing)
        {
            rec.Checkpointing = checkpointing;
            using var scope = NewDisposeScope();
            rec.AnswerLoss(rec.Reason(batch.PromptIds, batch.PromptMask, 8, 0.0), batch).backward();
            foreach (var p in rec.parameters()) p.grad?.zero_();
        }
        Step(true); // warm-up: libraries and allocator pools
        long with = PeakGrowth(() => Step(true));
        long without = PeakGrowth(() => Step(false));
        Assert.True(with < 0.5 * without, $"peak growth with checkpointing {with / 1024} MB, without {without / 1024} MB");
    }

    [Fact]
    public void Schedules()
    {
        var lin = new PSchedule { AnnealFraction = 0.5 };
        Assert.Equal(0.9, lin.At(0, 100), 12);
        Assert.Equal(0.45, lin.At(25, 100), 12);
        Assert.Equal(0.0, lin.At(50, 100), 12);
        Assert.Equal(0.0, lin.At(99, 100), 12);
        var cos = new PSchedule { Kind = PAnnealing.Cosine, AnnealFraction = 1 };
        Assert.Equal(0.45, cos.At(50, 100), 12);
        Assert.True(cos.At(10, 100) > lin.At(5, 100) - 1e-12 && cos.At(10, 100) > 0.85);
        Assert.Equal(PAnnealing.Gated, PSchedule.Parse("gated:0.5").Kind);
        Assert.Equal(0.5, PSchedule.Parse("gated:0.5").GateLoss);
        Assert.Equal(0.7, PSchedule.Parse("cosine,0.7,0.1").Start);
        var k = new KSchedule { Start = 2 };
        Assert.Equal(2, k.At(8, 0));
        Assert.Equal(5, k.At(8, 0.5));
        Assert.Equal(8, k.At(8, 1));
        Assert.Equal(1, k.At(1, 0));
        Assert.Equal(8, KSchedule.Parse("fixed").At(8, 0));
    }

    [Fact]
    public void GatedAnnealingDropsPOnlyUnderTheThreshold()
    {
        using var model = DecoderReferenceTests.RandomTiny("Qwen3ForCausalLM", 2);
        using var rec = new LatentRecurrence(model, RecurrenceMode.Append);
        foreach (var (gate, drops) in new[] { (1e9, true), (1e-9, false) })
        {
            var t = new RecurrenceTrainable(rec, new RecurrenceOptions { Model = "-", K = 2, Steps = 10, P = new PSchedule { Kind = PAnnealing.Gated, GateLoss = gate } }, (s, _) => Synthetic(s));
            using var scope = NewDisposeScope();
            t.Loss(0, 0).Loss.backward();
            t.AfterStep(0);
            Assert.Equal(drops, t.PAt(1) < 0.9);
        }
    }

    [Fact]
    public void TrackingAnnealingStepsPBackUpAfterALossAboveTheGate()
    {
        using var model = DecoderReferenceTests.RandomTiny("Qwen3ForCausalLM", 2);
        using var rec = new LatentRecurrence(model, RecurrenceMode.Append);
        Assert.Equal(PAnnealing.Tracking, PSchedule.Parse("track:0.2,1,0").Kind);
        var o = new RecurrenceOptions { Model = "-", K = 2, Steps = 10, P = new PSchedule { Kind = PAnnealing.Tracking, GateLoss = 1e9, Start = 0.9, End = 0, AnnealFraction = 1 } };
        var t = new RecurrenceTrainable(rec, o, (s, _) => Synthetic(s));
        using var scope = NewDisposeScope();
        for (int step = 0; step < 3; step++) { t.Loss(step, 0).Loss.backward(); t.AfterStep(step); }
        Assert.Equal(0.9 - 3 * 0.09, t.PAt(3), 9); // three updates under the gate: three steps down
        // The same trainable with the gate shut (its p carried over): one update above it raises p by one step.
        var shut = new RecurrenceTrainable(rec, o with { P = o.P with { GateLoss = 1e-9 } }, (s, _) => Synthetic(s));
        shut.ExtraState().Single().Tensor.fill_(0.5);
        shut.Loss(3, 0).Loss.backward();
        shut.AfterStep(3);
        Assert.Equal(0.59, shut.PAt(4), 9);
        // Never above its start.
        shut.ExtraState().Single().Tensor.fill_(0.88);
        shut.Loss(4, 0).Loss.backward();
        shut.AfterStep(4);
        Assert.Equal(0.9, shut.PAt(5), 9);
    }

    [Fact]
    public void TheDeadlineBringsPToItsEndWhenTheGateNeverOpens()
    {
        using var model = DecoderReferenceTests.RandomTiny("Qwen3ForCausalLM", 2);
        using var rec = new LatentRecurrence(model, RecurrenceMode.Append);
        var o = new RecurrenceOptions { Model = "-", K = 2, Steps = 10, P = new PSchedule { Kind = PAnnealing.Gated, GateLoss = 1e-9, Start = 1, End = 0, Deadline = 0.5 } };
        var t = new RecurrenceTrainable(rec, o, (s, _) => Synthetic(s));
        using var scope = NewDisposeScope();
        var ps = new List<double>();
        for (int step = 0; step < 7; step++) { t.Loss(step, 0).Loss.backward(); t.AfterStep(step); ps.Add(t.PAt(step + 1)); }
        Assert.Equal(new[] { 0.8, 0.6, 0.4, 0.2, 0, 0, 0 }, ps.Select(p => Math.Round(p, 9)));
        Assert.Equal(1.0, new PSchedule().DeadlineAt(3, 10)); // no deadline: no bound
        Assert.Throws<ArgumentException>(() => new PSchedule { Deadline = 1.5 }.Validate());
    }

    [Fact]
    public void ResumedRunEndsBitExactlyWhereAnUninterruptedOneDoes()
    {
        var o = new RecurrenceOptions { Model = "-", K = 3, Steps = 6, P = new PSchedule { Kind = PAnnealing.Gated, GateLoss = 1e9 }, KCurriculum = new KSchedule { Start = 1 } };
        TrainerConfig Cfg(string dir) => new() { Steps = 6, WarmupSteps = 1, LearningRate = 3e-3, LogEvery = 1, CheckpointEvery = 3, Seed = 4, OutDir = dir, ProgressBar = false };
        (Dictionary<string, Tensor>, List<string>) Run(string dir, long? cancelAt)
        {
            using var cts = new CancellationTokenSource();
            using var model = DecoderReferenceTests.RandomTiny("Gemma3ForCausalLM", 9);
            using var rec = new LatentRecurrence(model, RecurrenceMode.Append) { Checkpointing = true };
            var t = new RecurrenceTrainable(rec, o, (step, _) =>
            {
                if (step == cancelAt) cts.Cancel();
                return Synthetic(step);
            });
            try { new Trainer(Cfg(dir), log: TextWriter.Null).Run(t, cts.Token); }
            catch (OperationCanceledException) { return (new(), new()); }
            var rows = File.ReadLines(Path.Combine(dir, "metrics.jsonl")).Select(l =>
            {
                var j = JsonNode.Parse(l)!.AsObject();
                foreach (var key in new[] { "tokens_per_s", "elapsed_s" }) j.Remove(key);
                return j.ToJsonString();
            }).ToList();
            return (Snapshot(rec), rows);
        }
        var (straight, straightRows) = Run(Path.Combine(_dir, "straight"), null);
        var killed = Path.Combine(_dir, "killed");
        var (none, _) = Run(killed, 4);
        Assert.Empty(none);
        var (resumed, resumedRows) = Run(killed, null);
        Assert.Equal(straightRows, resumedRows);
        Assert.Contains("\"p\"", straightRows[^1]);
        Assert.Contains("\"grad_latent_3\"", straightRows[^1]);
        foreach (var (name, w) in straight) Assert.True(Same(w, resumed[name]), $"{name} differs after resume");
    }

    /// <summary>The whole path on a tiny char model saved as a Hugging Face folder: train, grade, result.json.</summary>
    [Fact]
    public void TrainsAndGradesFromAModelFolder()
    {
        var family = TaskRegistry.Get("addition");
        var fmt = TeacherFormat.Create(family);
        TorchRuntime.Initialize();
        TorchRuntime.Seed(1);
        using (var m = new DecoderLM(TeacherModel.DefaultConfig(fmt.Tokenizer, 32, 2, 2)))
        {
            Checkpoints.Save(m, Path.Combine(_dir, "model"));
            ((Text.CharTokenizer)fmt.Tokenizer).Save(Path.Combine(_dir, "model"));
        }
        var o = new RecurrenceOptions
        {
            Model = Path.Combine(_dir, "model"), Difficulty = 2, K = 2, Steps = 4, BatchSize = 4, EvalPoints = 2, EvalProblems = 4,
            TestProblems = 6, Compute = "f32", OutDir = Path.Combine(_dir, "run"), ProgressBar = false,
        };
        var r = RecurrenceTraining.Train(o, TextWriter.Null);
        Assert.Equal(6, r.Accuracy.Trials);
        Assert.Equal(2, r.Curve.Count);
        Assert.True(r.FlopsPerAnswer > 0);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(o.OutDir, "result.json")))!;
        Assert.Equal(2, json["k"]!.GetValue<int>());
        var last = File.ReadLines(Path.Combine(o.OutDir, "train", "metrics.jsonl")).Last();
        Assert.Contains("\"k\":2", last);
        Assert.Contains("\"p\":0", last);
    }

    /// <summary>A gated schedule that never opens leaves p at its start: the arm is graded there too, and says so.</summary>
    [Fact]
    public void AGatedArmThatStopsShortIsGradedWhereTrainingLeftIt()
    {
        var model = TinyCharModel(Path.Combine(_dir, "model"));
        var o = new RecurrenceOptions
        {
            Model = model, Difficulty = 2, K = 2, Steps = 3, BatchSize = 4, EvalPoints = 0, TestProblems = 5, Compute = "f32",
            MarkerDecode = true, KCurriculum = new KSchedule { Curriculum = false },
            P = new PSchedule { Kind = PAnnealing.Gated, GateLoss = 1e-9, Start = 0.8, End = 0 },
            OutDir = Path.Combine(_dir, "gated"), ProgressBar = false,
        };
        var r = RecurrenceTraining.Train(o, TextWriter.Null);
        Assert.Equal(0.8, r.PReached!.Value, 12);
        Assert.Equal(5, r.AtPReached!.Value.Trials);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(o.OutDir, "result.json")))!;
        Assert.Equal(0.8, json["p_reached"]!.GetValue<double>(), 12);
        Assert.Equal(5, json["at_p_reached"]!["total"]!.GetValue<int>());
        Assert.Contains("training stopped at p = 0.800", RecurrenceReport.ToStudy([r]).Arms[0].Notes);
    }

    /// <summary>'trace' in the study's K lists is the teacher's thought length: 17 tokens for 2-digit addition.</summary>
    [Fact]
    public void TheStudyResolvesTraceKToTheThoughtLength()
    {
        var model = TinyCharModel(Path.Combine(_dir, "model"));
        var o = new RecurrenceStudyOptions
        {
            Model = model, Difficulty = 2, Ks = [0, 4, RecurrenceStudyOptions.TraceK], PauseK = RecurrenceStudyOptions.TraceK, DepthK = 2,
            OutDir = Path.Combine(_dir, "study"),
        };
        var r = RecurrenceStudy.Resolve(o, TextWriter.Null);
        Assert.Equal(new[] { 0, 4, 17 }, r.Ks);
        Assert.Equal(17, r.PauseK);
        Assert.Equal(2, r.DepthK);
        var fmt = TraceFormat.ForModel(model, TaskRegistry.Get("addition"));
        var p = TaskSplits.Generate(TaskRegistry.Get("addition"), Split.Train, 1, 2, 3)[0];
        Assert.Equal(fmt.Thinking(p).Length, RecurrenceData.ThoughtLength(fmt, [p])); // one char token per character
        Assert.Throws<ArgumentException>(() => RecurrenceStudy.Resolve(o with { Ks = [-3] }, TextWriter.Null));
        // A depth arm cannot decode from the marker; it keeps the bridge and its own schedule.
        var depth = r.Arm(2, RecurrenceMode.Depth, pause: false);
        Assert.False(depth.MarkerDecode);
        Assert.Equal(r.DepthP, depth.P);
        Assert.True(r.Arm(17, RecurrenceMode.Append, pause: false).MarkerDecode);
    }

    /// <summary>A tiny random char model for 2-digit addition, saved as a Hugging Face folder.</summary>
    static string TinyCharModel(string dir)
    {
        var fmt = TeacherFormat.Create(TaskRegistry.Get("addition"));
        TorchRuntime.Initialize();
        TorchRuntime.Seed(1);
        using var m = new DecoderLM(TeacherModel.DefaultConfig(fmt.Tokenizer, 32, 2, 2));
        Checkpoints.Save(m, dir);
        ((Text.CharTokenizer)fmt.Tokenizer).Save(dir);
        return dir;
    }

    /// <summary>
    /// The report goes through the shared Evaluation layer: the teacher's trace is the ceiling, its direct answer the
    /// floor, K = 0 and pause the references; results.json carries the issue's per-arm fields; every plot is written.
    /// </summary>
    [Fact]
    public void Report_marks_ceiling_and_floor_and_writes_every_artifact()
    {
        var runDir = Path.Combine(_dir, "arm-k4");
        Directory.CreateDirectory(Path.Combine(runDir, "train"));
        File.WriteAllLines(Path.Combine(runDir, "train", "metrics.jsonl"), Enumerable.Range(0, 6).Select(i =>
            $"{{\"step\":{i},\"p\":{0.9 - 0.15 * i:F2},\"loss\":{2.0 - 0.1 * i:F2},\"grad_latent_0\":0.01,\"grad_latent_4\":0.1}}"));
        var curve = new[] { new CurvePoint(10, 0.5, 4, 1.2, Proportion.Wilson(5, 20)) };
        RecurrenceResult Arm(string name, string mode, int k, bool pause, int correct, string? dir) =>
            new(name, mode, k, pause, Proportion.Wilson(correct, 50), 1e6 * (k + 1), dir is null ? 0 : 3, dir is null ? double.NaN : 1.1,
                dir is null ? Array.Empty<CurvePoint>() : curve, dir);
        var arms = new[]
        {
            Arm("thinking", "thinking", 0, false, 49, null), Arm("direct", "direct", 0, false, 3, null),
            Arm("k0", "append", 0, false, 4, runDir), Arm("k4", "append", 4, false, 30, runDir), Arm("pause4", "append", 4, true, 5, runDir),
        };
        var o = new RecurrenceStudyOptions { Model = "m", OutDir = Path.Combine(_dir, "study") };
        Directory.CreateDirectory(o.OutDir);
        RecurrenceReport.Write(o, arms, 12);

        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(o.OutDir, "results.json")))!;
        var rows = json["arms"]!.AsArray().Select(n => n!.AsObject()).ToDictionary(n => n["name"]!.GetValue<string>());
        Assert.Equal("ceiling", rows["thinking"]["role"]!.GetValue<string>());
        Assert.Equal("floor", rows["direct"]["role"]!.GetValue<string>());
        Assert.Equal("reference", rows["k0"]["role"]!.GetValue<string>());
        Assert.Equal("reference", rows["pause4"]["role"]!.GetValue<string>());
        Assert.Equal("method", rows["k4"]["role"]!.GetValue<string>());
        Assert.Equal(4, rows["k4"]["k"]!.GetValue<int>());
        Assert.Equal(30, rows["k4"]["correct"]!.GetValue<int>());
        Assert.Equal(50, rows["k4"]["total"]!.GetValue<int>());
        Assert.Equal(5e6, rows["k4"]["flops"]!.GetValue<double>());
        var report = File.ReadAllText(Path.Combine(o.OutDir, "report.md"));
        Assert.Contains("| thinking | ceiling |", report);
        Assert.Contains("| direct | floor |", report);
        Assert.Contains("**met**", report); // k4 beats k0 by 52 points with the intervals apart
        foreach (var png in new[] { RecurrenceReport.AccuracyVsK, RecurrenceReport.AccuracyVsP, RecurrenceReport.LossVsP, RecurrenceReport.GradNorms })
            Assert.True(new FileInfo(Path.Combine(o.OutDir, png)).Length > 1000, png);
    }
}
