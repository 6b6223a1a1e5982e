using System.Text.Json.Nodes;
using LatentLab.Evaluation;

namespace LatentLab.Tests;

public sealed class EvaluationTests
{
    static bool[] Outcomes(string s) => s.Select(c => c == '1').ToArray();

    [Fact]
    public void PairedDifferenceEqualsTheIndependentOneWhenOutcomesAreUncorrelated()
    {
        // both, only a, only b, neither = 2, 2, 2, 2: φ = 0.
        var a = Outcomes("11110000");
        var b = Outcomes("11001100");
        var paired = Difference.Paired(a, b);
        var independent = Difference.Of(Proportion.Wilson(4, 8), Proportion.Wilson(4, 8));
        Assert.Equal(independent, paired);
    }

    [Fact]
    public void PairedDifferenceIsNarrowerWhenTheArmsAgreeOnMostProblems()
    {
        var a = Outcomes("1111111111111111000000000000001");
        var b = Outcomes("1111111111111110000000000000000");
        var paired = Difference.Paired(a, b);
        var independent = Difference.Of(Proportion.Wilson(a.Count(x => x), a.Length), Proportion.Wilson(b.Count(x => x), b.Length));
        Assert.Equal(independent.Value, paired.Value, 12);
        Assert.True(paired.High - paired.Low < independent.High - independent.Low);
        Assert.True(paired.Low <= paired.Value && paired.Value <= paired.High);
        Assert.Throws<ArgumentException>(() => Difference.Paired(a, b.Take(3).ToArray()));
    }

    static Study Sample() => new("demo",
    [
        Arm.Graded("oracle", "full computation", ArmRole.Ceiling, Outcomes("1111"), tokenSteps: 10, flops: 1e6),
        Arm.Graded("free", "no computation", ArmRole.Floor, Outcomes("1000"), tokenSteps: 1, flops: 1e4),
        Arm.Graded("ours", "the method", ArmRole.Method, Outcomes("1110"), tokenSteps: 2, flops: 2e4, trainFlops: 5e9),
        Arm.NotRun("later", "not built yet", ArmRole.Method, "needs a KV predictor"),
    ]);

    [Fact]
    public void StudyComparesEveryArmWithTheCeilingAndTheFloor()
    {
        var s = Sample();
        Assert.Equal(4, s.Problems);
        Assert.Equal("oracle", s.Ceiling!.Name);
        Assert.Equal("free", s.Floor!.Name);
        var d = s.Differences();
        Assert.Equal(new[] { ("ours", "oracle"), ("ours", "free") }, d.Select(x => (x.A, x.B)));
        Assert.Equal(-0.25, d[0].Difference.Value, 12);
        Assert.Equal(0.5, d[1].Difference.Value, 12);
        var table = s.ArmsTable();
        Assert.Contains("| oracle | ceiling | full computation | ", table);
        Assert.Contains("| later | method | not built yet | not run | - | - | - | needs a KV predictor |", table);
        Assert.Contains("| ours | oracle |", s.PairedTable());
    }

    [Fact]
    public void StudyRefusesArmsOnDifferentProblemsAndTwoCeilings()
    {
        Assert.Throws<ArgumentException>(() => new Study("x", [Arm.Graded("a", "", ArmRole.Method, Outcomes("11")), Arm.Graded("b", "", ArmRole.Method, Outcomes("111"))]));
        Assert.Throws<ArgumentException>(() => new Study("x", [Arm.Graded("a", "", ArmRole.Ceiling, Outcomes("1")), Arm.Graded("b", "", ArmRole.Ceiling, Outcomes("0"))]));
        Assert.Throws<ArgumentException>(() => new Study("x", [Arm.Graded("a", "", ArmRole.Method, Outcomes("1")), Arm.Graded("a", "", ArmRole.Floor, Outcomes("0"))]));
        Assert.Throws<KeyNotFoundException>(() => Sample().Get("missing"));
    }

    [Fact]
    public void StudyWritesReportResultsAndTheStandardPlots()
    {
        var dir = Path.Combine(Path.GetTempPath(), "latentlab-eval-" + Guid.NewGuid().ToString("N"));
        try
        {
            var s = Sample() with
            {
                Sweeps = [new ScaleSweep("ours", "alpha", [new(0.5, Proportion.Wilson(1, 4)), new(1, Proportion.Wilson(3, 4))])],
                Lengths = [new LengthResult("ours", 2, 0, Proportion.Wilson(3, 4)), new LengthResult("ours", 3, 1, Proportion.Wilson(1, 4))],
            };
            var report = StudyFiles.Write(dir, "# demo\n\n" + s.ArmsTable() + s.SweepTables() + s.LengthTable(), s.ToJson());
            Assert.Equal(Path.Combine(Path.GetFullPath(dir), "report.md"), report);
            Assert.Contains("difficulty 3 (+1)", File.ReadAllText(report));
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "results.json")))!;
            Assert.Equal("ceiling", (string)json["arms"]![0]!["role"]!);
            Assert.Equal(4, (int)json["arms"]![0]!["accuracy"]!["trials"]!);
            Assert.Null(json["arms"]![3]!["accuracy"]);
            Assert.Equal(2, json["paired"]!.AsArray().Count);
            // A normalised accuracy over a zero clean accuracy is NaN: written as null, the rest of the results kept.
            var odd = new JsonObject { ["nan"] = double.NaN, ["rows"] = new JsonArray(1.5, double.PositiveInfinity, "x"), ["inner"] = new JsonObject { ["f"] = float.NaN, ["ok"] = 2 } };
            StudyFiles.Write(dir, "# odd", odd, "odd.json");
            var back = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "odd.json")))!;
            Assert.Null(back["nan"]);
            Assert.Equal(1.5, (double)back["rows"]![0]!);
            Assert.Null(back["rows"]![1]);
            Assert.Equal("x", (string)back["rows"]![2]!);
            Assert.Null(back["inner"]!["f"]);
            Assert.Equal(2, (int)back["inner"]!["ok"]!);
            Assert.True(double.IsNaN((double)odd["nan"]!));   // the caller's object is left as it was
            foreach (var png in new[]
            {
                StudyPlots.AccuracyVsCompute(s, Path.Combine(dir, "c.png"), "compute"),
                StudyPlots.AccuracyVsKnob(s, Path.Combine(dir, "k.png"), "knob", "alpha"),
                StudyPlots.AccuracyVsLength(s, Path.Combine(dir, "l.png"), "length", "difficulty"),
            })
                Assert.True(new FileInfo(png).Length > 1000, png);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }
}
