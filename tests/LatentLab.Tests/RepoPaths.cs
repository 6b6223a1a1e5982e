namespace LatentLab.Tests;

/// <summary>Where the repository is, for tests that read its own files (sources, examples).</summary>
internal static class RepoPaths
{
    /// <summary>The folder holding LatentLab.slnx, found above the test binaries.</summary>
    public static string Root()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "LatentLab.slnx"))) d = d.Parent;
        return d?.FullName ?? throw new DirectoryNotFoundException("repository root (LatentLab.slnx) not found above the test binaries");
    }
}
