using System.Diagnostics;
using LatentLab.Hooks;
using LatentLab.Models;
using LatentLab.Tensors;
using static TorchSharp.torch;

// Benchmarks print throughput as a fraction of a yardstick measured in this same process: the best rate of square
// matmuls (256, 512, 1024, 2048) per dtype. So the figures mean the same on any machine, and a fraction above 100%
// would mean the yardstick is wrong. Usage: dotnet run -c Release --project bench/LatentLab.Bench [train|teacher [HIDDEN LAYERS]|extract|checksum|probe|all]
var which = args.Length > 0 ? args[0] : "all";
if (which == "checksum")
{
    // I/O only: no matmul yardstick needed (the ratios here are against reading the same files).
    ChecksumBench.Run();
    return;
}
TorchRuntime.Initialize();
Console.WriteLine($"cpu: {CpuInfo.Describe()}");
if (which == "probe")
{
    // The compute probe's spread on this machine: 12 probes at the demo teacher's widths, each rated two ways (the
    // fastest pass, what ComputePolicy uses, and the median pass), with the choice each rating would make. Run it
    // quiet and again beside a load (e.g. a build) to see which rating keeps its choice.
    var shapes = ComputePolicy.Shapes(LatentLab.Teacher.TeacherModel.DefaultConfig(
        LatentLab.Teacher.TeacherFormat.Create(LatentLab.Tasks.TaskRegistry.Get("addition")).Tokenizer));
    static double Mid(List<double> t) { var c = t.OrderBy(x => x).ToList(); return c[c.Count / 2]; }
    string Pick(double b, double f) => b >= ComputePolicy.Bf16Advantage * f ? "bf16" : "f32";
    int bestFlips = 0, medianFlips = 0;
    string? firstBest = null, firstMedian = null;
    for (int i = 0; i < 12; i++)
    {
        var (t16, t32, flops) = ComputePolicy.ProbeSamples(CPU, shapes);
        double bb = flops / t16.Min() / 1e9, bf = flops / t32.Min() / 1e9, mb = flops / Mid(t16) / 1e9, mf = flops / Mid(t32) / 1e9;
        string pb = Pick(bb, bf), pm = Pick(mb, mf);
        firstBest ??= pb;
        firstMedian ??= pm;
        if (pb != firstBest) bestFlips++;
        if (pm != firstMedian) medianFlips++;
        Console.WriteLine($"probe {i + 1,2}: fastest pass bf16 {bb,6:F1} f32 {bf,6:F1} GFLOP/s → {pb,-4}   median pass bf16 {mb,6:F1} f32 {mf,6:F1} → {pm}");
    }
    Console.WriteLine($"choices that differ from the first probe's: fastest-pass rating {bestFlips}/11, median-pass rating {medianFlips}/11");
    return;
}
Console.WriteLine($"threads={get_num_threads()}  fix-up: {TorchRuntime.FixupStatus}");

var yard = new Dictionary<ScalarType, double>();
foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
{
    // Two passes over the ladder, the best of each size kept: the first pass also warms the thread pool and the clock,
    // which a single pass measured at 2.8 GFLOP/s for 256³ and let a model's forward pass "beat" the yardstick.
    // The ladder stops at the first size whose matmul takes over half a second: emulated bf16 on an AVX2-only EPYC
    // runs near 3 GFLOP/s, where the full ladder took minutes before the benchmark proper began.
    var sizes = new[] { 256, 512, 1024, 2048 };
    var rates = new List<(int n, double g)>();
    foreach (var n in sizes)
    {
        double g = Enumerable.Range(0, 2).Max(_ => Throughput.MatmulGflops(n, dt, repeats: n >= 2048 ? 5 : 20));
        rates.Add((n, g));
        if (2.0 * n * n * n / (g * 1e9) > 0.5) break;
    }
    yard[dt] = rates.Max(r => r.g);
    Console.WriteLine($"yardstick {TorchRuntime.DTypeName(dt)}: {yard[dt]:F1} GFLOP/s (best of " +
                      string.Join(", ", rates.Select(r => $"{r.n}³ {r.g:F1}")) + ")");
}
string Of(double gflops, ScalarType dt) => $"{gflops:F1} GFLOP/s = {gflops / yard[dt]:P0} of the {TorchRuntime.DTypeName(dt)} yardstick";

// Timing: one warm-up, then the median of `reps` runs.
static double Median(int reps, Action run)
{
    run();
    var t = new List<double>();
    for (int i = 0; i < reps; i++)
    {
        var sw = Stopwatch.StartNew();
        run();
        t.Add(sw.Elapsed.TotalSeconds);
    }
    t.Sort();
    return t[t.Count / 2];
}

if (which is "train" or "all")
{
    var teacher = LatentLab.Teacher.TeacherModel.DefaultConfig(LatentLab.Teacher.TeacherFormat.Create(LatentLab.Tasks.TaskRegistry.Get("addition")).Tokenizer);
    var auto = ComputePolicy.Resolve("auto", CPU, ComputePolicy.Shapes(teacher));
    Console.WriteLine($"demo teacher (d={teacher.HiddenSize}): {auto.Describe()}");

    // A 4-layer d=256 model at 8 × 256 tokens: forward + backward + AdamW step; training FLOPs = 3 × forward.
    var cfg = new TransformerConfig
    {
        VocabSize = 256, HiddenSize = 256, NumLayers = 4, NumHeads = 8, NumKvHeads = 8, HeadDim = 32,
        IntermediateSize = 1024, MaxPositions = 512,
    };
    foreach (var compute in new[] { ScalarType.Float32, ScalarType.BFloat16 })
    {
        TorchRuntime.Seed(0);
        using var model = new DecoderLM(cfg) { ComputeDType = compute };
        using var opt = optim.AdamW(model.parameters(), lr: 1e-3);
        using var ids = randint(0, cfg.VocabSize, new long[] { 8, 257 });
        using var x = ids.narrow(1, 0, 256);
        using var y = ids.narrow(1, 1, 256);
        double secs = Median(5, () =>
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            using var o = model.Forward(x);
            nn.functional.cross_entropy(o.Logits!.view(-1, cfg.VocabSize), y.reshape(-1)).backward();
            opt.step();
        });
        double gflops = 3 * Throughput.DecoderForwardFlops(cfg, 8, 256) / secs / 1e9;
        Console.WriteLine($"train step 4L d=256 8x256, compute {TorchRuntime.DTypeName(compute)}: {8 * 256 / secs:F0} tokens/s, " +
                          $"{Of(gflops, ScalarType.Float32)} (goal ≥ 60%)" +
                          (compute == ScalarType.Float32 ? "" : $"; {gflops / yard[compute]:P0} of the {TorchRuntime.DTypeName(compute)} yardstick"));
    }
}

if (which is "teacher" or "all")
{
    // The demo teacher's own training step, timed by part: batch construction (problems, traces, layouts) on the
    // CPU, forward + loss, backward, clipping + AdamW. Where the time goes decides what a faster demo must change.
    // Optional width and depth after the mode (`teacher 96 3`): the step cost of a narrower teacher on this CPU.
    var o = new LatentLab.Teacher.TeacherOptions { BottleneckSlots = 4 };
    if (args.Length >= 3 && which == "teacher") o = o with { Hidden = int.Parse(args[1]), Layers = int.Parse(args[2]) };
    var fmt = LatentLab.Teacher.TeacherFormat.Create(LatentLab.Tasks.TaskRegistry.Get(o.Task), o.BottleneckSlots);
    var cfg = LatentLab.Teacher.TeacherModel.DefaultConfig(fmt.Tokenizer, o.Hidden, o.Layers, o.Heads);
    int difficulty = fmt.Family.Difficulty.Default;
    foreach (var compute in new[] { ScalarType.Float32, ScalarType.BFloat16 })
    {
        TorchRuntime.Seed(0);
        using var model = new DecoderLM(cfg) { ComputeDType = compute };
        model.train();
        using var opt = optim.AdamW(model.parameters(), lr: 1e-3);
        var parameters = model.parameters().ToList();
        double data = 0, fwd = 0, bwd = 0, upd = 0;
        long tokens = 0, lossTokens = 0;
        const int steps = 20;
        for (int step = -3; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            var sw = Stopwatch.StartNew();
            var (ids, targets, mask, lt, positions, expiry) = LatentLab.Teacher.TeacherTraining.BatchTensors(fmt, o, difficulty, step + 3, 0);
            double t0 = sw.Elapsed.TotalSeconds;
            opt.zero_grad();
            using var output = model.Forward(ids, attentionMask: mask, positions: positions, keyExpiry: expiry);
            var loss = nn.functional.cross_entropy(output.Logits!.view(-1, cfg.VocabSize), targets.view(-1), ignore_index: -100);
            loss.item<float>();
            double t1 = sw.Elapsed.TotalSeconds;
            loss.backward();
            double t2 = sw.Elapsed.TotalSeconds;
            LatentLab.Training.Gradients.ClipGlobalNorm(parameters, 1.0);
            opt.step();
            double t3 = sw.Elapsed.TotalSeconds;
            if (step < 0) continue; // warm-up
            data += t0; fwd += t1 - t0; bwd += t2 - t1; upd += t3 - t2;
            tokens += ids.numel(); lossTokens += lt;
        }
        double total = data + fwd + bwd + upd;
        double gflops = 3 * Throughput.DecoderForwardFlops(cfg, 1, 1) * tokens / total / 1e9;
        Console.WriteLine($"teacher d={o.Hidden} × {o.Layers} step (batch {o.BatchSize}, {tokens / steps} tokens/step, {lossTokens / steps} loss tokens), compute {TorchRuntime.DTypeName(compute)}: " +
                          $"{total / steps * 1e3:F0} ms/step = data {data / total:P0}, forward {fwd / total:P0}, backward {bwd / total:P0}, update {upd / total:P0}; " +
                          $"{lossTokens / total:F0} loss tokens/s, ~{Of(gflops, compute)}");
    }
}

if (which is "extract" or "all")
{
    // Batched hidden-state extraction as `shortcut extract` runs it: a forward pass without gradients that captures
    // one residual point and computes no logits. FLOPs exclude the LM head (not computed), so the figure compares with
    // llama.cpp's prompt evaluation (llama-bench -p N) on the same weights.
    var shapes = new (string Name, TransformerConfig Config)[]
    {
        ("A: llama d256 4L 8h ffn1024 v4096", Llama(256, 4, 8, 8, 1024, 4096)),
        ("B: llama d512 8L 8h ffn1408 v32000", Llama(512, 8, 8, 8, 1408, 32000)),
        ("B-GQA: 2 kv heads", Llama(512, 8, 8, 2, 1408, 32000)),
    };
    foreach (var (name, cfg) in shapes)
        foreach (int len in new[] { 256, 1024 })
            foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            {
                TorchRuntime.Seed(0);
                using var model = new DecoderLM(cfg);
                model.eval();
                model.ComputeDType = dt;
                using var ids = randint(0, cfg.VocabSize, new long[] { 1, len });
                var hooks = new HookSet(new[] { HookSpec.Capture("blocks.-2.resid_post") });
                double secs = Median(len >= 1024 ? 3 : 5, () =>
                {
                    using var _ = no_grad();
                    using var o = model.Forward(ids, hooks: hooks, logits: LogitsMode.None);
                });
                double flops = Throughput.DecoderForwardFlops(cfg, 1, len) - 2.0 * cfg.HiddenSize * cfg.VocabSize * len;
                Console.WriteLine($"extract {name}, 1x{len}, compute {TorchRuntime.DTypeName(dt)}: {len / secs:F0} tokens/s, {Of(flops / secs / 1e9, dt)}");
            }
}

static TransformerConfig Llama(int d, int layers, int heads, int kvHeads, int ffn, int vocab) => new()
{
    Architecture = "LlamaForCausalLM", VocabSize = vocab, HiddenSize = d, NumLayers = layers, NumHeads = heads, NumKvHeads = kvHeads,
    HeadDim = d / heads, IntermediateSize = ffn, MaxPositions = 2048, RopeTheta = 500000,
};

/// <summary>The CPU's model name and the flags that decide matmul speed, from /proc/cpuinfo.</summary>
static class CpuInfo
{
    public static string Describe()
    {
        const string path = "/proc/cpuinfo";
        if (!File.Exists(path)) return $"{Environment.ProcessorCount} cores (no /proc/cpuinfo)";
        var lines = File.ReadAllLines(path);
        string Field(string key) => lines.FirstOrDefault(l => l.StartsWith(key))?.Split(':', 2)[1].Trim() ?? "?";
        var flags = Field("flags").Split(' ').ToHashSet();
        var matter = new[] { "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile" };
        return $"{Field("model name")}, {Environment.ProcessorCount} cores, flags: " +
               string.Join(" ", matter.Select(f => flags.Contains(f) ? f : "-" + f));
    }
}
