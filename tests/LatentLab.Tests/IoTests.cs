using System.Text.Json;
using LatentLab.IO;

namespace LatentLab.Tests;

public sealed class IoTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-io-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    string[] Leftovers() => Directory.GetFiles(_dir, "*", SearchOption.AllDirectories).Where(p => p.EndsWith(".tmp")).ToArray();

    [Fact]
    public void AtomicWritesReplaceTheFileAndLeaveNoTemporary()
    {
        var path = Path.Combine(_dir, "sub", "config.json");
        AtomicFile.WriteAllText(path, "first");
        AtomicFile.WriteAllText(path, "second ü");
        Assert.Equal("second ü", File.ReadAllText(path));
        Assert.Equal((byte)'s', File.ReadAllBytes(path)[0]); // no BOM
        AtomicFile.WriteAllBytes(path, new byte[] { 1, 2, 3 });
        Assert.Equal(new byte[] { 1, 2, 3 }, File.ReadAllBytes(path));
        AtomicFile.Write(path, s => s.WriteByte(9));
        Assert.Equal(new byte[] { 9 }, File.ReadAllBytes(path));
        Assert.Empty(Leftovers());
    }

    [Fact]
    public void AFailedWriteKeepsTheOldFileWhole()
    {
        var path = Path.Combine(_dir, "state.bin");
        AtomicFile.WriteAllText(path, "old contents");
        var e = Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, s =>
        {
            s.Write("new half"u8);
            throw new InvalidOperationException("crash mid-write");
        }));
        Assert.Equal("crash mid-write", e.Message);
        Assert.Equal("old contents", File.ReadAllText(path));
        Assert.Empty(Leftovers());
    }

    sealed record Metric(int Step, double Loss, string Note);

    [Fact]
    public void JsonlAppendsOneLinePerRecordAndReadsThemBack()
    {
        var path = Path.Combine(_dir, "run", "metrics.jsonl");
        Jsonl.Append(path, new Metric(1, 2.5, "line\nbreak"));
        Jsonl.AppendMany(path, new[] { new Metric(2, 1.25, "b"), new Metric(3, 0.5, "c") },
            new JsonSerializerOptions { WriteIndented = true });
        var lines = File.ReadAllLines(path);
        Assert.Equal(3, lines.Length);
        Assert.All(lines, l => Assert.StartsWith("{", l));
        Assert.Equal([new Metric(1, 2.5, "line\nbreak"), new Metric(2, 1.25, "b"), new Metric(3, 0.5, "c")], Jsonl.ReadAll<Metric>(path));
    }

    [Fact]
    public void JsonlErrorsNameTheFileAndLine()
    {
        var path = Path.Combine(_dir, "bad.jsonl");
        File.WriteAllText(path, "{\"step\":1,\"loss\":1,\"note\":\"a\"}\n\n{\"step\":2,\"loss\":\n");
        var e = Assert.Throws<InvalidDataException>(() => Jsonl.ReadAll<Metric>(path));
        Assert.Contains(path + ":3:", e.Message);
        File.WriteAllText(path, "null\n");
        Assert.Contains(":1:", Assert.Throws<InvalidDataException>(() => Jsonl.ReadAll<Metric>(path)).Message);
        Assert.Throws<FileNotFoundException>(() => Jsonl.ReadAll<Metric>(Path.Combine(_dir, "missing.jsonl")));
    }
}
