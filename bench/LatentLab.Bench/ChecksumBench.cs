using System.Diagnostics;
using System.IO.Hashing;
using System.Numerics;
using System.Security.Cryptography;
using LatentLab.IO;
using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Tensors;
using LatentLab.Training;
using static TorchSharp.torch;

/// <summary>
/// What verifying checksums costs. First the candidate algorithms on buffers of the sizes in use (a latent shard of
/// 256 rows at d = 128 and d = 1024, the teacher checkpoint's model and optimiser files, a 64 MiB shard of a larger
/// model), then the chosen one inside the operations it guards: a trainer resume, and LatentStore.Open + Load. Files
/// sit in the page cache (best of 7 runs), the worst case for the ratio: from a cold disk the read is slower, the hash the same.
/// </summary>
static class ChecksumBench
{
    public static void Run()
    {
        TorchRuntime.Initialize();
        Console.WriteLine($"cpu: {CpuInfo.Describe()}");
        var rng = new Random(1);
        (string Name, int Bytes)[] sizes =
        [
            ("latent shard 256x(1+1)x128 f32", 256 * 2 * 128 * 4),
            ("teacher model.safetensors", 3_300_000),
            ("teacher optimizer.safetensors", 6_600_000),
            ("latent shard 256x(1+4)x1024 f32", 256 * 5 * 1024 * 4),
            ("64 MiB", 64 << 20),
        ];
        var algorithms = new (string Name, Func<byte[], ulong> Hash)[]
        {
            ("SHA-256", b => BitConverter.ToUInt64(SHA256.HashData(b))),
            ("CRC-32 (System.IO.Hashing)", b => Crc32.HashToUInt32(b)),
            ("CRC-32C (BitOperations)", Crc32C),
            ("XXH64", b => XxHash64.HashToUInt64(b)),
            ("XXH3-64", b => XxHash3.HashToUInt64(b)),
        };
        Console.WriteLine("in-memory hash throughput, GB/s (best of 5):");
        Console.WriteLine("  " + "size".PadRight(34) + string.Concat(algorithms.Select(a => a.Name.PadLeft(28))));
        foreach (var (name, bytes) in sizes)
        {
            var buf = new byte[bytes];
            rng.NextBytes(buf);
            var row = "  " + name.PadRight(34);
            foreach (var (_, hash) in algorithms) row += $"{bytes / Best(() => hash(buf), 5) / 1e9,28:F2}";
            Console.WriteLine(row);
        }

        Console.WriteLine($"  => XXH3-64 ({FileChecksum.Prefix}…); the files' checksums are taken with {nameof(FileChecksum)}.{nameof(FileChecksum.OfFile)}");

        var dir = Directory.CreateTempSubdirectory("ll-bench-checksum").FullName;
        var clock = Stopwatch.StartNew();
        try
        {
            Console.Error.WriteLine($"[{clock.Elapsed.TotalSeconds:F1} s]");
            ResumeCost(Path.Combine(dir, "run"));
            Console.Error.WriteLine($"[{clock.Elapsed.TotalSeconds:F1} s]");
            StoreCost(Path.Combine(dir, "store-d128"), hidden: 128, layers: 4, heads: 4, k: 1, problems: 256);
            Console.Error.WriteLine($"[{clock.Elapsed.TotalSeconds:F1} s]");
            // One shard's worth at a Qwen3-0.6B width (the extraction itself is what takes time here).
            StoreCost(Path.Combine(dir, "store-d1024"), hidden: 1024, layers: 1, heads: 8, k: 4, problems: 256);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    static double Best(Action a, int reps)
    {
        a();
        double best = double.MaxValue;
        for (int i = 0; i < reps; i++)
        {
            var sw = Stopwatch.StartNew();
            a();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return best;
    }

    static double HashAll(IEnumerable<string> files) => Best(() => { foreach (var f in files) FileChecksum.OfFile(f); }, 7);

    /// <summary>
    /// The demo teacher (d = 128, 4 layers) trained one step with a checkpoint, then resumed: Trainer.Run on the
    /// finished run finds the newest checkpoint (verifying it), restores weights, AdamW state and RNG, and returns.
    /// </summary>
    static void ResumeCost(string dir)
    {
        var fmt = TeacherFormat.Create(TaskRegistry.Get("addition"));
        TorchRuntime.Seed(0);
        using var model = new DecoderLM(TeacherModel.DefaultConfig(fmt.Tokenizer));
        var trainable = new Trainable(model, (_, _) =>
        {
            var ids = randint(0, model.Config.VocabSize, [4, 16]);
            return new TrainLoss(model.Forward(ids).Logits!.pow(2).mean(), 64);
        });
        var cfg = new TrainerConfig { Steps = 1, WarmupSteps = 0, CheckpointEvery = 1, OutDir = dir, ProgressBar = false };
        new Trainer(cfg, log: TextWriter.Null).Run(trainable);
        double resume = Best(() => new Trainer(cfg, log: TextWriter.Null).Run(trainable), 7);
        var folder = RunCheckpoints.FindLatest(Path.Combine(dir, "checkpoints"))!.Path;
        var files = Directory.GetFiles(folder);
        // The resume hashes each tensor's bytes right after reading them (SafetensorsFile.ReadAllHashed), so what it
        // adds is an in-memory hash of the same bytes; a separate pass over the files is shown for comparison.
        var contents = files.Select(File.ReadAllBytes).ToList();
        double fused = Best(() => { foreach (var b in contents) XxHash3.HashToUInt64(b); }, 7);
        double separate = HashAll(files);
        long bytes = contents.Sum(b => (long)b.Length);
        Console.WriteLine($"resume of the demo teacher ({bytes / 1e6:F1} MB checkpoint, Trainer.Run: find, verify, restore): {resume * 1e3:F1} ms, " +
                          $"of which checksums {fused * 1e3:F2} ms = +{fused / (resume - fused):P1} over a resume without them " +
                          $"(a separate pass over the files would take {separate * 1e3:F2} ms, +{separate / (resume - fused):P1})");
    }

    /// <summary>A store from a random model of width <paramref name="hidden"/>, in shards of 256 rows (the default): LatentStore.Open + Load.</summary>
    static void StoreCost(string dir, int hidden, int layers, int heads, int k, int problems)
    {
        var family = TaskRegistry.Get("addition");
        var fmt = TeacherFormat.Create(family);
        TorchRuntime.Seed(0);
        using var model = new DecoderLM(TeacherModel.DefaultConfig(fmt.Tokenizer, hidden, layers, heads));
        model.eval();
        var list = TaskSplits.Generate(family, Split.Train, problems, 4, 1);
        var o = new ExtractionOptions { Trace = TraceMode.Reference, K = k, MaxNewTokens = 1, BatchSize = 128, Point = "blocks.-1.resid_post" };
        LatentExtraction.Run(model, fmt.Tokenizer, fmt, list, o, dir);
        double read = Best(() =>
        {
            using var set = LatentStore.Open(dir).Load(verifiedOnly: false);
        }, 7);
        var shards = Directory.GetFiles(dir, "latents-*.safetensors");
        double hash = HashAll(shards.Append(Path.Combine(dir, LatentStore.SamplesFile)));
        long bytes = shards.Sum(f => new FileInfo(f).Length);
        Console.WriteLine($"store read, d = {hidden}, K = {k} ({shards.Length} shard(s) of 256 rows, {bytes / 1e6:F1} MB + samples.jsonl): LatentStore.Open + Load {read * 1e3:F1} ms, " +
                          $"of which checksums {hash * 1e3:F2} ms = +{hash / (read - hash):P1} over a read without them");
    }

    static ulong Crc32C(byte[] b)
    {
        uint crc = ~0u;
        var longs = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(b);
        foreach (var v in longs) crc = BitOperations.Crc32C(crc, v);
        for (int i = longs.Length * 8; i < b.Length; i++) crc = BitOperations.Crc32C(crc, b[i]);
        return ~crc;
    }
}
