using TorchSharp;
using System.Diagnostics;
using LatentLab.Models;
using LatentLab.Tensors;
using static TorchSharp.torch;

// Benchmarks print throughput as a fraction of the matmul rate measured in this same process, so the
// figures mean the same on any machine. Usage: dotnet run -c Release --project bench/LatentLab.Bench [train|forward|checksum|all]
var which = args.Length > 0 ? args[0] : "all";
if (which == "checksum")
{
    // I/O only: no matmul yardstick needed (the ratios here are against reading the same files).
    ChecksumBench.Run();
    return;
}
TorchRuntime.Initialize();
Console.WriteLine($"threads={TorchSharp.torch.get_num_threads()}  fix-up: {TorchRuntime.FixupStatus}");
double peak32 = Throughput.MatmulGflops(1024, ScalarType.Float32);
double peak16 = Throughput.MatmulGflops(1024, ScalarType.BFloat16);
Console.WriteLine($"matmul 1024³: f32 {peak32:F1} GFLOP/s, bf16 {peak16:F1} GFLOP/s");

if (which is "train" or "all")
{
    // The demo teacher's shape, trained on 4-digit addition traces: forward + backward + AdamW step.
    var family = LatentLab.Tasks.TaskRegistry.Get("addition");
    var fmt = LatentLab.Teacher.TeacherFormat.Create(family);
    var problems = LatentLab.Tasks.TaskSplits.Generate(family, LatentLab.Tasks.Split.Train, int.Parse(Environment.GetEnvironmentVariable("BENCH_BATCH") ?? "64"), 4, 1);
    foreach (var compute in new[] { ScalarType.Float32, ScalarType.BFloat16 })
    {
        var cfg = LatentLab.Teacher.TeacherModel.DefaultConfig(fmt.Tokenizer);
        TorchRuntime.Seed(0);
        using var model = new DecoderLM(cfg) { ComputeDType = compute };
        var opt = optim.AdamW(model.parameters(), lr: 1e-3);
        var (ids, tgt, mask, lossTokens) = fmt.Batch(problems.Select(p => fmt.Sequence(p, true)).ToList());
        void Step()
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            using var o = model.Forward(ids, attentionMask: mask);
            var loss = nn.functional.cross_entropy(o.Logits!.view(-1, cfg.VocabSize), tgt.view(-1), ignore_index: -100);
            loss.backward();
            opt.step();
        }
        Step();
        int reps = 5;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++) Step();
        double secs = sw.Elapsed.TotalSeconds / reps;
        long tokens = ids.numel();
        double gflops = 3 * Throughput.DecoderForwardFlops(cfg, ids.shape[0], ids.shape[1]) / secs / 1e9;
        Console.WriteLine($"teacher train step (d={cfg.HiddenSize}, {cfg.NumLayers} layers, batch {ids.shape[0]}x{ids.shape[1]}), compute {TorchRuntime.DTypeName(compute)}: " +
                          $"{tokens / secs:F0} tokens/s, {gflops:F1} GFLOP/s = {gflops / peak32:P0} of the f32 matmul rate");
    }
}

if (which is "forward" or "all")
{
    foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
    {
        var cfg = new TransformerConfig
        {
            VocabSize = 256, HiddenSize = 256, NumLayers = 4, NumHeads = 8, NumKvHeads = 8, HeadDim = 32,
            IntermediateSize = 1024, MaxPositions = 512,
        };
        TorchRuntime.Seed(0);
        using var model = new DecoderLM(cfg);
        model.to(dtype);
        model.eval();
        using var ids = randint(0, cfg.VocabSize, new long[] { 8, 256 });
        using (no_grad()) { using var warm = model.Forward(ids); }
        int reps = 5;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++)
        {
            using var _ = no_grad();
            using var o = model.Forward(ids);
        }
        double secs = sw.Elapsed.TotalSeconds / reps;
        double tokens = 8 * 256 / secs;
        double gflops = Throughput.DecoderForwardFlops(cfg, 8, 256) / secs / 1e9;
        double peak = dtype == ScalarType.Float32 ? peak32 : peak16;
        Console.WriteLine($"forward 4L d=256 8x256 {TorchRuntime.DTypeName(dtype)}: {tokens:F0} tokens/s, {gflops:F1} GFLOP/s = {gflops / peak:P0} of the {TorchRuntime.DTypeName(dtype)} matmul rate");
    }
}
