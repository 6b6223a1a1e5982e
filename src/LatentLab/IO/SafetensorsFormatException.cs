namespace LatentLab.IO;

/// <summary>
/// A safetensors file, shard index or checkpoint folder that LatentLab refuses to read.
/// The message always names the file and, where one is involved, the tensor, so a user can
/// find the broken entry without a hex editor.
/// It derives from <see cref="IOException"/> because <see cref="InvalidDataException"/> is sealed;
/// callers that treat unreadable files as I/O failures catch it with the rest.
/// </summary>
public sealed class SafetensorsFormatException : IOException
{
    public SafetensorsFormatException(string filePath, string? tensorName, string problem, Exception? inner = null)
        : base(Compose(filePath, tensorName, problem), inner)
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    /// <summary>The file (or folder) that was being read.</summary>
    public string FilePath { get; }

    /// <summary>The tensor the problem belongs to, or null for a file-level problem.</summary>
    public string? TensorName { get; }

    static string Compose(string filePath, string? tensorName, string problem) =>
        tensorName is null ? $"{filePath}: {problem}" : $"{filePath}: tensor '{tensorName}': {problem}";
}
