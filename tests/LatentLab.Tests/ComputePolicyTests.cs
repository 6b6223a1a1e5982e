using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LatentLab.Hooks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using static TorchSharp.torch;

namespace LatentLab.Tests;

public sealed class ComputePolicyTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-compute").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void AutoTakesBf16OnlyWhenMeasuredClearlyFaster()
    {
        // The Zen 2 figures from the issue: emulated bf16 is ~90× slower, so f32.
        var zen2 = ComputePolicy.Decide("auto", cuda: false, cudaBf16: false, bf16Gflops: 0.7, f32Gflops: 61);
        Assert.Equal(ScalarType.Float32, zen2.DType);
        Assert.Contains("0.7 vs 61.0", zen2.Describe());
        // Native bf16 (AVX-512 BF16 / AMX) at twice the f32 rate: bf16.
        Assert.Equal(ScalarType.BFloat16, ComputePolicy.Decide("auto", false, false, 260, 130).DType);
        // A 10% edge does not pay for the rounding: f32. Exactly at the threshold: bf16.
        Assert.Equal(ScalarType.Float32, ComputePolicy.Decide("auto", false, false, 110, 100).DType);
        Assert.Equal(ScalarType.BFloat16, ComputePolicy.Decide("auto", false, false, 120, 100).DType);
        // Explicit dtypes are taken as given, whatever was measured.
        Assert.Equal(ScalarType.BFloat16, ComputePolicy.Decide("bf16", false, false, 0.7, 61).DType);
        Assert.Equal(ScalarType.Float32, ComputePolicy.Decide("F32", false, false, 260, 130).DType);
        // CUDA: bf16 where the device supports it, without figures.
        var cuda = ComputePolicy.Decide("auto", cuda: true, cudaBf16: true, null, null);
        Assert.Equal(ScalarType.BFloat16, cuda.DType);
        Assert.Null(cuda.Bf16Gflops);
        Assert.Equal(ScalarType.Float32, ComputePolicy.Decide("auto", true, false, null, null).DType);
        Assert.Throws<ArgumentException>(() => ComputePolicy.Validate("fp8"));
    }

    [Fact]
    public void ProbeMeasuresBothDtypesWithoutTouchingTheGlobalRng()
    {
        TorchRuntime.Seed(5);
        using var expected = randn(4);
        TorchRuntime.Seed(5);
        var (bf16, f32) = ComputePolicy.Probe(CPU, new[] { (32, 128), (64, 64) });
        using var after = randn(4);
        Assert.True(bf16 > 0 && double.IsFinite(bf16) && f32 > 0 && double.IsFinite(f32), $"bf16 {bf16}, f32 {f32}");
        Assert.Equal(expected.data<float>().ToArray(), after.data<float>().ToArray());

        var choice = ComputePolicy.Resolve("auto", CPU, new[] { (32, 128) });
        Assert.Equal("auto", choice.Requested);
        Assert.NotNull(choice.F32Gflops);
        Assert.Equal(choice.DType == ScalarType.BFloat16, choice.Bf16Gflops >= ComputePolicy.Bf16Advantage * choice.F32Gflops);
        var back = ComputeChoice.FromJson(JsonNode.Parse(choice.ToJson().ToJsonString())!);
        Assert.Equal(choice.DType, back.DType);
        Assert.Equal(choice.Requested, back.Requested);
    }

    [Fact]
    public void ATeacherRunRecordsItsDtypeAndAResumedRunKeepsIt()
    {
        var o = new TeacherOptions
        {
            Task = "addition", Difficulty = 2, Steps = 10, BatchSize = 8, Hidden = 32, Layers = 1, Heads = 2, WarmupSteps = 5,
            EvalProblems = 4, OodExtra = 0, OutDir = _dir, ProgressBar = false,
        };
        var log = new StringWriter();
        TeacherTraining.Train(o, log);
        var configPath = Path.Combine(_dir, "train", "config.json");
        var rec = JsonNode.Parse(File.ReadAllText(configPath))!["run"]!["compute"]!;
        Assert.Equal("auto", rec["requested"]!.GetValue<string>());
        Assert.True(rec["f32_gflops"]!.GetValue<double>() > 0);
        var first = rec["dtype"]!.GetValue<string>();
        Assert.Contains($"compute: {first} — bf16 measured", log.ToString());

        // Pretend the run began on another CPU whose probe chose the other dtype: the resumed run must keep that one
        // (and so still match its config), not re-decide on this machine.
        var other = first == "f32" ? "bf16" : "f32";
        var node = JsonNode.Parse(File.ReadAllText(configPath))!;
        node["run"]!["compute"]!["dtype"] = other;
        File.WriteAllText(configPath, node.ToJsonString());
        var again = new StringWriter();
        TeacherTraining.Train(o, again);
        Assert.Contains($"compute: {other} —", again.ToString());
        Assert.Equal(other, JsonNode.Parse(File.ReadAllText(configPath))!["run"]!["compute"]!["dtype"]!.GetValue<string>());
        Assert.Equal(other, ComputePolicy.Recorded(configPath, "auto")!.Name);
        Assert.Null(ComputePolicy.Recorded(configPath, "f32")); // a different request is a different run
    }

    [Fact]
    public void HookIndicesAreMadeOnTheDeviceOfTheTensorTheyIndex()
    {
        using var scope = NewDisposeScope();
        var ids = tensor(new long[] { 1, 2, 3, 4, 2, 3 }).view(2, 3);
        var mask = ones(2, 3, dtype: ScalarType.Int64);
        var x = randn(2, 3, 8);
        var specs = new[]
        {
            HookSpec.Capture("blocks.0.resid_post", Positions.At(1)),
            HookSpec.Capture("blocks.0.resid_post", Positions.Span(0, 2)),
            HookSpec.Capture("blocks.0.resid_post", Positions.LastToken),
            HookSpec.Capture("blocks.0.resid_post", Positions.OfToken(2)),
        };
        var runner = new HookRunner(new HookSet(specs), 2, ids, mask, 0, 2, 3, new Dictionary<string, Tensor>());
        foreach (var h in specs)
        {
            var idx = runner.Resolve(h, x.device)!;
            Assert.Equal((x.device_type, x.device_index), (idx.device_type, idx.device_index));
            Assert.Equal(2, idx.shape[0]);
        }
        var value = randn(2, 8);
        var added = new HookRunner(new HookSet(new[] { HookSpec.Add("blocks.0.resid_post", value, Positions.At(1)) }), 2, ids, mask, 0, 2, 3,
            new Dictionary<string, Tensor>()).At(HookSite.ResidPost, 0, x);
        Assert.Equal((x.device_type, x.device_index), (added.device_type, added.device_index));
        Assert.True((added - x).select(1, 1).allclose(value));
    }

    /// <summary>
    /// CPU tests cannot see a CUDA device mismatch, so the forward-path folders are held to a rule a reader can check:
    /// every tensor factory names a device, or its line moves the result with .to(dev…), or it makes a Parameter
    /// (which moves with the module).
    /// </summary>
    [Fact]
    public void ForwardPathTensorFactoriesNameTheirDevice()
    {
        var root = Path.Combine(RepoPaths.Root(), "src", "LatentLab");
        var factory = new Regex(@"(^|[^._A-Za-z])(arange|full|zeros|ones|tensor|empty|eye|tril|triu|randn|rand|linspace)\(");
        var offenders = new List<string>();
        foreach (var folder in new[] { "Hooks", "Models", "Generation" })
            foreach (var file in Directory.EnumerateFiles(Path.Combine(root, folder), "*.cs"))
                foreach (var (line, n) in File.ReadLines(file).Select((l, i) => (l, i + 1)))
                {
                    var code = line.Split("//")[0];
                    if (!factory.IsMatch(code) || code.Contains("device") || code.Contains(".to(dev") || code.Contains("new Parameter(")) continue;
                    offenders.Add($"{Path.GetFileName(file)}:{n}: {line.Trim()}");
                }
        Assert.True(offenders.Count == 0, "tensor factories without a device:\n" + string.Join("\n", offenders));
    }
}
