using LatentLab.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Tensors;

/// <summary>
/// The one place that prepares TorchSharp: native fix-up, thread count, device parsing and seeding.
/// Call <see cref="Initialize"/> before the first tensor; it is idempotent and thread-safe.
/// </summary>
public static class TorchRuntime
{
    static readonly object Gate = new();
    static bool _initialized;

    /// <summary>What the first-start fix-up did (for `latentlab inspect` and bug reports).</summary>
    public static string FixupStatus { get; private set; } = "not run";

    public static void Initialize(int? threads = null)
    {
        lock (Gate)
        {
            if (_initialized) return;
            if (OperatingSystem.IsLinux())
            {
                // The build already patched the output copy; this covers hosts that copied the
                // native folder by other means (a publish, a user's own project).
                var dir = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native");
                try { FixupStatus = GlibcxxFixup.EnsureLoadable(Directory.Exists(dir) ? dir : AppContext.BaseDirectory); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    FixupStatus = "could not patch: " + e.Message;
                }
            }
            int n = threads ?? Environment.ProcessorCount;
            torch.set_num_threads(Math.Max(1, n));
            _initialized = true;
        }
    }

    /// <summary>Parses `cpu`, `cuda`, `cuda:1`; a CUDA request on a CPU build is a clear error.</summary>
    public static Device ParseDevice(string name)
    {
        Initialize();
        var d = name.Trim().ToLowerInvariant();
        if (d == "cpu") return CPU;
        if (d.StartsWith("cuda"))
        {
            if (!cuda.is_available())
                throw new ArgumentException($"device '{name}' requested but CUDA is not available (build with -p:LatentLabTorch=cuda on a machine with an NVIDIA GPU)");
            return new Device(d);
        }
        throw new ArgumentException($"unknown device '{name}': use cpu or cuda[:N]");
    }

    /// <summary>Parses f32 / bf16 / f16 / f64 (and their long spellings).</summary>
    public static ScalarType ParseDType(string name) => name.Trim().ToLowerInvariant() switch
    {
        "f32" or "fp32" or "float32" or "float" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        "f16" or "fp16" or "float16" or "half" => ScalarType.Float16,
        "f64" or "fp64" or "float64" or "double" => ScalarType.Float64,
        _ => throw new ArgumentException($"unknown dtype '{name}': use f32, bf16, f16 or f64"),
    };

    public static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "f32",
        ScalarType.BFloat16 => "bf16",
        ScalarType.Float16 => "f16",
        ScalarType.Float64 => "f64",
        _ => t.ToString(),
    };

    /// <summary>Seeds torch (CPU and CUDA) so runs repeat.</summary>
    public static void Seed(long seed)
    {
        Initialize();
        torch.manual_seed(seed);
        if (cuda.is_available()) torch.cuda.manual_seed_all(seed);
    }
}
