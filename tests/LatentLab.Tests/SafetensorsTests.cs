using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using LatentLab.IO;
using LatentLab.Tensors;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Tests;

public sealed class SafetensorsTests : SafetensorsTestKit
{
    public SafetensorsTests() => TorchRuntime.Initialize();

    static readonly long[][] Shapes = [[], [0], [2, 0, 3], [7], [3, 5], [2, 3, 4]];

    /// <summary>A tensor whose bytes are random, so NaN payloads, signed zeros and subnormals all take part.</summary>
    static Tensor RandomBits(ScalarType dtype, long[] shape, Random rng)
    {
        var t = torch.empty(shape, dtype);
        if (t.NumberOfElements == 0) return t;
        var span = t.bytes;
        rng.NextBytes(span);
        if (dtype == ScalarType.Bool)
            for (int i = 0; i < span.Length; i++) span[i] &= 1;
        return t;
    }

    [Fact]
    public void EveryDTypeAndShapeRoundTripsBitIdentically()
    {
        var rng = new Random(1234);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var d in Enum.GetValues<SafeDType>())
            for (int s = 0; s < Shapes.Length; s++)
                tensors.Add(new($"{d}.{s}", RandomBits(d.ToScalarType(), Shapes[s], rng)));
        try
        {
            var path = PathFor("all.safetensors");
            var meta = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode, \"quotes\"" };
            SafetensorsWriter.Write(path, tensors, meta);

            using var f = SafetensorsFile.Open(path);
            Assert.Equal(tensors.Select(p => p.Key), f.Names);
            Assert.Equal(meta, f.Metadata);
            foreach (var (name, expected) in tensors)
            {
                var info = f.Info(name);
                Assert.Equal(expected.shape, info.Shape);
                Assert.Equal(expected.dtype, info.ScalarType);
                using var got = f.Read(name);
                Assert.Equal(expected.dtype, got.dtype);
                Assert.Equal(expected.shape, got.shape);
                Assert.Equal(Bytes(expected), Bytes(got));
            }
        }
        finally { foreach (var p in tensors) p.Value.Dispose(); }
    }

    static byte[] Bytes(Tensor t) => t.NumberOfElements == 0 ? [] : t.bytes.ToArray();

    [Fact]
    public void WriterLaysOutAlignedDataAndPadsTheHeaderLikeTheReference()
    {
        using var a = torch.tensor(new byte[] { 1, 2, 3 });
        using var b = torch.tensor(new float[] { 1f, -2f });
        var path = PathFor("layout.safetensors");
        SafetensorsWriter.Write(path, [new("a", a), new("b", b)]);

        var bytes = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, (8 + n) % 8);
        var header = Encoding.UTF8.GetString(bytes, 8, (int)n);
        // Header keeps the given order; data puts the 4-byte tensor first so it stays aligned.
        Assert.Equal("{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[8,11]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
            header.TrimEnd(' '));
        Assert.Equal(8 + n + 11, bytes.Length);
        Assert.Equal(1f, BitConverter.ToSingle(bytes, (int)(8 + n)));
        Assert.Equal(new byte[] { 1, 2, 3 }, bytes[(int)(8 + n + 8)..]);
        Assert.Empty(Directory.GetFiles(Dir, ".*.tmp"));
    }

    [Fact]
    public void ReadsAHandWrittenFileFromTheFormatSpec()
    {
        // The example from the safetensors README, built byte by byte rather than by our writer.
        var data = new byte[16];
        for (int i = 0; i < 4; i++) BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(i * 4), i + 0.5f);
        var path = Craft("spec.safetensors", "{\"TEST\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},\"__metadata__\":{\"format\":\"pt\"}}", data);
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(["TEST"], f.Names);
        Assert.Equal("pt", f.Metadata["format"]);
        using var t = f.Read("TEST");
        Assert.Equal(new long[] { 2, 2 }, t.shape);
        Assert.Equal(new[] { 0.5f, 1.5f, 2.5f, 3.5f }, t.data<float>().ToArray());
    }

    [Fact]
    public void HalfPrecisionReadsCastToFloat32Exactly()
    {
        // bf16: 1.0 = 0x3F80, -2.5 = 0xC020, 3.140625 = 0x4049; f16: 1.0 = 0x3C00, -2.5 = 0xC100, 0.5 = 0x3800.
        var data = new byte[12];
        ushort[] bits = [0x3F80, 0xC020, 0x4049, 0x3C00, 0xC100, 0x3800];
        for (int i = 0; i < bits.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(i * 2), bits[i]);
        var path = Craft("half.safetensors",
            "{\"bf\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]},\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[6,12]}}", data);
        using var ck = SafetensorsCheckpoint.Open(path);

        using var bf = ck.Read("bf", ScalarType.Float32);
        Assert.Equal(ScalarType.Float32, bf.dtype);
        Assert.Equal(new[] { 1f, -2.5f, 3.140625f }, bf.data<float>().ToArray());
        using var h = ck.Read("h", ScalarType.Float32, CPU);
        Assert.Equal(new[] { 1f, -2.5f, 0.5f }, h.data<float>().ToArray());
        using var raw = ck.Read("bf");
        Assert.Equal(ScalarType.BFloat16, raw.dtype);
    }

    [Fact]
    public void ShardedWriteReadsBackThroughTheIndex()
    {
        var rng = new Random(7);
        var tensors = Enumerable.Range(0, 5)
            .Select(i => new KeyValuePair<string, Tensor>($"model.layers.{i}.weight", RandomBits(ScalarType.Float32, [10, 10], rng)))
            .ToList();
        try
        {
            // 400 bytes each, at most 1000 per shard: [0,1] [2,3] [4].
            var files = SafetensorsWriter.WriteSharded(Dir, tensors, 1000, new Dictionary<string, string> { ["format"] = "pt" });
            Assert.Equal(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"],
                files.Select(Path.GetFileName));
            Assert.False(File.Exists(PathFor("model.safetensors")));

            using var doc = JsonDocument.Parse(File.ReadAllText(PathFor("model.safetensors.index.json")));
            Assert.Equal(2000, doc.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
            Assert.Equal("model-00002-of-00003.safetensors", doc.RootElement.GetProperty("weight_map").GetProperty("model.layers.3.weight").GetString());

            foreach (var open in new[] { Dir, PathFor("model.safetensors.index.json") })
            {
                using var ck = SafetensorsCheckpoint.Open(open);
                Assert.Equal(tensors.Select(p => p.Key), ck.Names);
                Assert.Equal(3, ck.Files.Count);
                Assert.Equal("pt", ck.Metadata["format"]);
                Assert.EndsWith("model-00003-of-00003.safetensors", ck.FileOf("model.layers.4.weight"));
                foreach (var (name, expected) in tensors)
                {
                    using var got = ck.Read(name);
                    Assert.Equal(Bytes(expected), Bytes(got));
                }
                Assert.False(ck.Contains("missing"));
                var e = Assert.Throws<KeyNotFoundException>(() => ck.Info("missing"));
                Assert.Contains("'missing'", e.Message);
            }
        }
        finally { foreach (var p in tensors) p.Value.Dispose(); }
    }

    [Fact]
    public void OneShardIsWrittenAsPlainModelSafetensorsAndReplacesAnOldShardSet()
    {
        using var a = torch.ones(4);
        using var b = torch.zeros(4);
        SafetensorsWriter.WriteSharded(Dir, [new("a", a), new("b", b)], 16);
        Assert.True(File.Exists(PathFor("model.safetensors.index.json")));

        var files = SafetensorsWriter.WriteSharded(Dir, [new("a", a), new("b", b)], 1 << 20);
        Assert.Equal([PathFor("model.safetensors")], files);
        Assert.Equal(["model.safetensors"], Directory.GetFiles(Dir).Select(Path.GetFileName));
        using var ck = SafetensorsCheckpoint.Open(Dir);
        Assert.Equal(["a", "b"], ck.Names);
    }

    [Fact]
    public void WriterTakesViewsAndRefusesBadInput()
    {
        using var m = torch.arange(6, ScalarType.Float32).reshape(2, 3);
        using var view = m.t();
        var path = PathFor("view.safetensors");
        SafetensorsWriter.Write(path, [new("t", view)]);
        using (var f = SafetensorsFile.Open(path))
        using (var got = f.Read("t"))
            Assert.Equal(new[] { 0f, 3f, 1f, 4f, 2f, 5f }, got.data<float>().ToArray());

        var dup = Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(PathFor("dup.safetensors"), [new("x", m), new("x", m)]));
        Assert.Contains("'x'", dup.Message);
        using var c = torch.zeros(2, ScalarType.ComplexFloat32);
        var bad = Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(PathFor("c.safetensors"), [new("z", c)]));
        Assert.Contains("'z'", bad.Message);
        Assert.False(File.Exists(PathFor("dup.safetensors")));
        Assert.Empty(Directory.GetFiles(Dir, ".*.tmp"));
    }

    [Fact]
    public void ReadingOneTensorDoesNotCopyTheFileIntoManagedMemory()
    {
        using var big = torch.rand(8L << 20); // 32 MiB
        using var small = torch.arange(10, ScalarType.Int64);
        var path = PathFor("big.safetensors");
        SafetensorsWriter.Write(path, [new("big", big), new("small", small)]);
        Assert.True(new FileInfo(path).Length > 32L << 20);

        long before = GC.GetAllocatedBytesForCurrentThread();
        using var f = SafetensorsFile.Open(path);
        using var s = f.Read("small");
        using var b = f.Read("big");
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(small.data<long>().ToArray(), s.data<long>().ToArray());
        using var same = torch.equal(big, b).all();
        Assert.True(same.item<bool>());
        Assert.True(allocated < 1 << 20, $"reading allocated {allocated} managed bytes");
    }
}
