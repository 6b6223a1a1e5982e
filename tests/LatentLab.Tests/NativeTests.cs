using LatentLab.Native;
using LatentLab.Tensors;
using TorchSharp;

namespace LatentLab.Tests;

public sealed class NativeTests
{
    [Fact]
    public void TensorOpRunsAfterFixup()
    {
        TorchRuntime.Initialize();
        using var a = torch.tensor(new float[] { 1, 2, 3, 4 }).reshape(2, 2);
        using var b = a.matmul(a);
        Assert.Equal(new float[] { 7, 10, 15, 22 }, b.data<float>().ToArray());
    }

    [Fact]
    public void OutputLibraryIsPatchedWhenTheSystemNeedsIt()
    {
        var lib = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", GlibcxxFixup.LibraryName);
        if (!OperatingSystem.IsLinux()) return;
        Assert.True(File.Exists(lib), lib);
        if (!GlibcxxFixup.SystemHasVersion())
            Assert.True(GlibcxxFixup.IsWeak(lib));
    }

    [Fact]
    public void PatchIsIdempotentOnAFreshCopy()
    {
        if (!OperatingSystem.IsLinux()) return;
        var nuget = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
                    ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var original = Path.Combine(nuget, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", GlibcxxFixup.LibraryName);
        var source = File.Exists(original) ? original
            : Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", GlibcxxFixup.LibraryName);
        var dir = Directory.CreateTempSubdirectory("ll-fixup").FullName;
        try
        {
            var copy = Path.Combine(dir, GlibcxxFixup.LibraryName);
            File.Copy(source, copy);
            var first = GlibcxxFixup.MarkVersionWeak(copy);
            Assert.Contains(first, new[] { "patched", "already" });
            Assert.True(GlibcxxFixup.IsWeak(copy));
            var bytes = File.ReadAllBytes(copy);
            Assert.Equal("already", GlibcxxFixup.MarkVersionWeak(copy));
            Assert.Equal(bytes, File.ReadAllBytes(copy));
            // Only two bytes of flags may differ from the original.
            var orig = File.ReadAllBytes(source);
            Assert.Equal(orig.Length, bytes.Length);
            Assert.True(orig.Zip(bytes).Count(p => p.First != p.Second) <= 1);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void NonElfFileIsAClearError()
    {
        var f = Path.GetTempFileName();
        try
        {
            File.WriteAllText(f, "not an elf");
            var e = Assert.Throws<InvalidDataException>(() => GlibcxxFixup.MarkVersionWeak(f));
            Assert.Contains("not an ELF", e.Message);
        }
        finally { File.Delete(f); }
    }
}
