using LatentLab.Evaluation;

namespace LatentLab.Tests;

public sealed class StatsTests
{
    [Theory]
    // Reference values from the closed form (Wilson 1927; e.g. statsmodels proportion_confint(method="wilson")).
    [InlineData(81, 263, 0.2553, 0.3662)]
    [InlineData(0, 10, 0.0, 0.2775)]
    [InlineData(10, 10, 0.7225, 1.0)]
    [InlineData(50, 100, 0.4038, 0.5962)]
    public void WilsonIntervalMatchesTheClosedForm(int k, int n, double lo, double hi)
    {
        var p = Proportion.Wilson(k, n);
        Assert.Equal(lo, p.Low, 4);
        Assert.Equal(hi, p.High, 4);
        Assert.InRange(p.Value, p.Low, p.High);
    }

    [Fact]
    public void BadCountsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => Proportion.Wilson(5, 3));
        Assert.Equal("n/a (0 trials)", Proportion.Wilson(0, 0).ToString());
    }
}
