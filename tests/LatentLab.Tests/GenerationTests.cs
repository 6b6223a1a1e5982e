using LatentLab.Generation;
using LatentLab.Hooks;
using LatentLab.Models;
using LatentLab.Tensors;
using TorchSharp;
using static TorchSharp.torch;


namespace LatentLab.Tests;

public sealed class GenerationTests
{
    // Incremental decoding reorders float32 reductions; 1e-4 absolute on logits of size ~1-10 (as in DecoderTests).
    const double CacheTolerance = 1e-4;

    static DecoderLM Model(string arch, long seed = 3) => DecoderReferenceTests.RandomTiny(arch, seed);

    static readonly int[] NoStops = Array.Empty<int>();

    static Tensor Row(IEnumerable<int> ids) => tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);

    static double MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    /// <summary>Fixed-width codes, so a stop string like "05][" can only match where token 5 ends.</summary>
    static string Decode(IReadOnlyList<int> ids) => string.Concat(ids.Select(i => $"[{i:D2}]"));

    public static IEnumerable<object[]> Archs() => TinyModels.Architectures.Select(a => new object[] { a });

    [Theory]
    [MemberData(nameof(Archs))]
    public void CachedDecodingLogitsEqualFullRecomputation(string arch)
    {
        using var model = Model(arch);
        using var scope = NewDisposeScope();
        int[][] prompts = { new[] { 1, 7, 3, 22, 9 }, new[] { 1, 40 } };
        using var result = new TextGenerator(model).Generate(prompts, new GenerationConfig(MaxNewTokens: 10, StopTokens: NoStops, OutputLogits: true));
        Assert.Equal(new long[] { 2, 10, 64 }, result.Logits!.shape);
        for (int b = 0; b < prompts.Length; b++)
        {
            Assert.Equal(10, result.Tokens[b].Length);
            // Row b alone, unpadded and without a cache: position P-1+i predicts generated token i.
            var seq = prompts[b].Concat(result.Tokens[b][..9]).ToArray();
            var full = model.Forward(Row(seq)).Logits![0].narrow(0, prompts[b].Length - 1, 10);
            for (int step = 0; step < 10; step++)
            {
                double d = MaxDiff(result.Logits![b, step], full[step]);
                Assert.True(d < CacheTolerance, $"{arch} row {b} step {step}: {d:E2}");
            }
        }
    }

    [Theory]
    [InlineData("LlamaForCausalLM")]
    [InlineData("Gemma2ForCausalLM")]
    public void GreedyEqualsArgmaxOfFullForwardTokenByToken(string arch)
    {
        using var model = Model(arch);
        using var scope = NewDisposeScope();
        int[] prompt = { 1, 12, 5, 33 };
        var result = new TextGenerator(model).Generate(new[] { prompt }, new GenerationConfig(MaxNewTokens: 8, StopTokens: NoStops));
        var seq = prompt.ToList();
        for (int i = 0; i < 8; i++)
        {
            int want = (int)model.Forward(Row(seq)).Logits![0, -1].argmax().item<long>();
            Assert.Equal(want, result.Tokens[0][i]);
            seq.Add(want);
        }
        Assert.Equal(FinishReason.Length, result.Finish[0]);
        Assert.Equal(8, result.Sampled[0]);
    }

    [Theory]
    [InlineData("Qwen2ForCausalLM")]
    [InlineData("Gemma3ForCausalLM")]
    public void BatchedGreedyEqualsEachPromptAlone(string arch)
    {
        using var model = Model(arch);
        using var scope = NewDisposeScope();
        var gen = new TextGenerator(model);
        int[][] prompts = { new[] { 1, 9 }, new[] { 1, 4, 9, 16, 25, 36, 49 }, new[] { 1, 60, 2, 30 } };
        var free = gen.Generate(new[] { prompts[0] }, new GenerationConfig(MaxNewTokens: 9, StopTokens: NoStops)).Tokens[0];
        // A stop token that row 0 meets early, so the batch has a finished row next to running ones.
        int k = Enumerable.Range(1, 6).First(i => !free[..i].Contains(free[i]));
        var cfg = new GenerationConfig(MaxNewTokens: 9, StopTokens: new[] { free[k] });
        var batch = gen.Generate(prompts, cfg);
        Assert.Equal(FinishReason.Eos, batch.Finish[0]);
        Assert.Equal(free[..k], batch.Tokens[0]);
        for (int b = 0; b < prompts.Length; b++)
        {
            var alone = gen.Generate(new[] { prompts[b] }, cfg);
            Assert.Equal(alone.Tokens[0], batch.Tokens[b]);
            Assert.Equal(alone.Finish[0], batch.Finish[b]);
            Assert.Equal(alone.Sampled[0], batch.Sampled[b]);
        }
        Assert.True(batch.Tokens.Skip(1).Any(t => t.Length > k), "no row kept running after row 0 finished");
    }

    [Fact]
    public void SameSeedSameSampleWhateverTheGlobalRng()
    {
        using var model = Model("Qwen3ForCausalLM");
        using var scope = NewDisposeScope();
        var gen = new TextGenerator(model);
        int[][] prompts = { new[] { 1, 5, 9 }, new[] { 1, 20 } };
        GenerationConfig Cfg(long seed) => new(MaxNewTokens: 12, Temperature: 2.0, StopTokens: NoStops, Seed: seed);
        TorchRuntime.Seed(100);
        var a = gen.Generate(prompts, Cfg(7));
        TorchRuntime.Seed(200);
        rand(1000).Dispose();
        var b = gen.Generate(prompts, Cfg(7));
        var c = gen.Generate(prompts, Cfg(8));
        for (int r = 0; r < prompts.Length; r++) Assert.Equal(a.Tokens[r], b.Tokens[r]);
        // 24 draws at temperature 2 over 64 tokens: identical sequences for another seed would be a broken seed.
        Assert.False(a.Tokens[0].SequenceEqual(c.Tokens[0]) && a.Tokens[1].SequenceEqual(c.Tokens[1]), "seed 8 gave seed 7's samples");
        var greedy = gen.Generate(prompts, new GenerationConfig(MaxNewTokens: 12, StopTokens: NoStops));
        Assert.False(a.Tokens[0].SequenceEqual(greedy.Tokens[0]) && a.Tokens[1].SequenceEqual(greedy.Tokens[1]), "sampling at T=2 reproduced greedy");
    }

    [Fact]
    public void TopKOneEqualsGreedy()
    {
        using var model = Model("LlamaForCausalLM");
        using var scope = NewDisposeScope();
        var gen = new TextGenerator(model);
        int[][] prompts = { new[] { 1, 3, 5, 7 }, new[] { 1, 50, 8 } };
        var greedy = gen.Generate(prompts, new GenerationConfig(MaxNewTokens: 10, StopTokens: NoStops));
        var topk = gen.Generate(prompts, new GenerationConfig(MaxNewTokens: 10, Temperature: 1.7, TopK: 1, StopTokens: NoStops, Seed: 11));
        for (int r = 0; r < prompts.Length; r++) Assert.Equal(greedy.Tokens[r], topk.Tokens[r]);
    }

    [Fact]
    public void StopTokenEndsTheRowWithEosAndIsNotReturned()
    {
        using var model = Model("Gemma2ForCausalLM");
        using var scope = NewDisposeScope();
        var gen = new TextGenerator(model);
        int[] prompt = { 1, 17, 4 };
        var free = gen.Generate(new[] { prompt }, new GenerationConfig(MaxNewTokens: 10, StopTokens: NoStops));
        Assert.Equal(FinishReason.Length, free.Finish[0]);
        Assert.Null(free.MatchedStopToken[0]);
        var t = free.Tokens[0];
        int k = Enumerable.Range(1, 8).First(i => !t[..i].Contains(t[i]));
        var stopped = gen.Generate(new[] { prompt }, new GenerationConfig(MaxNewTokens: 10, StopTokens: new[] { 63, t[k] }));
        Assert.Equal(FinishReason.Eos, stopped.Finish[0]);
        Assert.Equal(t[k], stopped.MatchedStopToken[0]);
        Assert.Equal(t[..k], stopped.Tokens[0]);
        Assert.Equal(k + 1, stopped.Sampled[0]);
    }

    [Fact]
    public void NullStopTokensMeansTheModelsEos()
    {
        using var model = Model("Qwen2ForCausalLM");
        using var scope = NewDisposeScope();
        var gen = new TextGenerator(model);
        // Ban everything but the config's eos (2): the first token must end the row.
        var onlyEos = new BanProcessor(Enumerable.Range(0, 64).Where(i => i != 2).ToArray());
        var r = gen.Generate(new[] { new[] { 1, 8 } }, new GenerationConfig(MaxNewTokens: 5), processors: new[] { onlyEos });
        Assert.Equal(FinishReason.Eos, r.Finish[0]);
        Assert.Empty(r.Tokens[0]);
        Assert.Equal(2, r.MatchedStopToken[0]);
    }

    [Fact]
    public void StopStringsCutTextAndTokensBeforeTheMatch()
    {
        using var model = Model("Qwen3ForCausalLM");
        using var scope = NewDisposeScope();
        var gen = new TextGenerator(model);
        int[] prompt = { 1, 30, 31 };
        var free = gen.Generate(new[] { prompt }, new GenerationConfig(MaxNewTokens: 10, StopTokens: NoStops), Decode);
        var t = free.Tokens[0];
        Assert.Equal(Decode(t), free.Texts![0]);
        int k = Enumerable.Range(2, 6).First(i => !t[..i].Contains(t[i]));

        // On a token boundary: "[tk][" is complete once token k+1 is drawn.
        var onBoundary = gen.Generate(new[] { prompt },
            new GenerationConfig(MaxNewTokens: 10, StopTokens: NoStops, StopStrings: new[] { "no such text", $"[{t[k]:D2}][" }), Decode);
        Assert.Equal(FinishReason.StopString, onBoundary.Finish[0]);
        Assert.Equal($"[{t[k]:D2}][", onBoundary.MatchedStopString[0]);
        Assert.Equal(t[..k], onBoundary.Tokens[0]);
        Assert.Equal(Decode(t[..k]), onBoundary.Texts![0]);
        Assert.Equal(k + 2, onBoundary.Sampled[0]);

        // Starting inside token k: the text keeps its "[", the straddling token is dropped.
        var inside = gen.Generate(new[] { prompt },
            new GenerationConfig(MaxNewTokens: 10, StopTokens: NoStops, StopStrings: new[] { $"{t[k]:D2}]" }), Decode);
        Assert.Equal(FinishReason.StopString, inside.Finish[0]);
        Assert.Equal(t[..k], inside.Tokens[0]);
        Assert.Equal(Decode(t[..k]) + "[", inside.Texts![0]);
        Assert.Equal(k + 1, inside.Sampled[0]);

        Assert.Throws<ArgumentException>(() => gen.Generate(new[] { prompt }, new GenerationConfig(StopStrings: new[] { "x" })));
    }

    [Fact]
    public void CustomProcessorThatBansATokenIsHonoured()
    {
        using var model = Model("LlamaForCausalLM");
        using var scope = NewDisposeScope();
        var gen = new TextGenerator(model);
        int[] prompt = { 1, 2, 3 };
        var free = gen.Generate(new[] { prompt }, new GenerationConfig(MaxNewTokens: 8, StopTokens: NoStops));
        int banned = free.Tokens[0][0];
        var ban = new BanProcessor(banned);
        var greedy = gen.Generate(new[] { prompt }, new GenerationConfig(MaxNewTokens: 8, StopTokens: NoStops), processors: new[] { ban });
        Assert.DoesNotContain(banned, greedy.Tokens[0]);
        // The first token becomes the runner-up of the unbanned prompt logits.
        var top2 = model.Forward(Row(prompt)).Logits![0, -1].topk(2).indexes;
        Assert.Equal(top2[1].item<long>(), greedy.Tokens[0][0]);

        var sampled = gen.Generate(new[] { prompt, new[] { 1, 40 } },
            new GenerationConfig(MaxNewTokens: 20, Temperature: 3, StopTokens: NoStops, Seed: 1), processors: new[] { ban });
        Assert.All(sampled.Tokens, row => Assert.DoesNotContain(banned, row));

        var all = new BanProcessor(Enumerable.Range(0, 64).ToArray());
        var e = Assert.Throws<InvalidOperationException>(() => gen.Generate(new[] { prompt }, new GenerationConfig(StopTokens: NoStops), processors: new[] { all }));
        Assert.Contains("no finite entry", e.Message);
    }

    [Fact]
    public void StepContextCarriesIdsMaskAndTheHiddenStateOfTheScoredPosition()
    {
        using var model = Model("Gemma3ForCausalLM");
        using var scope = NewDisposeScope();
        int[][] prompts = { new[] { 1, 5, 6, 7 }, new[] { 1, 9 } };
        var spy = new StepSpy();
        var r = new TextGenerator(model).Generate(prompts, new GenerationConfig(MaxNewTokens: 4, StopTokens: NoStops), processors: new[] { spy });
        Assert.Equal(new[] { 0, 1, 2, 3 }, spy.Steps.Select(s => s.Index));
        Assert.All(spy.Steps, s => Assert.Equal(4, s.PromptLength));
        var last = spy.Steps[^1];
        Assert.Equal(new long[] { 0, 0, 1, 9 }, last.Ids[1][..4]);
        Assert.Equal(new long[] { 0, 0, 1, 1, 1, 1, 1 }, last.Mask[1]);
        Assert.Equal(r.Tokens[1][..3].Select(t => (long)t), last.Ids[1][4..]);
        for (int b = 0; b < prompts.Length; b++)
        {
            var seq = prompts[b].Concat(r.Tokens[b][..3]).ToArray();
            var hidden = model.Forward(Row(seq)).Hidden[0];
            for (int s = 0; s < 4; s++)
            {
                double d = MaxDiff(spy.Steps[s].Hidden[b], hidden[prompts[b].Length - 1 + s]);
                Assert.True(d < CacheTolerance, $"row {b} step {s}: hidden differs by {d:E2}");
            }
        }
        foreach (var s in spy.Steps) s.Hidden.Dispose();
    }

    [Fact]
    public void RepetitionPenaltyIsWiredWithThePromptIncluded()
    {
        using var model = Model("Qwen2ForCausalLM");
        using var scope = NewDisposeScope();
        int[][] prompts = { new[] { 1, 5, 9, 5 }, new[] { 1, 11 } };
        var r = new TextGenerator(model).Generate(prompts,
            new GenerationConfig(MaxNewTokens: 5, RepetitionPenalty: 1.8, StopTokens: NoStops, OutputScores: true, OutputLogits: true));
        for (int b = 0; b < prompts.Length; b++)
            for (int s = 0; s < 5; s++)
            {
                var seen = prompts[b].Concat(r.Tokens[b][..s]).ToHashSet();
                var raw = r.Logits![b, s].data<float>().ToArray();
                var got = r.Scores![b, s].data<float>().ToArray();
                for (int v = 0; v < raw.Length; v++)
                {
                    float want = !seen.Contains(v) ? raw[v] : raw[v] < 0 ? raw[v] * 1.8f : raw[v] / 1.8f;
                    Assert.True(Math.Abs(want - got[v]) < 1e-5, $"row {b} step {s} token {v}: {got[v]} vs {want}");
                }
                Assert.Equal((long)r.Tokens[b][s], r.Scores![b, s].argmax().item<long>());
            }
    }

    [Fact]
    public void EmbeddingPromptsGiveTheSameTokensAsIds()
    {
        using var model = Model("Gemma2ForCausalLM");
        using var scope = NewDisposeScope();
        var gen = new TextGenerator(model);
        int[] prompt = { 1, 14, 15, 16, 3 };
        var cfg = new GenerationConfig(MaxNewTokens: 6, StopTokens: NoStops, OutputLogits: true);
        var viaIds = gen.Generate(new[] { prompt }, cfg);
        var viaEmb = gen.GenerateFromEmbeddings(model.Embed(Row(prompt)), null, cfg);
        Assert.Equal(viaIds.Tokens[0], viaEmb.Tokens[0]);
        Assert.True(MaxDiff(viaIds.Logits!, viaEmb.Logits!) < 1e-5);

        // Left padding in the embedding mask.
        var padded = cat(new[] { zeros(1, 2, 32), model.Embed(Row(prompt)) }, 1);
        var mask = tensor(new long[] { 0, 0, 1, 1, 1, 1, 1 }).unsqueeze(0);
        Assert.Equal(viaIds.Tokens[0], gen.GenerateFromEmbeddings(padded, mask, cfg).Tokens[0]);

        // No prompt ids: the repetition penalty sees only generated tokens, so step 0 is unpenalised and step 1 is.
        using var rp = gen.GenerateFromEmbeddings(padded, mask, cfg with { RepetitionPenalty = 2, OutputScores = true });
        Assert.Equal(0, MaxDiff(rp.Scores![0, 0], rp.Logits![0, 0]));
        int first = rp.Tokens[0][0];
        float raw = rp.Logits![0, 1, first].item<float>(), got = rp.Scores![0, 1, first].item<float>();
        Assert.Equal(raw < 0 ? raw * 2 : raw / 2, got, 5);
    }

    [Fact]
    public void KvPrefixContinuesLikeTheFullPromptAndIsLeftUntouched()
    {
        using var model = Model("LlamaForCausalLM");
        using var scope = NewDisposeScope();
        var gen = new TextGenerator(model);
        int[] head = { 1, 6, 11, 16 };
        int[][] tails = { new[] { 21, 26 }, new[] { 8, 9, 10 } };
        using var donor = new KvCache(model.Config.NumLayers);
        model.Forward(Row(head), cache: donor);
        var pairs = Enumerable.Range(0, model.Config.NumLayers).Select(l => (donor.Keys(l)!, donor.Values(l)!)).ToList();
        using var prefix = KvCache.FromPrefix(pairs, 1);
        var keysBefore = prefix.Keys(0)!.clone();
        var cfg = new GenerationConfig(MaxNewTokens: 6, StopTokens: NoStops);
        var withPrefix = gen.Generate(tails, cfg, prefix: prefix);
        var again = gen.Generate(tails, cfg, prefix: prefix);
        for (int b = 0; b < tails.Length; b++)
        {
            var full = gen.Generate(new[] { head.Concat(tails[b]).ToArray() }, cfg);
            Assert.Equal(full.Tokens[0], withPrefix.Tokens[b]);
            Assert.Equal(full.Tokens[0], again.Tokens[b]);
        }
        Assert.Equal(4, prefix.Length);
        Assert.Equal(0, MaxDiff(keysBefore, prefix.Keys(0)!));
    }

    [Fact]
    public void HooksApplyInTheChosenPhases()
    {
        using var model = Model("Qwen3ForCausalLM");
        using var scope = NewDisposeScope();
        var gen = new TextGenerator(model);
        int[] prompt = { 1, 4, 7, 10 };
        var delta = randn(32) * 0.5;
        var hooks = new HookSet(new[] { HookSpec.Add("blocks.0.resid_post", delta) });
        var cfg = new GenerationConfig(MaxNewTokens: 5, StopTokens: NoStops, OutputLogits: true);
        var plain = gen.Generate(new[] { prompt }, cfg);
        var none = gen.Generate(new[] { prompt }, cfg, hooks: hooks, hookPhases: HookPhases.None);
        Assert.Equal(0, MaxDiff(plain.Logits!, none.Logits!));

        // Hooked at every step equals a full forward with the hook on every position.
        var all = gen.Generate(new[] { prompt }, cfg, hooks: hooks);
        var seq = prompt.Concat(all.Tokens[0][..4]).ToArray();
        var full = model.Forward(Row(seq), hooks: hooks).Logits![0].narrow(0, 3, 5);
        Assert.True(MaxDiff(all.Logits![0], full) < CacheTolerance);

        // Prefill only: the first step matches the hooked run, later steps see an unhooked token.
        var pre = gen.Generate(new[] { prompt }, cfg, hooks: hooks, hookPhases: HookPhases.Prefill);
        Assert.True(MaxDiff(pre.Logits![0, 0], all.Logits![0, 0]) < 1e-6);
        Assert.True(MaxDiff(pre.Logits![0].narrow(0, 1, 4), all.Logits![0].narrow(0, 1, 4)) > 1e-3);

        // Decode-step captures reach the processors through the step context.
        var spy = new StepSpy("blocks.1.resid_post");
        gen.Generate(new[] { prompt }, cfg, processors: new[] { spy }, hooks: HookSet.Captures("blocks.1.resid_post"), hookPhases: HookPhases.Decode);
        Assert.Equal(new[] { false, true, true, true, true }, spy.Steps.Select(s => s.Captured));
    }

    [Fact]
    public void ZeroNewTokensAndBadInputsAreHandled()
    {
        using var model = Model("LlamaForCausalLM");
        using var scope = NewDisposeScope();
        var gen = new TextGenerator(model);
        var r = gen.Generate(new[] { new[] { 1, 2 } }, new GenerationConfig(MaxNewTokens: 0), Decode);
        Assert.Empty(r.Tokens[0]);
        Assert.Equal(FinishReason.Length, r.Finish[0]);
        Assert.Equal("", r.Texts![0]);
        Assert.Contains("prompt 1 is empty", Assert.Throws<ArgumentException>(() => gen.Generate(new[] { new[] { 1 }, Array.Empty<int>() }, new GenerationConfig())).Message);
        Assert.Contains("outside the vocabulary", Assert.Throws<ArgumentException>(() => gen.Generate(new[] { new[] { 1, 64 } }, new GenerationConfig())).Message);
        Assert.Contains("TopP", Assert.Throws<ArgumentException>(() => gen.Generate(new[] { new[] { 1 } }, new GenerationConfig(TopP: 0))).Message);
        Assert.Contains("Temperature", Assert.Throws<ArgumentException>(() => gen.Generate(new[] { new[] { 1 } }, new GenerationConfig(Temperature: -1))).Message);
    }

    [Fact]
    public void LongGenerationsDoNotLeakTensors()
    {
        using var model = Model("Qwen2ForCausalLM");
        var gen = new TextGenerator(model);
        long Live(int n)
        {
            long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
            using (var r = gen.Generate(new[] { new[] { 1, 3 }, new[] { 1, 4, 5 } },
                new GenerationConfig(MaxNewTokens: n, Temperature: 1, TopK: 10, TopP: 0.9, RepetitionPenalty: 1.2, StopTokens: NoStops, Seed: 1, OutputScores: true)))
            { }
            return DisposeScopeManager.Statistics.ThreadTotalLiveCount - before;
        }
        Live(2);
        Assert.Equal(0, Live(3));
        Assert.Equal(0, Live(30));
    }

    sealed class BanProcessor(params int[] banned) : ILogitsProcessor
    {
        public Tensor Process(Tensor inputIds, Tensor logits)
        {
            using var scope = NewDisposeScope();
            var idx = tensor(banned.Select(i => (long)i).ToArray(), device: logits.device);
            return logits.index_fill(1, idx, float.NegativeInfinity).MoveToOuterDisposeScope();
        }
    }

    sealed record Seen(int Index, int PromptLength, long[][] Ids, long[][] Mask, Tensor Hidden, bool Captured);

    /// <summary>Records what each step's context held (hidden states outlive the step: the test disposes them); changes nothing.</summary>
    sealed class StepSpy(string? capture = null) : ILogitsProcessor
    {
        public List<Seen> Steps { get; } = new();

        public Tensor Process(Tensor inputIds, Tensor logits) => throw new InvalidOperationException("the generator should pass the step context");

        public Tensor Process(GenerationStep step, Tensor logits)
        {
            long[][] Rows(Tensor t) => Enumerable.Range(0, (int)t.shape[0]).Select(b => t[b].data<long>().ToArray()).ToArray();
            Steps.Add(new Seen(step.Index, step.PromptLength, Rows(step.InputIds), Rows(step.AttentionMask),
                step.Hidden.clone().DetachFromDisposeScope(), capture is not null && step.Captures.ContainsKey(capture)));
            return logits;
        }
    }
}
