using LatentLab.Generation;
using LatentLab.Models;
using LatentLab.Tensors;
using static TorchSharp.torch;


namespace LatentLab.Tests;

public sealed class GenerationProcessorTests
{
    static Tensor Logits(params float[][] rows)
    {
        TorchRuntime.Initialize();
        return tensor(rows.SelectMany(r => r).ToArray()).view(rows.Length, rows[0].Length);
    }

    static float[] RowOf(Tensor t, int r) => t[r].data<float>().ToArray();

    static int[] Kept(Tensor t, int r) =>
        RowOf(t, r).Select((v, i) => (v, i)).Where(p => !float.IsNegativeInfinity(p.v)).Select(p => p.i).ToArray();

    static Tensor NoIds => zeros(2, 0, dtype: ScalarType.Int64);

    [Theory]
    [InlineData(0.3, new[] { 1 }, new[] { 2 })]
    [InlineData(0.6, new[] { 1, 3 }, new[] { 2, 3 })]
    [InlineData(0.75, new[] { 1, 3, 4 }, new[] { 0, 2, 3 })]
    [InlineData(0.9, new[] { 1, 2, 3, 4 }, new[] { 0, 2, 3, 4 })]
    [InlineData(1.0, new[] { 0, 1, 2, 3, 4 }, new[] { 0, 1, 2, 3, 4 })]
    public void TopPKeepsTheSmallestSetReachingP(double p, int[] keep0, int[] keep1)
    {
        using var scope = NewDisposeScope();
        // Probabilities chosen so no cumulative sum lands on a tested p: row 0 sorted is .5 .2 .15 .1 .05 (sums .5 .7 .85 .95 1),
        // row 1 is .4 .3 .12 .1 .08 (sums .4 .7 .82 .92 1).
        var probs = Logits(new[] { 0.05f, 0.5f, 0.1f, 0.2f, 0.15f }, new[] { 0.12f, 0.08f, 0.4f, 0.3f, 0.1f });
        var logits = probs.log() + 3; // any shift: top-p works on softmax(logits)
        var outp = new TopPProcessor(p).Process(NoIds, logits);
        Assert.Equal(keep0, Kept(outp, 0));
        Assert.Equal(keep1, Kept(outp, 1));
        foreach (var r in new[] { 0, 1 })
            foreach (var i in Kept(outp, r)) Assert.Equal(RowOf(logits, r)[i], RowOf(outp, r)[i]);
    }

    [Fact]
    public void TopKKeepsTheKHighestAndTiesWithTheKth()
    {
        using var scope = NewDisposeScope();
        var logits = Logits(new[] { 1f, 5f, 3f, 5f, 2f }, new[] { -1f, -2f, 0f, -3f, 4f });
        var k2 = new TopKProcessor(2).Process(NoIds, logits);
        Assert.Equal(new[] { 1, 3 }, Kept(k2, 0));
        Assert.Equal(new[] { 2, 4 }, Kept(k2, 1));
        Assert.Equal(new[] { 1, 2, 3 }, Kept(new TopKProcessor(3).Process(NoIds, logits), 0));
        Assert.Equal(new[] { 1, 3 }, Kept(new TopKProcessor(1).Process(NoIds, logits), 0));
        Assert.Equal(new[] { 0, 1, 2, 3, 4 }, Kept(new TopKProcessor(99).Process(NoIds, logits), 1));
    }

    [Fact]
    public void TemperatureDividesTheLogits()
    {
        using var scope = NewDisposeScope();
        var logits = Logits(new[] { 1f, -2f, 4f });
        Assert.Equal(new[] { 0.5f, -1f, 2f }, RowOf(new TemperatureProcessor(2).Process(NoIds, logits), 0));
        Assert.Throws<ArgumentException>(() => new TemperatureProcessor(0));
    }

    [Fact]
    public void RepetitionPenaltyDividesPositiveAndMultipliesNegativeSeenLogits()
    {
        using var scope = NewDisposeScope();
        var logits = Logits(new[] { 2f, -1f, 0.5f, -3f, 4f });
        var ids = tensor(new long[] { 0, 3, 3 }).view(1, 3);
        // Token 0 (positive) and 3 (negative, seen twice, penalised once); 1, 2, 4 unseen.
        Assert.Equal(new[] { 1f, -1f, 0.5f, -6f, 4f }, RowOf(new RepetitionPenaltyProcessor(2).Process(ids, logits), 0));
        Assert.Equal(new[] { 4f, -1f, 0.5f, -1.5f, 4f }, RowOf(new RepetitionPenaltyProcessor(0.5).Process(ids, logits), 0));
        Assert.Equal(new[] { 2f, -1f, 0.5f, -3f, 4f }, RowOf(logits, 0)); // input untouched

        // Through the step context, padding does not count, but the pad id as a real token does.
        var step = (long[] seen, long[] mask) => new GenerationStep
        {
            Index = 0, InputIds = tensor(seen).view(1, 3), AttentionMask = tensor(mask).view(1, 3), PromptLength = 3,
            Hidden = zeros(1, 4), Unfinished = ones(1, dtype: ScalarType.Bool), Captures = new Dictionary<string, Tensor>(), Model = null!,
        };
        ILogitsProcessor rp = new RepetitionPenaltyProcessor(2);
        Assert.Equal(new[] { 2f, -1f, 0.5f, -6f, 4f }, RowOf(rp.Process(step(new long[] { 0, 3, 3 }, new long[] { 0, 1, 1 }), logits), 0));
        Assert.Equal(new[] { 1f, -1f, 0.5f, -6f, 4f }, RowOf(rp.Process(step(new long[] { 0, 3, 0 }, new long[] { 0, 1, 1 }), logits), 0));
    }

    [Fact]
    public void ConfigBuildsProcessorsInHuggingFaceOrder()
    {
        var custom = new TemperatureProcessor(3);
        var sampling = TextGenerator.Processors(new GenerationConfig(Temperature: 0.7, TopK: 5, TopP: 0.9, RepetitionPenalty: 1.3), new[] { custom });
        Assert.Equal(new[] { typeof(RepetitionPenaltyProcessor), typeof(TemperatureProcessor), typeof(TemperatureProcessor), typeof(TopKProcessor), typeof(TopPProcessor) },
            sampling.Select(p => p.GetType()));
        Assert.Same(custom, sampling[1]);
        // Greedy ignores the sampling warpers (they cannot change the argmax); T = 1 and p = 1 are no-ops and left out.
        Assert.Empty(TextGenerator.Processors(new GenerationConfig(TopK: 5, TopP: 0.5)));
        Assert.Empty(TextGenerator.Processors(new GenerationConfig(Temperature: 1)));
    }
}
