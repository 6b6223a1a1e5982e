using LatentLab.Tasks;

namespace LatentLab.Tests;

public sealed class TaskSplitsTests
{
    [Theory]
    [InlineData("addition", 3)]
    [InlineData("dfa", 9)]
    [InlineData("sort", 3)]
    [InlineData("cfg", 14)]
    public void Splits_never_share_a_problem_and_hold_no_duplicates(string name, int difficulty)
    {
        var f = TaskRegistry.Get(name);
        var train = TaskSplits.Generate(f, Split.Train, 3000, difficulty, seed: 1);
        var val = TaskSplits.Generate(f, Split.Validation, 300, difficulty, seed: 1);
        var test = TaskSplits.Generate(f, Split.Test, 300, difficulty, seed: 2);
        var keys = new[] { train, val, test }.Select(s => s.Select(f.CanonicalKey).ToHashSet()).ToArray();
        Assert.Equal(3000, keys[0].Count);
        Assert.Equal(300, keys[1].Count);
        Assert.Equal(300, keys[2].Count);
        Assert.Empty(keys[0].Intersect(keys[1]));
        Assert.Empty(keys[0].Intersect(keys[2]));
        Assert.Empty(keys[1].Intersect(keys[2]));
        Assert.All(test, p => Assert.Equal(Split.Test, TaskSplits.SplitOf(f, p)));
    }

    [Fact]
    public void Split_membership_ignores_paraphrase_and_noise()
    {
        var add = TaskRegistry.Get("addition");
        var noisy = new CfgFamily(0.3);
        var clean = new CfgFamily();
        for (long seed = 0; seed < 200; seed++)
        {
            var p = add.Generate(seed, 3);
            var swapped = add.Edit(p, EditKind.Paraphrase, 0);
            if (swapped.Supported) Assert.Equal(TaskSplits.SplitOf(add, p), TaskSplits.SplitOf(add, swapped.Edited));
            Assert.Equal(TaskSplits.SplitOf(clean, clean.Generate(seed, 6)), TaskSplits.SplitOf(noisy, noisy.Generate(seed, 6)));
        }
    }

    [Fact]
    public void Splits_are_deterministic_and_roughly_eighty_ten_ten()
    {
        var f = TaskRegistry.Get("addition");
        var a = TaskSplits.Generate(f, Split.Test, 50, 4, 7);
        var b = TaskSplits.Generate(f, Split.Test, 50, 4, 7);
        Assert.Equal(a.Select(p => p.Prompt), b.Select(p => p.Prompt));
        var counts = Enumerable.Range(0, 4000).Select(s => TaskSplits.SplitOf(f, f.Generate(s, 4))).GroupBy(x => x).ToDictionary(g => g.Key, g => g.Count());
        Assert.InRange(counts[Split.Train], 3050, 3350);
        Assert.InRange(counts[Split.Validation], 300, 500);
        Assert.InRange(counts[Split.Test], 300, 500);
    }

    [Fact]
    public void A_too_small_problem_space_is_a_clear_error()
    {
        var f = TaskRegistry.Get("addition");   // one digit: 100 problems, about 10 in test
        var ex = Assert.Throws<InvalidOperationException>(() => TaskSplits.Generate(f, Split.Test, 50, 1, 0));
        Assert.Contains("too small", ex.Message);
        Assert.Empty(TaskSplits.Generate(f, Split.Test, 0, 1, 0));
    }
}
