using LatentLab.Tasks;

namespace LatentLab.Tests;

public sealed class DatasetAnswerNormalizerTests
{
    [Theory]
    [InlineData("18", 18)]
    [InlineData("1,234,567", 1234567)]
    [InlineData("-42", -42)]
    [InlineData("3.50", 3.5)]
    [InlineData(".5", 0.5)]
    [InlineData("$18.00", 18)]
    [InlineData("\\$1,000", 1000)]
    [InlineData("\\boxed{\\frac{1}{2}}", 0.5)]
    [InlineData("\\boxed{\\dfrac{-3}{4}}", -0.75)]
    [InlineData("-\\frac{3}{4}", -0.75)]
    [InlineData("\\tfrac12", 0.5)]
    [InlineData("2\\frac{1}{2}", 2.5)]
    [InlineData("3/4", 0.75)]
    [InlineData("50%", 50)]
    [InlineData("50\\%", 50)]
    [InlineData("18 dollars", 18)]
    [InlineData("5 cm", 5)]
    [InlineData("x = 5", 5)]
    [InlineData("\\text{7}", 7)]
    [InlineData("90^\\circ", 90)]
    [InlineData("\\boxed{\\text{12 apples}}", 12)]
    [InlineData("The total.  42.", 42)]
    public void Numeric_forms_normalise(string raw, double expected)
    {
        var n = AnswerNormalizer.Normalize(raw);
        if (raw == "The total.  42.") { Assert.False(n.IsNumeric); return; }   // words before a number are not an answer
        Assert.True(n.IsNumeric, $"'{raw}' -> '{n.Text}'");
        Assert.Equal(expected, n.Value!.Value, 9);
    }

    [Theory]
    [InlineData("1,2", "1,2")]
    [InlineData("\\sqrt{2}", "\\sqrt{2}")]
    [InlineData("\\left( 1, 2 \\right)", "(1,2)")]
    [InlineData("\\text{Monday}", "monday")]
    public void Symbolic_answers_stay_text(string raw, string text)
    {
        var n = AnswerNormalizer.Normalize(raw);
        Assert.False(n.IsNumeric);
        Assert.Equal(text, n.Text);
    }

    [Fact]
    public void Equivalence_uses_a_relative_tolerance()
    {
        Assert.True(AnswerNormalizer.Equivalent("0.5", "\\frac{1}{2}"));
        Assert.True(AnswerNormalizer.Equivalent("1000", "1,000.0"));
        Assert.True(AnswerNormalizer.Equivalent("0.3333333", "1/3"));
        Assert.False(AnswerNormalizer.Equivalent("0.33", "1/3"));
        Assert.True(AnswerNormalizer.Equivalent("1000000", "1000000.5"));
        Assert.False(AnswerNormalizer.Equivalent("1000000", "1000002"));
        Assert.False(AnswerNormalizer.Equivalent("-5", "5"));
        Assert.True(AnswerNormalizer.Equivalent("\\sqrt{2}", "\\sqrt{ 2 }"));
        Assert.False(AnswerNormalizer.Equivalent("", ""));
        Assert.True(AnswerNormalizer.Equivalent("0", "-0"));
    }

    [Theory]
    [InlineData("so 3+4=7\n#### 7", "7")]
    [InlineData("#### 12\nthen more text 99", "12")]
    [InlineData("Thus the area is $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}")]
    [InlineData("We get 3 then 4. The answer is 18 dollars.", "18 dollars")]
    [InlineData("first 3, then 4, finally -2.5 apples", "-2.5")]
    [InlineData("total 1,000,", "1,000")]
    [InlineData("no numbers here", null)]
    public void Final_answer_extraction(string output, string? expected) =>
        Assert.Equal(expected, AnswerNormalizer.ExtractFinalAnswer(output));

    [Fact]
    public void Model_output_is_checked_against_a_reference()
    {
        Assert.True(AnswerNormalizer.IsCorrect("She makes 9 * 2 = $18 every day.\n#### 18", "18"));
        Assert.True(AnswerNormalizer.IsCorrect("... so the answer is $1,000.", "1000"));
        Assert.True(AnswerNormalizer.IsCorrect("\\boxed{0.5}", "\\frac{1}{2}"));
        Assert.False(AnswerNormalizer.IsCorrect("#### 17", "18"));
        Assert.False(AnswerNormalizer.IsCorrect("I don't know", "18"));
        Assert.Null(AnswerNormalizer.LastBoxed("\\boxed{unclosed"));
        Assert.Equal("5", AnswerNormalizer.LastBoxed("\\boxed 5$"));
    }
}

public sealed class AnswerNormalizerOverflowTests
{
    [Fact]
    public void OverflowingDigitRunsNeverMatch()
    {
        var babble = new string('1', 400); // parses to +infinity
        Assert.False(LatentLab.Tasks.AnswerNormalizer.Equivalent(babble, "5"));
        Assert.False(LatentLab.Tasks.AnswerNormalizer.NumbersClose(double.PositiveInfinity, 5));
        Assert.False(LatentLab.Tasks.AnswerNormalizer.NumbersClose(double.NaN, double.NaN));
        Assert.True(LatentLab.Tasks.AnswerNormalizer.NumbersClose(5, 5.000001));
    }
}
