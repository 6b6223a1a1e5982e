using System.Diagnostics;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace LatentLab.Tensors;

/// <summary>
/// What a run computes its activations in, and why. <see cref="Requested"/> is what the user asked for (auto, f32,
/// bf16); <see cref="DType"/> what the run uses; the two probe figures are the GFLOP/s measured at the run's own
/// widths (null when nothing was measured: an explicit dtype, or a CUDA device).
/// </summary>
public sealed record ComputeChoice(string Requested, ScalarType DType, double? Bf16Gflops, double? F32Gflops, string Reason)
{
    public string Name => TorchRuntime.DTypeName(DType);

    /// <summary>One line for the log: "compute: f32 — bf16 measured 0.7 vs 61.0 GFLOP/s (f32) here".</summary>
    public string Describe() => $"compute: {Name} — {Reason}";

    public JsonObject ToJson() => new()
    {
        ["requested"] = Requested,
        ["dtype"] = Name,
        ["bf16_gflops"] = Bf16Gflops is { } b ? Math.Round(b, 2) : null,
        ["f32_gflops"] = F32Gflops is { } f ? Math.Round(f, 2) : null,
        ["reason"] = Reason,
    };

    public static ComputeChoice FromJson(JsonNode node)
    {
        string Str(string key) => node[key]?.GetValue<string>() ?? throw new InvalidDataException($"compute record lacks '{key}'");
        double? Num(string key) => node[key] is JsonValue v ? v.GetValue<double>() : null;
        return new ComputeChoice(Str("requested"), TorchRuntime.ParseDType(Str("dtype")), Num("bf16_gflops"), Num("f32_gflops"), Str("reason"));
    }
}

/// <summary>
/// The library's one dtype policy. bf16 halves the bytes a matmul moves and doubles its rate on hardware that has
/// native bf16 (AVX-512 BF16, AMX, recent GPUs); on a CPU without it (AVX2-only Zen 2, measured here at 0.7 vs 61
/// GFLOP/s) libtorch emulates it and runs up to ~90× slower. So `auto` never assumes: on a CPU it measures both
/// dtypes at the run's own widths for a few milliseconds and takes bf16 only when it is clearly faster; CUDA devices
/// with bf16 support take it without probing. Norms, softmax, RoPE and losses stay f32 either way (see DecoderLM).
/// </summary>
public static class ComputePolicy
{
    /// <summary>bf16 must beat f32 by this factor: the gain has to pay for its rounding, and small margins are noise.</summary>
    public const double Bf16Advantage = 1.2;

    /// <summary>Accepted spellings of the policy's input: auto, or any dtype <see cref="TorchRuntime.ParseDType"/> knows.</summary>
    public static void Validate(string requested)
    {
        if (!IsAuto(requested)) TorchRuntime.ParseDType(requested);
    }

    public static bool IsAuto(string requested) => requested.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// The decision itself, free of measurement so it can be tested: an explicit dtype is taken as given; on CUDA auto
    /// is bf16 where the device supports it; on a CPU auto is bf16 only when <paramref name="bf16Gflops"/> ≥
    /// <see cref="Bf16Advantage"/> × <paramref name="f32Gflops"/>.
    /// </summary>
    public static ComputeChoice Decide(string requested, bool cuda, bool cudaBf16, double? bf16Gflops, double? f32Gflops)
    {
        if (!IsAuto(requested))
        {
            var dt = TorchRuntime.ParseDType(requested);
            return new ComputeChoice(requested.Trim().ToLowerInvariant(), dt, bf16Gflops, f32Gflops, "as requested");
        }
        if (cuda)
            return cudaBf16
                ? new ComputeChoice("auto", ScalarType.BFloat16, null, null, "CUDA device with bf16 support")
                : new ComputeChoice("auto", ScalarType.Float32, null, null, "CUDA device without bf16 support");
        if (bf16Gflops is not { } b || f32Gflops is not { } f)
            throw new ArgumentException("compute auto on a CPU needs both probe figures");
        bool bf16 = b >= Bf16Advantage * f;
        var why = $"bf16 measured {b:F1} vs {f:F1} GFLOP/s (f32) here" +
                  (bf16 ? $", ≥ {Bf16Advantage}× faster" : $", not ≥ {Bf16Advantage}× faster");
        return new ComputeChoice("auto", bf16 ? ScalarType.BFloat16 : ScalarType.Float32, b, f, why);
    }

    /// <summary>Resolves <paramref name="requested"/> on <paramref name="device"/>, probing at <paramref name="shapes"/> when auto on a CPU.</summary>
    public static ComputeChoice Resolve(string requested, Device device, IReadOnlyList<(int In, int Out)> shapes)
    {
        Validate(requested);
        if (!IsAuto(requested)) return Decide(requested, false, false, null, null);
        if (device.type == TorchSharp.DeviceType.CUDA)
            return Decide(requested, true, CudaSupportsBf16(device), null, null);
        var (b, f) = Probe(device, shapes);
        return Decide(requested, false, false, b, f);
    }

    /// <summary>The (in, out) widths of a decoder's matmuls: residual → MLP, and residual → attention.</summary>
    public static IReadOnlyList<(int In, int Out)> Shapes(Models.TransformerConfig c) =>
        new[] { (c.HiddenSize, c.IntermediateSize), (c.HiddenSize, c.NumHeads * c.HeadDim) }.Distinct().ToArray();

    /// <summary>Key of the choice in a Trainer's config.json (under <c>run</c>) and in a study's (at the top, beside the options).</summary>
    public const string RecordKey = "compute", StudyRecordKey = "compute_choice";

    /// <summary>
    /// The choice a run folder already made, when its <paramref name="configPath"/> (a Trainer's config.json, where it
    /// is <c>run.compute</c>, or a study's, where it is <c>compute_choice</c> beside the options) records one for the same
    /// request: a resumed run keeps the dtype it started with, whatever a probe would say now, so that it stays
    /// bit-exact. Null when there is no such record.
    /// </summary>
    public static ComputeChoice? Recorded(string configPath, string requested)
    {
        if (!File.Exists(configPath)) return null;
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(configPath)); }
        catch (System.Text.Json.JsonException) { return null; }
        var rec = node?["run"]?[RecordKey] is JsonObject inRun ? inRun : node?[StudyRecordKey] as JsonObject;
        if (rec is null) return null;
        var choice = ComputeChoice.FromJson(rec);
        return string.Equals(choice.Requested, requested.Trim().ToLowerInvariant(), StringComparison.Ordinal) ? choice : null;
    }

    /// <summary><see cref="Recorded"/> if the run folder has a choice for this request, else <see cref="Resolve"/>.</summary>
    public static ComputeChoice ForRun(string requested, Device device, IReadOnlyList<(int In, int Out)> shapes, string configPath) =>
        Recorded(configPath, requested) ?? Resolve(requested, device, shapes);

    /// <summary>
    /// Resolves <paramref name="requested"/> for <paramref name="model"/> (its widths, its device; the choice recorded in
    /// <paramref name="runConfigPath"/> when the run is resumed), sets the model's compute dtype and says so once.
    /// The returned choice belongs in the run's config.json under <c>run.compute</c>.
    /// </summary>
    public static ComputeChoice Apply(string requested, Models.DecoderLM model, string? runConfigPath, TextWriter? log)
    {
        var shapes = Shapes(model.Config);
        var choice = runConfigPath is null ? Resolve(requested, model.Device, shapes) : ForRun(requested, model.Device, shapes, runConfigPath);
        model.ComputeDType = choice.DType;
        log?.WriteLine(choice.Describe());
        return choice;
    }

    /// <summary>
    /// Best GFLOP/s (fastest of the interleaved passes) of the matmuls a linear layer runs at these (in, out) widths (at least 512 rows, the weight
    /// cast included as DecoderLM does it), in bf16 and f32. A few milliseconds where bf16 is native; where it
    /// is emulated (ONEDNN_MAX_CPU_ISA=AVX2 reproduces that on a bf16-capable CPU) two passes settle it.
    /// </summary>
    public static (double Bf16, double F32) Probe(Device device, IReadOnlyList<(int In, int Out)> widths, int rows = 512, int repeats = 7)
    {
        var (t16, t32, flops) = ProbeSamples(device, widths, rows, repeats);
        return (flops / t16.Min() / 1e9, flops / t32.Min() / 1e9);
    }

    /// <summary>
    /// The probe's raw samples: seconds per pass over the widths, bf16 and f32 interleaved (after one warm-up of each),
    /// and the FLOPs of one pass. <see cref="Probe"/> rates each dtype by its fastest pass: load from other processes
    /// only ever slows a pass, so the fastest is the closest to what the hardware does, where a median of a few passes
    /// can be dragged down for one dtype by a burst that happened to fall on its passes.
    /// </summary>
    public static (List<double> Bf16Seconds, List<double> F32Seconds, double Flops) ProbeSamples(Device device, IReadOnlyList<(int In, int Out)> widths,
        int rows = 512, int repeats = 7)
    {
        TorchRuntime.Initialize();
        if (widths.Count == 0 || widths.Any(w => w.In < 1 || w.Out < 1)) throw new ArgumentException("compute probe needs positive (in, out) widths");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var shapes = widths.Select(w => (In: (long)w.In, Out: (long)w.Out)).ToList();
        // Constant operands: the rate does not depend on the values, and the probe must not draw from the global RNG
        // (a run that probes would otherwise initialise differently from one given an explicit dtype).
        // At small widths a 512-row matmul takes microseconds and timer noise would decide; give each at least ~20
        // MFLOP by adding rows (more tokens per batch is what such a model sees anyway).
        long Rows((long In, long Out) s) => Math.Max(rows, (long)Math.Ceiling(2e7 / (2.0 * s.In * s.Out)));
        var inputs = shapes.Select(s => full(Rows(s), s.In, 0.01f, device: device)).ToList();
        var weights = shapes.Select(s => full(s.Out, s.In, 0.02f, device: device)).ToList();
        double flops = shapes.Sum(s => 2.0 * Rows(s) * s.In * s.Out);

        double Once(ScalarType dt)
        {
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < shapes.Count; i++)
            {
                using var inner = NewDisposeScope();
                var x = dt == ScalarType.Float32 ? inputs[i] : inputs[i].to(dt);
                var w = dt == ScalarType.Float32 ? weights[i] : weights[i].to(dt);
                nn.functional.linear(x, w).Dispose();
            }
            return sw.Elapsed.TotalSeconds;
        }

        // Interleaved samples, so that a burst of load from another process hits both dtypes alike; the median of each.
        Once(ScalarType.Float32);
        Once(ScalarType.BFloat16);
        var t32 = new List<double>();
        var t16 = new List<double>();
        for (int r = 0; r < repeats; r++)
        {
            t32.Add(Once(ScalarType.Float32));
            t16.Add(Once(ScalarType.BFloat16));
            // Emulated bf16 (~90× slower): two passes settle it, the rest would take seconds. Not one: a single pass
            // preempted by another process can be 50× slow on native bf16 (the probe bench caught it picking f32 so).
            if (t16.Count >= 2 && t16.Min() > 10 * t32.Min()) break;
        }
        return (t16, t32, flops);
    }

    static bool CudaSupportsBf16(Device device)
    {
        // Ampere (compute capability 8) and later have bf16 tensor cores; TorchSharp exposes no capability query,
        // so ask the device to do a bf16 matmul and treat failure as "not supported".
        try
        {
            using var scope = NewDisposeScope();
            var a = ones(8, 8, dtype: ScalarType.BFloat16, device: device);
            a.matmul(a).cpu().Dispose();
            return true;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return false;
        }
    }
}
