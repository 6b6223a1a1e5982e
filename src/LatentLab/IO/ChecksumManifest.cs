using System.Text.Json;

namespace LatentLab.IO;

/// <summary>
/// What checking a folder against its <see cref="ChecksumManifest"/> found: the state, what is wrong (if anything), how
/// many files were checked, and which listed files are absent (removed on purpose, e.g. a tokenizer: not damage, since
/// what is left is still what was written; a missing weight file fails to load with its own error).
/// </summary>
public sealed record FolderIntegrity(Integrity State, string? Problem, int FilesChecked, IReadOnlyList<string>? Absent = null)
{
    /// <summary>One phrase for people: "intact (3 files checked)", the unverified note, or what is damaged.</summary>
    public string Describe() => State switch
    {
        Integrity.Intact => $"intact ({FilesChecked} file{(FilesChecked == 1 ? "" : "s")} checked" +
                            (Absent is { Count: > 0 } a ? $"; listed but absent: {string.Join(", ", a)})" : ")"),
        Integrity.Unverified => FileChecksum.Unverified,
        _ => $"damaged: {Problem}",
    };
}

/// <summary>
/// <c>checksums.json</c> beside the files of a model folder: each file's content checksum, and the manifest's own
/// (<see cref="FileChecksum.Seal"/>). Written last, after every file it lists is complete; Hugging Face tools ignore it.
/// Files added to the folder later are not covered until the manifest is written again.
/// </summary>
public static class ChecksumManifest
{
    public const string FileName = "checksums.json";
    const string FormatName = "latentlab.checksums/1";

    sealed record Manifest
    {
        public string Format { get; init; } = FormatName;
        public Dictionary<string, string> Files { get; init; } = new(StringComparer.Ordinal);
        public string? SelfChecksum { get; init; }
    }

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    /// <summary>Lists every file now in <paramref name="directory"/> (not hidden temporaries, not itself) with its checksum.</summary>
    public static void Write(string directory)
    {
        var files = Directory.GetFiles(directory)
            .Select(Path.GetFileName)
            .Where(n => n is not null && n != FileName && !n.StartsWith('.'))
            .Order(StringComparer.Ordinal)
            .ToDictionary(n => n!, n => FileChecksum.OfFile(Path.Combine(directory, n!)), StringComparer.Ordinal);
        var json = JsonSerializer.Serialize(new Manifest { Files = files, SelfChecksum = FileChecksum.Placeholder }, Json) + "\n";
        AtomicFile.WriteAllText(Path.Combine(directory, FileName), FileChecksum.Seal(json));
    }

    /// <summary>
    /// Checks every file the manifest lists. A folder without a manifest is <see cref="Integrity.Unverified"/>
    /// (written before checksums, or by another tool); the first damaged file is named in the result.
    /// </summary>
    public static FolderIntegrity Verify(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) return new FolderIntegrity(Integrity.Unverified, null, 0);
        var text = File.ReadAllText(path);
        switch (FileChecksum.CheckSeal(text, FileName, out var why))
        {
            case Integrity.Damaged: return new FolderIntegrity(Integrity.Damaged, why, 0);
            // Every manifest this code writes is sealed, so a missing seal means its key was damaged.
            case Integrity.Unverified: return new FolderIntegrity(Integrity.Damaged, $"{FileName} is damaged: it has no {FileChecksum.SealKey}", 0);
        }
        Manifest? m;
        try { m = JsonSerializer.Deserialize<Manifest>(text, Json); }
        catch (JsonException e) { return new FolderIntegrity(Integrity.Damaged, $"{FileName} is damaged: not valid JSON ({e.Message})", 0); }
        if (m is null || m.Format != FormatName)
            return new FolderIntegrity(Integrity.Damaged, $"{FileName}: format '{m?.Format}', expected '{FormatName}'", 0);
        var absent = new List<string>();
        foreach (var (name, sum) in m.Files)
        {
            var file = Path.Combine(directory, name);
            if (!File.Exists(file)) { absent.Add(name); continue; }
            if (FileChecksum.Check(file, sum, name) is { } problem)
                return new FolderIntegrity(Integrity.Damaged, problem, 0);
        }
        return new FolderIntegrity(Integrity.Intact, null, m.Files.Count - absent.Count, absent);
    }
}
