using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using static TorchSharp.torch;

namespace LatentLab.Tests;

/// <summary>Small models and problem sets shared by the latent-store tests.</summary>
internal static class LatentTestKit
{
    public static ITaskFamily Addition => TaskRegistry.Get("addition");

    /// <summary>An untrained char-level decoder over the addition alphabet: fast, and deterministic per seed.</summary>
    public static (DecoderLM Model, TeacherFormat Fmt) RandomTeacher(long seed = 0, int hidden = 32)
    {
        TorchRuntime.Initialize();
        var fmt = TeacherFormat.Create(Addition);
        TorchRuntime.Seed(seed);
        var model = new DecoderLM(TeacherModel.DefaultConfig(fmt.Tokenizer, hidden, layers: 2, heads: 2));
        model.eval();
        return (model, fmt);
    }

    public static IReadOnlyList<TaskProblem> Problems(int n, int digits = 2, long seed = 1, Split split = Split.Train) =>
        TaskSplits.Generate(Addition, split, n, digits, seed);

    /// <summary>Reference traces: a random model never closes its own think block.</summary>
    public static ExtractionOptions Reference(int k = 1, string point = "blocks.-1.resid_post") =>
        new() { Trace = TraceMode.Reference, K = k, Point = point, MaxNewTokens = 4, BatchSize = 8 };

    public static void AssertSame(Tensor expected, Tensor actual, double tol = 0)
    {
        Assert.Equal(expected.shape, actual.shape);
        if (tol == 0) Assert.True(expected.eq(actual).all().item<bool>(), "tensors differ");
        else Assert.True(expected.allclose(actual, rtol: 0, atol: tol), $"tensors differ by {(expected - actual).abs().max().item<float>()}");
    }
}
