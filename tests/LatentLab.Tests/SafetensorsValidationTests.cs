using System.Text.Json;
using LatentLab.IO;
using LatentLab.Tensors;
using TorchSharp;

namespace LatentLab.Tests;

/// <summary>One crafted bad file per validation rule; each error must name the file and, where there is one, the tensor.</summary>
public sealed class SafetensorsValidationTests : SafetensorsTestKit
{
    public SafetensorsValidationTests() => TorchRuntime.Initialize();

    SafetensorsFormatException Refused(string path, string? tensor, string fragment)
    {
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(fragment, e.Message);
        Assert.Equal(tensor, e.TensorName);
        if (tensor is not null) Assert.Contains($"'{tensor}'", e.Message);
        // The checkpoint front door reports the same problem.
        var viaCheckpoint = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(path));
        Assert.Equal(e.Message, viaCheckpoint.Message);
        return e;
    }

    const string F32x2 = "\"dtype\":\"F32\",\"shape\":[2]";

    [Fact]
    public void HeaderLengthOverTheLimit() =>
        Refused(Craft("huge.safetensors", "{}", [], declaredLength: 200_000_000), null, "limit");

    [Fact]
    public void HeaderLengthBeyondTheFile() =>
        Refused(Craft("beyond.safetensors", "{}", [], declaredLength: 1000), null, "beyond the end of the file");

    [Fact]
    public void FileShorterThanTheLengthPrefix()
    {
        var path = PathFor("tiny.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        Refused(path, null, "too short");
    }

    [Fact]
    public void HeaderIsNotJson() =>
        Refused(Craft("json.safetensors", "{\"a\": {", 0), null, "not valid JSON");

    [Fact]
    public void HeaderIsNotUtf8()
    {
        var path = Craft("utf8.safetensors", "{\"a\":1}", 0);
        var bytes = File.ReadAllBytes(path);
        bytes[10] = 0xFF;
        File.WriteAllBytes(path, bytes);
        Refused(path, null, "UTF-8");
    }

    [Fact]
    public void HeaderIsNotAnObject() =>
        Refused(Craft("array.safetensors", "[1, 2]", 0), null, "must be a JSON object");

    [Theory]
    [InlineData("{\"__metadata__\":{\"format\":\"pt\",\"step\":3}}", "'step'")]
    [InlineData("{\"__metadata__\":[\"pt\"]}", "'__metadata__' must be an object")]
    [InlineData("{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"a\":\"1\"}}", "more than once")]
    public void BadMetadata(string header, string fragment) =>
        Refused(Craft("meta.safetensors", header, 0), null, fragment);

    [Theory]
    [InlineData("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", "no string 'dtype'")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", "no array 'shape'")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", "no 'data_offsets'")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", "non-negative integers")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", "end before they begin")]
    [InlineData("{\"w\":[1,2]}", "must be an object")]
    public void MalformedEntry(string header, string fragment) =>
        Refused(Craft("entry.safetensors", header, 8), "w", fragment);

    [Fact]
    public void UnknownDType() =>
        Refused(Craft("dtype.safetensors", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2), "w", "'F8_E4M3'");

    [Fact]
    public void OffsetsOutsideTheData() =>
        Refused(Craft("outside.safetensors", $"{{\"w\":{{{F32x2},\"data_offsets\":[8,16]}}}}", 8), "w", "beyond the data section");

    [Fact]
    public void OverlappingRanges()
    {
        var e = Refused(Craft("overlap.safetensors",
            $"{{\"a\":{{{F32x2},\"data_offsets\":[0,8]}},\"b\":{{{F32x2},\"data_offsets\":[4,12]}}}}", 12), "b", "overlap");
        Assert.Contains("'a'", e.Message);
    }

    [Fact]
    public void GapBetweenTensors() =>
        Refused(Craft("gap.safetensors",
            $"{{\"a\":{{{F32x2},\"data_offsets\":[0,8]}},\"b\":{{{F32x2},\"data_offsets\":[12,20]}}}}", 20), "b", "without gaps");

    [Fact]
    public void TrailingBytesAfterTheLastTensor() =>
        Refused(Craft("trailing.safetensors", $"{{\"a\":{{{F32x2},\"data_offsets\":[0,8]}}}}", 12), null, "no trailing bytes");

    [Fact]
    public void ByteLengthDoesNotMatchDTypeTimesShape() =>
        Refused(Craft("length.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8), "w", "needs 12");

    [Fact]
    public void DuplicateNames() =>
        Refused(Craft("dup.safetensors",
            $"{{\"w\":{{{F32x2},\"data_offsets\":[0,8]}},\"w\":{{{F32x2},\"data_offsets\":[8,16]}}}}", 16), "w", "more than once");

    [Fact]
    public void TruncatedFile()
    {
        using var a = torch.ones(4);
        using var b = torch.ones(4);
        var path = PathFor("cut.safetensors");
        SafetensorsWriter.Write(path, [new("a", a), new("b", b)]);
        using (var s = File.OpenWrite(path)) s.SetLength(s.Length - 3);
        Refused(path, "b", "truncated");
    }

    [Theory]
    [InlineData("pytorch_model.bin")]
    [InlineData("model.pt")]
    [InlineData("weights.pth")]
    [InlineData("last.ckpt")]
    public void PickleFilesAreRefusedWithTheReason(string name)
    {
        var path = PathFor(name);
        File.WriteAllBytes(path, [0x80, 0x02]);
        foreach (var open in new Action[] { () => SafetensorsFile.Open(path), () => SafetensorsCheckpoint.Open(path) })
        {
            var e = Assert.Throws<SafetensorsFormatException>(open);
            Assert.Contains(path, e.Message);
            Assert.Contains("arbitrary code", e.Message);
            Assert.Contains("safe_serialization=True", e.Message);
        }
    }

    [Fact]
    public void FolderWithOnlyPickleWeightsIsRefusedWithTheReason()
    {
        File.WriteAllBytes(PathFor("pytorch_model.bin"), [0x80, 0x02]);
        File.WriteAllText(PathFor("config.json"), "{}");
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(Dir));
        Assert.Contains(Dir, e.Message);
        Assert.Contains("pytorch_model.bin", e.Message);
        Assert.Contains("arbitrary code", e.Message);
        Assert.Contains("safe_serialization=True", e.Message);
    }

    [Fact]
    public void EmptyFolderAndMissingPathAreClearErrors()
    {
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(Dir));
        Assert.Contains("model.safetensors", e.Message);
        var missing = PathFor("nope");
        var nf = Assert.Throws<FileNotFoundException>(() => SafetensorsCheckpoint.Open(missing));
        Assert.Contains(missing, nf.Message);
    }

    string WriteShardsAndEditIndex(Action<Dictionary<string, string>> edit)
    {
        using var a = torch.ones(4);
        using var b = torch.zeros(4);
        SafetensorsWriter.WriteSharded(Dir, [new("a", a), new("b", b)], 16);
        var index = PathFor("model.safetensors.index.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(index));
        var map = doc.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
        edit(map);
        File.WriteAllText(index, JsonSerializer.Serialize(new { metadata = new { total_size = 32 }, weight_map = map }));
        return index;
    }

    [Fact]
    public void IndexPointingAtAMissingShard()
    {
        var index = WriteShardsAndEditIndex(_ => File.Delete(PathFor("model-00002-of-00002.safetensors")));
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(Dir));
        Assert.Contains(index, e.Message);
        Assert.Contains("'b'", e.Message);
        Assert.Contains("model-00002-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void IndexNamingATensorItsShardLacks()
    {
        var index = WriteShardsAndEditIndex(m => m["c"] = "model-00001-of-00002.safetensors");
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(Dir));
        Assert.Contains(index, e.Message);
        Assert.Equal("c", e.TensorName);
        Assert.Contains("model-00001-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void IndexShardOutsideTheFolderIsRefused()
    {
        WriteShardsAndEditIndex(m => m["a"] = "../elsewhere.safetensors");
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(Dir));
        Assert.Equal("a", e.TensorName);
        Assert.Contains("plain file name", e.Message);
    }

    [Fact]
    public void BrokenShardIsReportedByItsOwnPath()
    {
        WriteShardsAndEditIndex(_ => { });
        var shard = PathFor("model-00001-of-00002.safetensors");
        using (var s = File.OpenWrite(shard)) s.SetLength(s.Length - 1);
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(Dir));
        Assert.Contains(shard, e.Message);
        Assert.Equal("a", e.TensorName);
    }
}
