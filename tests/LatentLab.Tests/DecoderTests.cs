using LatentLab.Hooks;
using LatentLab.Models;
using LatentLab.Tensors;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Tests;

public sealed class DecoderTests
{
    // Incremental decoding reorders float32 reductions; 1e-4 absolute on logits of size ~1-10.
    const double CacheTolerance = 1e-4;

    static DecoderLM Model(string arch, long seed = 3) => DecoderReferenceTests.RandomTiny(arch, seed);

    static Tensor Ids(params long[] ids) => tensor(ids).unsqueeze(0);

    static double MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    public static IEnumerable<object[]> Archs() => TinyModels.Architectures.Select(a => new object[] { a });

    [Theory]
    [MemberData(nameof(Archs))]
    public void CachedDecodeEqualsFullForward(string arch)
    {
        using var model = Model(arch);
        using var scope = NewDisposeScope();
        long[] seq = { 1, 7, 3, 22, 9, 14, 5, 30, 2, 17 };
        var full = model.Forward(Ids(seq)).Logits!;
        using var cache = new KvCache(model.Config.NumLayers);
        var parts = new List<Tensor> { model.Forward(Ids(seq[..4]), cache: cache).Logits! };
        for (int t = 4; t < seq.Length; t++) parts.Add(model.Forward(Ids(seq[t]), cache: cache).Logits!);
        var inc = cat(parts, 1);
        Assert.Equal(seq.Length, cache.Length);
        Assert.True(MaxDiff(full, inc) < CacheTolerance, $"{arch}: {MaxDiff(full, inc):E2}");
    }

    [Theory]
    [MemberData(nameof(Archs))]
    public void LeftPaddedBatchMatchesSingleSequences(string arch)
    {
        using var model = Model(arch);
        using var scope = NewDisposeScope();
        long[] a = { 1, 4, 9, 16, 25, 36 }, b = { 1, 8, 27 };
        var batch = tensor(new long[] { 1, 4, 9, 16, 25, 36, 0, 0, 0, 1, 8, 27 }).view(2, 6);
        var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1 }).view(2, 6);
        var outB = model.Forward(batch, attentionMask: mask).Logits!;
        var la = model.Forward(Ids(a)).Logits!;
        var lb = model.Forward(Ids(b)).Logits!;
        Assert.True(MaxDiff(outB[0], la[0]) < CacheTolerance);
        Assert.True(MaxDiff(outB[1].narrow(0, 3, 3), lb[0]) < CacheTolerance);
        Assert.False(outB.isnan().any().item<bool>());
    }

    [Fact]
    public void EmbeddingsInputEqualsIdsInput()
    {
        foreach (var arch in TinyModels.Architectures)
        {
            using var model = Model(arch);
            using var scope = NewDisposeScope();
            var ids = Ids(1, 5, 7, 9);
            var viaIds = model.Forward(ids).Logits!;
            var viaEmb = model.Forward(inputEmbeds: model.Embed(ids)).Logits!;
            Assert.True(MaxDiff(viaIds, viaEmb) < 1e-6, arch);
        }
    }

    [Fact]
    public void LastOnlyLogitsAreTheLastRealPosition()
    {
        using var model = Model("Qwen3ForCausalLM");
        using var scope = NewDisposeScope();
        var batch = tensor(new long[] { 1, 4, 9, 0, 1, 8, 27, 5 }).view(2, 4);
        var mask = tensor(new long[] { 1, 1, 1, 0, 1, 1, 1, 1 }).view(2, 4);
        var all = model.Forward(batch, attentionMask: mask).Logits!;
        var last = model.Forward(batch, attentionMask: mask, logits: LogitsMode.LastOnly).Logits!;
        Assert.Equal(new long[] { 2, 1, 64 }, last.shape);
        Assert.True(MaxDiff(last[0, 0], all[0, 2]) < 1e-6);
        Assert.True(MaxDiff(last[1, 0], all[1, 3]) < 1e-6);
    }

    [Theory]
    [MemberData(nameof(Archs))]
    public void ZeroDeltaAndSelfReplacementChangeNothing(string arch)
    {
        using var model = Model(arch);
        using var scope = NewDisposeScope();
        var ids = Ids(1, 5, 7, 9, 11, 13);
        var baseOut = model.Forward(ids, hooks: HookSet.Captures("blocks.-1.resid_mid", "blocks.0.resid_post"));
        foreach (var point in new[] { "embed", "blocks.0.resid_pre", "blocks.0.attn_out", "blocks.1.resid_mid", "blocks.-1.mlp_out", "final_norm" })
        {
            var zero = zeros(model.Config.HiddenSize);
            var add = model.Forward(ids, hooks: new HookSet(new[] { HookSpec.Add(point, zero) })).Logits!;
            Assert.True(MaxDiff(add, baseOut.Logits!) == 0, $"{arch} zero delta at {point}");
        }
        var captured = baseOut.Capture("blocks.-1.resid_mid");
        var replaced = model.Forward(ids, hooks: new HookSet(new[] { HookSpec.Replace("blocks.-1.resid_mid", captured) })).Logits!;
        Assert.True(MaxDiff(replaced, baseOut.Logits!) == 0, $"{arch} self replacement");
    }

    [Theory]
    [InlineData(0, 2)]
    [InlineData(1, 4)]
    public void DeltaChangesOnlyLaterPositions(int layer, int position)
    {
        using var model = Model("Gemma3ForCausalLM");
        using var scope = NewDisposeScope();
        var ids = Ids(1, 5, 7, 9, 11, 13, 15);
        var clean = model.Forward(ids).Logits!;
        var delta = randn(model.Config.HiddenSize);
        var patched = model.Forward(ids, hooks: new HookSet(new[]
            { HookSpec.Add($"blocks.{layer}.resid_post", delta, Positions.At(position)) })).Logits!;
        var diffPerPos = (patched - clean).abs().amax(new long[] { 0, 2 }).data<float>().ToArray();
        for (int t = 0; t < diffPerPos.Length; t++)
        {
            if (t < position) Assert.Equal(0f, diffPerPos[t]);
            else if (t == position) Assert.True(diffPerPos[t] > 1e-3, $"position {t} unchanged");
        }
        // Attention carries the change forward in layer 0; in the last layer only the patched position moves.
        if (layer == 0) Assert.True(diffPerPos[^1] > 1e-4);
    }

    [Fact]
    public void CapturesOnlyWhatWasAskedAtChosenPositionsAndDtype()
    {
        using var model = Model("LlamaForCausalLM");
        using var scope = NewDisposeScope();
        var ids = Ids(1, 5, 7, 9, 11);
        var hooks = new HookSet(new[]
        {
            HookSpec.Capture("blocks.1.hook_resid_post", Positions.LastToken, "bf16") with { Name = "post" },
            HookSpec.Capture("blocks.0.resid_pre", Positions.Span(1, 3)),
            HookSpec.Capture("logits", Positions.At(-1)),
        });
        using var output = model.Forward(ids, hooks: hooks);
        Assert.Equal(3, output.Captures.Count);
        Assert.Equal(new long[] { 1, 1, 32 }, output.Capture("post").shape);
        Assert.Equal(ScalarType.BFloat16, output.Capture("post").dtype);
        Assert.Equal(new long[] { 1, 2, 32 }, output.Capture("blocks.0.resid_pre").shape);
        Assert.True(MaxDiff(output.Capture("logits")[0, 0], output.Logits![0, 4]) == 0);
        var hidden = output.Hidden; // final norm output equals the last block's resid_post after the norm
        Assert.Equal(new long[] { 1, 5, 32 }, hidden.shape);
    }

    [Fact]
    public void GradientsFlowThroughAddedAndReplacedTensors()
    {
        using var model = Model("Qwen3ForCausalLM");
        using var scope = NewDisposeScope();
        var ids = Ids(1, 5, 7, 9);
        var delta = zeros(32, requires_grad: true);
        var logits = model.Forward(ids, hooks: new HookSet(new[] { HookSpec.Add("blocks.0.resid_post", delta, Positions.At(1)) })).Logits!;
        logits.sum().backward();
        Assert.NotNull(delta.grad);
        Assert.True(delta.grad!.abs().sum().item<float>() > 0);

        var value = randn(1, 1, 32).requires_grad_(true);
        var l2 = model.Forward(ids, hooks: new HookSet(new[] { HookSpec.Replace("blocks.1.resid_mid", value, Positions.LastToken) })).Logits!;
        l2[0, 3].sum().backward();
        Assert.True(value.grad!.abs().sum().item<float>() > 0);
    }

    [Fact]
    public void TokenPositionsFindTheMarker()
    {
        using var model = Model("LlamaForCausalLM");
        using var scope = NewDisposeScope();
        var batch = tensor(new long[] { 1, 4, 42, 9, 1, 42, 8, 8 }).view(2, 4);
        using var output = model.Forward(batch, hooks: new HookSet(new[] { HookSpec.Capture("embed", Positions.OfToken(42)) }));
        var emb = model.Embed(tensor(new long[] { 42 })).squeeze(0);
        var got = output.Capture("embed");
        Assert.True(MaxDiff(got[0, 0], emb) == 0 && MaxDiff(got[1, 0], emb) == 0);
        var e = Assert.Throws<ArgumentException>(() => model.Forward(batch, hooks: new HookSet(new[] { HookSpec.Capture("embed", Positions.OfToken(43)) })));
        Assert.Contains("not found in row 0", e.Message);
    }

    [Fact]
    public void KvPrefixFromAModelsOwnCacheReproducesTheContinuation()
    {
        using var model = Model("Gemma2ForCausalLM");
        using var scope = NewDisposeScope();
        long[] prefix = { 1, 6, 11, 16 }, rest = { 21, 26, 31 };
        var full = model.Forward(Ids(prefix.Concat(rest).ToArray())).Logits!;
        using var donor = new KvCache(model.Config.NumLayers);
        model.Forward(Ids(prefix), cache: donor);
        var pairs = Enumerable.Range(0, model.Config.NumLayers).Select(l => (donor.Keys(l)!, donor.Values(l)!)).ToList();
        using var synthetic = KvCache.FromPrefix(pairs, 1);
        var cont = model.Forward(Ids(rest), cache: synthetic).Logits!;
        Assert.True(MaxDiff(cont, full.narrow(1, 4, 3)) < CacheTolerance);
    }

    [Fact]
    public void HookSetRoundTripsThroughJson()
    {
        TorchRuntime.Initialize();
        var set = new HookSet(new[]
        {
            HookSpec.Capture("blocks.-2.resid_post", Positions.OfToken(151668), "bf16"),
            new HookSpec { Point = "blocks.3.resid_post", Action = HookAction.Add, At = Positions.At(7), Scale = 0.5, ValueName = "delta" },
        });
        var json = set.ToJson();
        using var delta = ones(4);
        var back = HookSet.FromJson(json, name => name == "delta" ? delta : throw new KeyNotFoundException(name));
        Assert.Equal(2, back.Hooks.Count);
        Assert.Equal(set.Hooks[0] with { Value = null }, back.Hooks[0]);
        Assert.Equal(0.5, back.Hooks[1].Scale);
        Assert.Same(delta, back.Hooks[1].Value);
        Assert.Throws<InvalidDataException>(() => HookSet.FromJson(json));
    }

    [Theory]
    [InlineData("blocks.x.resid_post")]
    [InlineData("blocks.1.resid_side")]
    [InlineData("unembed")]
    public void BadHookNamesAreClearErrors(string name)
    {
        var e = Assert.Throws<ArgumentException>(() => HookPoint.Parse(name));
        Assert.Contains(name, e.Message);
    }

    [Fact]
    public void HookNamesAndAliases()
    {
        Assert.Equal(new HookPoint(HookSite.ResidPost, 3), HookPoint.Parse("blocks.3.hook_resid_post"));
        Assert.Equal(new HookPoint(HookSite.ResidPost, 0), HookPoint.Parse("blocks.-2.resid_post").Resolve(2));
        Assert.Throws<ArgumentException>(() => HookPoint.Parse("blocks.5.resid_post").Resolve(2));
        Assert.Equal("blocks.1.attn_out", HookPoint.Parse("blocks.1.attn_out").ToString());
    }
}
