using LatentLab.Evaluation;
using LatentLab.Generation;
using LatentLab.Methods.JepaReasoner;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Tensors;
using LatentLab.Text;
using LatentLab.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Tests;

/// <summary>The JEPA-Reasoner's pieces: shapes and norms, the SST loss and EMA arithmetic, collapse diagnostics, NNLS, talkers, containment.</summary>
public sealed class JepaReasonerTests
{
    static readonly CharTokenizer Tok = CharTokenizer.Create("0123456789lr(),;<>:=");

    static Reasoner TinyReasoner(bool l2 = true, long seed = 1)
    {
        TorchRuntime.Initialize();
        TorchRuntime.Seed(seed);
        var model = new DecoderLM(Reasoner.ModelConfig(Tok, 32, 2, 4, 256));
        return new Reasoner(model, new ReasonerSettings { L2 = l2, InputScale = Reasoner.MeanEmbeddingNorm(model), LatentSteps = 5 });
    }

    /// <summary>Bit-identical: same shape and every element equal.</summary>
    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    static (Tensor Ids, Tensor Mask) Prompts()
    {
        // Two prompts of different lengths, left-padded.
        var a = Tok.Encode("12(3,4);1>4=", addSpecialTokens: true);
        var b = Tok.Encode("7(8,9);7>9=", addSpecialTokens: true);
        var batch = ReasonerBatch.Of([new ReasonerExample(a, [2], ""), new ReasonerExample(b, [2], "")], 0);
        batch.Continuation.Dispose();
        batch.ContinuationMask.Dispose();
        return (batch.PromptIds, batch.PromptMask);
    }

    [Fact]
    public void ReasonerUsesQwen3LayoutWithQkNormAndTiedEmbeddings()
    {
        var c = Reasoner.ModelConfig(Tok, 32, 2, 4, 256);
        Assert.True(c.QkNorm);
        Assert.True(c.TieEmbeddings);
        Assert.Equal("Qwen3ForCausalLM", c.Architecture);
        TorchRuntime.Initialize();
        using var untied = new DecoderLM(c with { TieEmbeddings = false });
        Assert.Throws<ArgumentException>(() => new Reasoner(untied, new ReasonerSettings()));
    }

    [Fact]
    public void LatentChainHasTheRightShapeAndUnitNormWhenL2IsOn()
    {
        using var r = TinyReasoner(l2: true);
        var (ids, mask) = Prompts();
        using var _ = no_grad();
        using var chain = r.Reason(ids, mask, 6);
        Assert.Equal(new long[] { 2, 6, 32 }, chain.shape);
        using var norms = chain.norm(-1);
        Assert.True(norms.sub(1).abs().max().item<float>() < 1e-5, "every latent lies on the unit sphere");

        r.Settings = r.Settings with { L2 = false };
        using var raw = r.Reason(ids, mask, 6);
        using var rawNorms = raw.norm(-1);
        Assert.True(rawNorms.sub(1).abs().max().item<float>() > 0.1, "with L2 off the latents are the final-norm outputs, not unit vectors");
    }

    [Fact]
    public void ParallelPredictionFedTheChainReproducesTheAutoregressiveChain()
    {
        // The KV-cached loop (inference) and the parallel pass (SST training) must compute the same function.
        using var r = TinyReasoner();
        var (ids, mask) = Prompts();
        using var _ = no_grad();
        using var chain = r.Reason(ids, mask, 5);
        using var parallel = r.PredictLatents(ids, mask, chain.narrow(1, 0, 4));
        Assert.Equal(new long[] { 2, 5, 32 }, parallel.shape);
        Assert.True(parallel.sub(chain).abs().max().item<float>() < 1e-4);
    }

    [Fact]
    public void ScaledCosineLossOnHandMadeVectors()
    {
        TorchRuntime.Initialize();
        using var pred = tensor(new float[] { 1, 0, 0, 1, 2, 0 }).view(1, 3, 2);   // (1,0), (0,1), (2,0)
        using var target = tensor(new float[] { 1, 0, 1, 0, -1, 0 }).view(1, 3, 2); // (1,0), (1,0), (-1,0)
        // cos = 1, 0, −1  →  k(1 − cos) = 0, k, 2k.
        using var all = ones(1, 3);
        Assert.Equal(4 * (0 + 1 + 2) / 3.0, SstMath.ScaledCosineLoss(pred, target, all, 4).item<float>(), 5);
        using var firstTwo = tensor(new float[] { 1, 1, 0 }).view(1, 3);
        Assert.Equal(4 * (0 + 1) / 2.0, SstMath.ScaledCosineLoss(pred, target, firstTwo, 4).item<float>(), 5);
        Assert.Equal(1.0, SstMath.ScaledCosineLoss(pred, target, firstTwo, 2).item<float>(), 5);
    }

    [Fact]
    public void EmaTargetMovesByOneMinusMomentumTowardsTheOnlineEncoder()
    {
        using var online = TinyReasoner(seed: 1);
        using var target = TinyReasoner(seed: 2);
        using var ema = Ema.IntoTarget(online.Model, target.Model);
        var name = "model.layers.0.self_attn.q_proj.weight";
        Tensor P(Reasoner r) => r.Model.named_parameters().First(p => p.name == name).parameter;
        Assert.True(Same(P(online), P(target)), "the target starts as a copy of the online encoder");
        Assert.False(P(target).requires_grad);

        using (no_grad()) P(online).add_(1.0);
        using var before = P(target).clone();
        using var onlineNow = P(online).clone();
        ema.Update(online.Model, 0.98);
        using var expected = before * 0.98 + onlineNow * 0.02;
        Assert.True(P(target).sub(expected).abs().max().item<float>() < 1e-6);
    }

    [Fact]
    public void EffectiveRankAndSpreadSeeCollapse()
    {
        TorchRuntime.Initialize();
        TorchRuntime.Seed(3);
        using var iso = randn(2000, 8);
        double full = LatentMetrics.EffectiveRank(iso);
        Assert.InRange(full, 7.5, 8.0);
        using var dir = randn(1, 8);
        using var coef = randn(2000, 1);
        using var line = coef * dir;
        Assert.InRange(LatentMetrics.EffectiveRank(line), 0.99, 1.01);
        using var same = ones(100, 8);
        Assert.Equal(0, LatentMetrics.MeanDimensionStd(same), 9);
        Assert.InRange(LatentMetrics.MeanDimensionStd(iso), 0.9, 1.1);
    }

    [Fact]
    public void NnlsRecoversANonNegativeMixtureAndClipsNegativeParts()
    {
        var basis = new List<float[]> { new float[] { 1, 0, 0 }, new float[] { 0, 1, 0 }, new float[] { 0, 0, 1 }, new float[] { 0.6f, 0.8f, 0 } };
        var w = LatentAnalysis.Nnls(basis, new float[] { 0.7f, 0, 0.3f });
        Assert.Equal(0.7, w[0] + 0.6 * w[3], 5);
        Assert.Equal(0.3, w[2], 5);
        Assert.All(w, x => Assert.True(x >= 0));
        // A target with a negative component: the best non-negative fit puts no weight on e2.
        var v = LatentAnalysis.Nnls(basis.Take(3).ToList(), new float[] { 0.5f, -0.5f, 0 });
        Assert.Equal(0.5, v[0], 6);
        Assert.Equal(0, v[1], 6);
    }

    static TalkerConfig TalkerCfg(TalkerKind kind) =>
        new(kind, 16, TalkerConfig.DecoderConfig(Tok.VocabSize, 32, 1, 4, 128, Tok.BosId, Tok.EosId, Tok.PadId), 1);

    [Theory]
    [InlineData(TalkerKind.Mono)]
    [InlineData(TalkerKind.Dual)]
    public void TalkerOverfitsATinyBatch(TalkerKind kind)
    {
        TorchRuntime.Initialize();
        TorchRuntime.Seed(11);
        using var talker = Talker.Create(TalkerCfg(kind));
        using var latents = nn.functional.normalize(randn(4, 7, 16), p: 2, dim: -1);
        var rng = new Random(5);
        var xs = Enumerable.Range(0, 4).Select(_ =>
            new ReasonerExample([], [.. Enumerable.Range(0, 5).Select(_ => rng.Next(6, Tok.VocabSize)), Tok.EosId!.Value], "")).ToList();
        using var opt = optim.Adam(talker.parameters(), 3e-3);
        double first = 0, last = 0;
        for (int step = 0; step < 150; step++)
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var loss = ReasonerPhases.TalkerLoss(talker, latents, xs, 0).Loss;
            loss.backward();
            opt.step();
            if (step == 0) first = loss.item<float>();
            last = loss.item<float>();
        }
        Assert.True(last < 0.05 * first, $"{kind} talker loss went from {first:F3} to {last:F3}");
        talker.eval();
        var said = talker.Generate(latents, 8, Tok.EosId!.Value);
        for (int i = 0; i < 4; i++) Assert.Equal(xs[i].Continuation, said[i]);
    }

    [Theory]
    [InlineData(TalkerKind.Mono)]
    [InlineData(TalkerKind.Dual)]
    public void CachedDecodingMatchesRecomputingTheWholeSequence(TalkerKind kind)
    {
        // Generate decodes with a KV cache (Dual: encoder and cross-attention keys once, self-attention cached); greedy
        // decoding by re-running Logits over the growing sequence must give the same tokens and the same last logits.
        TorchRuntime.Initialize();
        TorchRuntime.Seed(4);
        using var talker = Talker.Create(TalkerCfg(kind));
        talker.eval();
        using var _ = no_grad();
        using var latents = nn.functional.normalize(randn(3, 5, 16), p: 2, dim: -1);
        var cached = talker.Generate(latents, 7, -1);
        var ids = full(3, 1, Tok.BosId!.Value, dtype: ScalarType.Int64);
        for (int step = 0; step < 7; step++)
        {
            var next = talker.Logits(latents, ids).select(1, -1).argmax(-1);
            ids = cat(new[] { ids, next.view(3, 1) }, 1);
        }
        for (int i = 0; i < 3; i++)
            Assert.Equal(ids[i].narrow(0, 1, 7).data<long>().Select(v => (int)v).ToArray(), cached[i]);
        using var decoding = talker.StartDecoding(latents);
        Tensor last = decoding.Step(ids.narrow(1, 0, 1));
        for (int t = 1; t < 8; t++) last = decoding.Step(ids.narrow(1, t, 1));
        using var full8 = talker.Logits(latents, ids).select(1, -1);
        Assert.True(last.sub(full8).abs().max().item<float>() < 1e-4, $"{kind}: cached step logits differ from the full pass");
    }

    [Fact]
    public void OracleChainIsTheReasonerReadingTheTrueTokens()
    {
        using var r = TinyReasoner();
        using var _ = no_grad();
        int eos = Tok.EosId!.Value;
        var xs = new[] { new ReasonerExample(Tok.Encode("12(3,4);1>4=", addSpecialTokens: true), Tok.Encode("4<1:r"), ""),
                         new ReasonerExample(Tok.Encode("7(8,9);7>9=", addSpecialTokens: true), Tok.Encode("9<7"), "") };
        using var oracle = ReasonerEval.OracleChain(r, xs, eos, 7);
        Assert.Equal(new long[] { 2, 7, 32 }, oracle.shape);
        // Latent 0 sees the prompt only: the same as the free-running chain's first latent.
        var batch = ReasonerBatch.Of(xs, 0);
        using var chain = r.Reason(batch.PromptIds, batch.PromptMask, 7);
        Assert.True(oracle.select(1, 0).sub(chain.select(1, 0)).abs().max().item<float>() < 1e-4);
        // Latent j of row 1 (3 true tokens) is the Reasoner's state after its prompt and the first j true tokens for j < 3 ...
        var tokens = xs[1].Prompt.Concat(Tok.Encode("9<7")).Select(t => (long)t).ToArray();
        using var outp = r.Model.Forward(tensor(tokens).view(1, -1), logits: LogitsMode.None);
        using var want = r.ToLatent(outp.Hidden.narrow(1, xs[1].Prompt.Length - 1, 3));
        Assert.True(oracle[1].narrow(0, 0, 3).sub(want[0]).abs().max().item<float>() < 1e-4);
        // ... and from latent 2 on (the one that reads out the last true token) the Reasoner's own free-running chain.
        using var tail = r.Reason(tensor(tokens.Take(tokens.Length - 1).ToArray()).view(1, -1), null, 5);
        Assert.True(oracle[1].narrow(0, 2, 5).sub(tail[0]).abs().max().item<float>() < 1e-4);
        Assert.False(Same(oracle, chain), "the untrained free-running chain is not the oracle chain");
    }

    [Fact]
    public void CurriculumDrawsTrainingProblemsEvenlyFromEveryDifficultyAndTestsAtTheTop()
    {
        var family = TaskRegistry.Get("tree:edges");
        var data = new TaskReasonerData(family, 3, trainMinDifficulty: 1);
        var train = data.Train(seed: 5, n: 10);
        Assert.Equal(10, train.Count);
        // Problem i has difficulty 1 + i mod 3: a tree of that depth has that many steps.
        Assert.Equal([1, 2, 3, 1, 2, 3, 1, 2, 3, 1], train.Select(x => x.Problem!.Steps.Count).ToArray());
        Assert.Equal(train.Select(x => x.Problem!.Prompt), data.Train(seed: 5, n: 10).Select(x => x.Problem!.Prompt));
        Assert.All(data.Test(8, 1), x => Assert.Equal(3, x.Problem!.Steps.Count));
        Assert.All(new TaskReasonerData(family, 3).Train(5, 6), x => Assert.Equal(3, x.Problem!.Steps.Count));
        Assert.Throws<ArgumentException>(() => new TaskReasonerData(family, 2, trainMinDifficulty: 3));
        Assert.Throws<ArgumentException>(() => new ReasonerOptions { Difficulty = 2, TrainMinDifficulty = 3 }.Validate());
    }

    [Fact]
    public void ChainDriftReportsCosineAndReadoutPerPosition()
    {
        TorchRuntime.Initialize();
        TorchRuntime.Seed(3);
        var data = new TaskReasonerData(TaskRegistry.Get("tree"), 1);
        using var model = new DecoderLM(Reasoner.ModelConfig(data.Tokenizer, 32, 2, 4, 256));
        using var r = new Reasoner(model, new ReasonerSettings { InputScale = Reasoner.MeanEmbeddingNorm(model), LatentSteps = data.MaxContinuation });
        var xs = data.Test(6, 1);
        var drift = ReasonerEval.ChainDrift(r, data, xs);
        Assert.Equal(xs.Max(x => x.Continuation.Length), drift.Count);
        // Position 0 reads the prompt only, so the free-running and oracle latents coincide there.
        Assert.Equal(1.0, drift[0].Cosine, 3);
        Assert.All(drift, d => Assert.InRange(d.ReadoutAccuracy, 0, 1));
        Assert.Contains(drift, d => d.Cosine < 0.999);
    }

    [Fact]
    public void RolloutFeedsTheReasonersOwnChainAndStillTrains()
    {
        using var online = TinyReasoner(seed: 1);
        using var target = TinyReasoner(seed: 2);
        var xs = new[] { new ReasonerExample(Tok.Encode("12(3,4);1>4=", addSpecialTokens: true), Tok.Encode("4<1:r;"), ""),
                         new ReasonerExample(Tok.Encode("7(8,9);7>9=", addSpecialTokens: true), Tok.Encode("9<7:r;"), "") };
        var forced = ReasonerPhases.SstLoss(online, target, xs, 0, 4);
        var half = ReasonerPhases.SstLoss(online, target, xs, 0, 4, rollout: 0.5);
        var own = ReasonerPhases.SstLoss(online, target, xs, 0, 4, rollout: 1);
        float f = forced.Loss.item<float>(), h = half.Loss.item<float>(), o = own.Loss.item<float>();
        Assert.True(float.IsFinite(h) && float.IsFinite(o));
        Assert.NotEqual(f, o);
        Assert.NotEqual(f, h);
        Assert.NotEqual(h, o);
        own.Loss.backward();
        Assert.Contains(online.Model.parameters(), p => p.grad is { } g && g.abs().sum().item<float>() > 0);
        Assert.Throws<ArgumentException>(() => new ReasonerOptions { Rollout = 1.5 }.Validate());
    }

    [Theory]
    [InlineData(TalkerKind.Mono)]
    [InlineData(TalkerKind.Dual)]
    public void TalkerSavesAndLoadsToTheSameFunction(TalkerKind kind)
    {
        TorchRuntime.Initialize();
        TorchRuntime.Seed(2);
        var dir = Directory.CreateTempSubdirectory("ll-talker").FullName;
        try
        {
            using var talker = Talker.Create(TalkerCfg(kind));
            talker.Save(dir);
            using var back = Talker.Load(dir);
            using var _ = no_grad();
            using var lat = randn(2, 3, 16);
            using var ids = tensor(new long[] { 1, 7, 8, 1, 9, 10 }).view(2, 3);
            Assert.True(Same(talker.Logits(lat, ids), back.Logits(lat, ids)));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void TokenErrorsCannotReachTheLatentChain()
    {
        using var reasoner = TinyReasoner();
        TorchRuntime.Seed(4);
        using var talker = Talker.Create(new TalkerConfig(TalkerKind.Mono, 32,
            TalkerConfig.DecoderConfig(Tok.VocabSize, 32, 1, 4, 128, Tok.BosId, Tok.EosId, Tok.PadId)));
        var (ids, mask) = Prompts();

        // 1. Bit-identical chains whatever the Talker samples: greedy, then tokens resampled at random, then perturbed.
        Tensor chain;
        using (no_grad()) chain = reasoner.Reason(ids, mask, 6);
        var greedy = talker.Generate(chain, 6, -1);
        using var g = new Generator(9);
        var resampled = talker.Generate(chain, 6, -1, (_, logits) => multinomial(logits.softmax(-1), 1, generator: g).squeeze(-1));
        var perturbed = talker.Generate(chain, 6, -1, (step, logits) => (logits.argmax(-1) + step + 1).remainder(Tok.VocabSize));
        Assert.NotEqual(greedy[0], perturbed[0]);
        using (no_grad())
        {
            using var again = reasoner.Reason(ids, mask, 6);
            Assert.True(Same(again, chain), "the chain after sampling is bit-identical to the chain before");
        }

        // 2. Autograd: the sampled tokens' embeddings (leaves) get no gradient from the latents; the prompt does.
        using var promptEmb = reasoner.Model.Embed(ids).detach().requires_grad_(true);
        using var sampled = tensor(perturbed.Select(r => r.Select(t => (long)t).ToArray()).SelectMany(x => x).ToArray()).view(2, -1);
        using var tokenEmb = reasoner.Model.Embed(sampled).detach().requires_grad_(true);
        using var latents = ReasonFromEmbeddings(reasoner, promptEmb, mask, 6);
        // The Talker consumes both (its logits depend on the sampled tokens) — one graph, as in generation.
        using var talkerLogits = talker.Logits(latents, sampled);
        var grads = autograd.grad(new[] { latents.sum() }, new[] { promptEmb, tokenEmb }, allow_unused: true);
        Assert.True(grads[0].abs().sum().item<float>() > 0, "sanity: the latents do depend on the prompt");
        Assert.True(grads[1] is null || grads[1].IsInvalid || grads[1].abs().sum().item<float>() == 0,
            "∂latents/∂(sampled token embeddings) must be zero");

        // 3. The same probe on a coupled LM, which feeds its sampled tokens back, finds a non-zero gradient: the test can fail.
        using var coupledIn = cat(new[] { promptEmb, tokenEmb }, 1);
        using var coupledMask = cat(new[] { mask, ones_like(sampled) }, 1);
        using var coupled = reasoner.Model.Forward(inputEmbeds: coupledIn, attentionMask: coupledMask, logits: LogitsMode.None);
        var cg = autograd.grad(new[] { coupled.Hidden.select(1, -1).sum() }, new[] { tokenEmb }, allow_unused: true);
        Assert.True(cg[0].abs().sum().item<float>() > 0);
        chain.Dispose();
    }

    /// <summary>The Reasoner's loop from prompt embeddings (so a test can take gradients with respect to them).</summary>
    static Tensor ReasonFromEmbeddings(Reasoner r, Tensor promptEmb, Tensor mask, int steps)
    {
        var inputs = promptEmb;
        var latents = new List<Tensor>();
        var m = mask;
        for (int t = 0; t < steps; t++)
        {
            using var o = r.Model.Forward(inputEmbeds: inputs, attentionMask: m, logits: LogitsMode.None);
            var lat = r.ToLatent(o.Hidden.narrow(1, o.Hidden.shape[1] - 1, 1));
            latents.Add(lat);
            inputs = cat(new[] { inputs, lat * r.Settings.InputScale }, 1);
            m = cat(new[] { m, ones(m.shape[0], 1, dtype: m.dtype) }, 1);
        }
        return cat(latents, 1);
    }

    [Fact]
    public void SlipsReplaceTraceTokensUniformlyAndOnlyWhileThinking()
    {
        int thinkEnd = Tok.TokenToId(CharTokenizer.ThinkEnd)!.Value;
        int[] alphabet = [.. "0123".Select(c => Tok.TokenToId(c.ToString())!.Value)];
        var none = new GenerationSlips(0, alphabet, thinkEnd, 1);
        var always = new GenerationSlips(1, alphabet, thinkEnd, 1);
        var some = new GenerationSlips(0.25, alphabet, thinkEnd, 1);
        var counts = new Dictionary<int, int>();
        int slipped = 0;
        for (int p = 0; p < 400; p++)
            for (int step = 0; step < 10; step++)
            {
                Assert.Equal(alphabet[1], none.Apply(p, step, alphabet[1]));
                int a = always.Apply(p, step, alphabet[1]);
                Assert.NotEqual(alphabet[1], a);
                Assert.Contains(a, alphabet);
                counts[a] = counts.GetValueOrDefault(a) + 1;
                Assert.Equal(some.Apply(p, step, alphabet[2]), some.Apply(p, step, alphabet[2]));   // deterministic
                slipped += some.Apply(p, step, alphabet[2]) != alphabet[2] ? 1 : 0;
                Assert.Equal(thinkEnd, always.Apply(p, step, thinkEnd));                          // markers never slip
            }
        Assert.Equal(3, counts.Count);
        Assert.All(counts.Values, c => Assert.InRange(c, 4000 / 3 - 150, 4000 / 3 + 150));   // uniform over the other three
        Assert.InRange(slipped / 4000.0, 0.22, 0.28);
        Assert.Throws<ArgumentException>(() => new GenerationSlips(0.1, [alphabet[0], thinkEnd], thinkEnd, 1));

        // The Talker chooser slips every trace token until the row has emitted the thinking marker, then none.
        var chooser = always.TalkerChooser(0, 1);
        Tensor Logits(int token) { var l = zeros(1, Tok.VocabSize); l[0, token] = tensor(5f); return l; }
        Assert.NotEqual(alphabet[0], chooser(0, Logits(alphabet[0])).item<long>());
        Assert.Equal(thinkEnd, chooser(1, Logits(thinkEnd)).item<long>());
        Assert.Equal(alphabet[0], chooser(2, Logits(alphabet[0])).item<long>());

        // A teacher-forced trace slipped for Talker training: every trace token before the marker, nothing after it.
        int[] continuation = [alphabet[0], alphabet[1], alphabet[2], thinkEnd, alphabet[3], Tok.EosId!.Value];
        var trace = always.WithSeed(5).SlipTrace(0, continuation);
        Assert.Equal(continuation.Length, trace.Length);
        for (int j = 0; j < 3; j++) Assert.NotEqual(continuation[j], trace[j]);
        Assert.Equal(continuation[3..], trace[3..]);
        Assert.Equal(trace, always.WithSeed(5).SlipTrace(0, continuation));
        Assert.Equal(continuation, none.SlipTrace(0, continuation));
    }

    [Fact]
    public void SlipProcessorMakesTheGreedyDecoderReadItsSlippedTokens()
    {
        // At rate 1 over the whole vocabulary but the markers, every token a (random) LM emits while thinking must be a
        // slip: not what it would have chosen greedily from the tokens before it, which it then reads.
        using var reasoner = TinyReasoner(l2: false);
        var model = reasoner.Model;
        int thinkEnd = Tok.TokenToId(CharTokenizer.ThinkEnd)!.Value, eos = Tok.EosId!.Value;
        var alphabet = Enumerable.Range(0, Tok.VocabSize).Where(t => t != thinkEnd && t != eos).ToList();
        var slips = new GenerationSlips(1, alphabet, thinkEnd, 3);
        var prompt = Tok.Encode("12(3,4);1>4=", addSpecialTokens: true);
        using var outcome = new LatentLab.Generation.TextGenerator(model).Generate([prompt], new GenerationConfig(MaxNewTokens: 8, StopTokens: []),
            processors: [slips.Processor(0)]);
        var said = outcome.Tokens[0];
        Assert.Equal(8, said.Length);
        using var _ = no_grad();
        for (int t = 0; t < said.Length; t++)
        {
            var prefix = prompt.Concat(said.Take(t)).Select(x => (long)x).ToArray();
            using var ids = tensor(prefix).view(1, -1);
            using var output = model.Forward(ids);
            long greedy = output.Logits!.select(1, -1).argmax(-1).item<long>();
            Assert.Equal(slips.Apply(0, t, (int)greedy), said[t]);
            if (alphabet.Contains((int)greedy)) Assert.NotEqual(greedy, said[t]);
        }
    }

    [Fact]
    public void GradersSlipEveryRowOfEveryBatchAtItsOwnProblemIndex()
    {
        // Batches of 2 over 7 problems: a slip must land where Apply says for the problem's index in the whole list.
        var data = new TaskReasonerData(new CfgFamily(), 6);
        var tok = data.Tokenizer;
        TorchRuntime.Initialize();
        TorchRuntime.Seed(2);
        var lm = new DecoderLM(Reasoner.ModelConfig(tok, 32, 2, 4, 256));
        using var reasoner = new Reasoner(lm, new ReasonerSettings { L2 = true, InputScale = Reasoner.MeanEmbeddingNorm(lm), LatentSteps = 4 });
        using var talker = Talker.Create(new TalkerConfig(TalkerKind.Mono, 32, TalkerConfig.DecoderConfig(tok.VocabSize, 32, 1, 4, 256, tok.BosId, tok.EosId, tok.PadId)));
        var xs = data.Test(7, 1);
        // Every token but the markers can slip: an untrained model rarely starts with a trace character.
        int thinkEnd = tok.TokenToId(CharTokenizer.ThinkEnd)!.Value, eos = tok.EosId!.Value;
        var slips = new GenerationSlips(1, Enumerable.Range(0, tok.VocabSize).Where(t => t != thinkEnd && t != eos).ToList(), thinkEnd, 9);
        var checkedRows = 0;
        foreach (var (clean, slipped) in new[]
        {
            (ReasonerEval.GradeBaseline(lm, data, xs, batchSize: 2), ReasonerEval.GradeBaseline(lm, data, xs, batchSize: 2, slips: slips)),
            (ReasonerEval.GradePipeline(reasoner, talker, data, xs, batchSize: 2), ReasonerEval.GradePipeline(reasoner, talker, data, xs, batchSize: 2, slips: slips)),
        })
            for (int i = 0; i < xs.Count; i++)
            {
                // The first token comes from the prompt (or chain) alone, so the slip-free run says what was chosen.
                int chosen = clean[i].Generated[0];
                Assert.Equal(slips.Apply(i, 0, chosen), slipped[i].Generated[0]);
                if (slips.Alphabet.Contains(chosen)) { Assert.NotEqual(chosen, slipped[i].Generated[0]); checkedRows++; }
            }
        Assert.True(checkedRows >= 7, $"only {checkedRows} rows started with a slippable token: the check saw too few slips");
    }
}
