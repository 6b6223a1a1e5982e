using System.Text.Json;
using System.Text.RegularExpressions;
using LatentLab.IO;

namespace LatentLab.Training;

/// <summary>What a checkpoint folder says about itself; written last, so its presence marks the folder complete.</summary>
public sealed record CheckpointState
{
    public int Format { get; init; } = 1;
    /// <summary>Optimiser updates done = the data position: the next update has this 0-based index.</summary>
    public long Step { get; init; }
    public long Tokens { get; init; }
    public double Loss { get; init; }
    public double LearningRate { get; init; }
    public long Seed { get; init; }
    public DateTime SavedUtc { get; init; }
    /// <summary>Every other file in the folder with its byte length, checked before the folder is trusted.</summary>
    public Dictionary<string, long> Files { get; init; } = new(StringComparer.Ordinal);
    /// <summary>
    /// Every other file's content checksum (<see cref="FileChecksum"/>), taken after the file was complete and checked on
    /// every load: sizes catch a torn write, only the content catches a flipped bit. Empty in checkpoints written before checksums.
    /// </summary>
    public Dictionary<string, string> Checksums { get; init; } = new(StringComparer.Ordinal);
    /// <summary>This file's checksum over its own text, so a flipped bit in the step or the file list is caught too.</summary>
    public string? SelfChecksum { get; init; }
}

public sealed record CheckpointInfo(string Path, CheckpointState State)
{
    public long Step => State.Step;
    /// <summary>False for a checkpoint written before checksums: it loads, but nothing vouches for its content.</summary>
    public bool Checksummed => State.Checksums.Count > 0;
}

/// <summary>
/// The checkpoints folder of a run: <c>step-NNNNNN/</c> folders plus a <c>latest</c> pointer file.
/// A checkpoint is assembled in a hidden temporary folder and renamed into place (rename is atomic), and its
/// <c>trainer_state.json</c> lists every file's size and content checksum; resuming trusts only folders whose files
/// all check out, so a kill at any moment leaves at worst a stray temporary folder, never a half checkpoint that gets
/// used, and a file damaged later (bit rot, a bad copy) sends the run back to the newest checkpoint that is intact.
/// </summary>
public static partial class RunCheckpoints
{
    public const string LatestFile = "latest";
    public const string StateFile = "trainer_state.json";
    public const string ModelFile = "model.safetensors";
    public const string OptimizerFile = "optimizer.safetensors";
    public const string RngFile = "rng.safetensors";
    public const string ExtraFile = "extra.safetensors";
    const string TempPrefix = ".tmp-";
    const string TrashPrefix = ".trash-";

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
    };

    [GeneratedRegex(@"^step-(\d+)$")]
    private static partial Regex StepFolder();

    public static string FolderName(long step) => $"step-{step:D6}";

    /// <summary>
    /// Writes checkpoint <paramref name="state"/>.Step: <paramref name="writeFiles"/> fills a temporary folder, then
    /// the state file goes in last, the folder is renamed to <c>step-NNNNNN</c>, <c>latest</c> is pointed at it,
    /// and all but the newest <paramref name="keep"/> complete checkpoints are removed. Returns the folder.
    /// </summary>
    public static string Save(string checkpointsDir, CheckpointState state, Action<string> writeFiles, int keep)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(keep, 1);
        var dir = Path.GetFullPath(checkpointsDir);
        Directory.CreateDirectory(dir);
        RemoveLeftovers(dir);
        var name = FolderName(state.Step);
        var temp = Path.Combine(dir, $"{TempPrefix}{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        try
        {
            writeFiles(temp);
            var paths = Directory.GetFiles(temp).Where(f => Path.GetFileName(f) != StateFile).ToList();
            var files = paths.ToDictionary(f => Path.GetFileName(f), f => new FileInfo(f).Length, StringComparer.Ordinal);
            // Hashed from disk after each writer closed its file, so the checksum vouches for the bytes that are there.
            var sums = paths.ToDictionary(f => Path.GetFileName(f), FileChecksum.OfFile, StringComparer.Ordinal);
            var full = state with { Files = files, Checksums = sums, SavedUtc = DateTime.UtcNow, SelfChecksum = FileChecksum.Placeholder };
            AtomicFile.WriteAllText(Path.Combine(temp, StateFile), FileChecksum.Seal(JsonSerializer.Serialize(full, Json) + "\n"));

            var final = Path.Combine(dir, name);
            // Only possible when an earlier life of this run was killed after the rename but before the pointer
            // moved on and then resumed from an older checkpoint; the content is the same, so replace it.
            if (Directory.Exists(final)) Discard(final);
            Directory.Move(temp, final);
            AtomicFile.WriteAllText(Path.Combine(dir, LatestFile), name + "\n");
            Prune(dir, keep);
            return final;
        }
        catch
        {
            if (Directory.Exists(temp)) TryDeleteTree(temp);
            throw;
        }
    }

    /// <summary>
    /// The newest checkpoint that verifies (<see cref="TryVerify"/>, contents included), or null when the folder holds
    /// no step folder at all. Newer folders that fail are skipped, each reported once through <paramref name="warn"/>
    /// with the file at fault; so is resuming from a checkpoint written before checksums. When step folders exist but
    /// none verifies, it throws: starting over silently would discard a run that someone may still be able to repair.
    /// With <paramref name="load"/>, the data files are not hashed here: <paramref name="load"/> loads the checkpoint,
    /// checking each file's checksum as it reads it (<see cref="SafetensorsFile.ReadAllHashed"/>), and returns null or
    /// what is damaged, so verifying costs no second read. Temporary folders are ignored. The <c>latest</c> pointer is
    /// for people and tools: a run killed between the rename and the pointer update has a newer verified folder than
    /// the pointer names, and that one is the right place to resume.
    /// </summary>
    public static CheckpointInfo? FindLatest(string checkpointsDir, Action<string>? warn = null, Func<CheckpointInfo, string?>? load = null)
    {
        var dir = Path.GetFullPath(checkpointsDir);
        if (!Directory.Exists(dir)) return null;
        var failures = new List<string>();
        foreach (var (path, step) in StepFolders(dir))
        {
            string? why;
            if (TryVerify(path, out var state, out why, contents: load is null) && state!.Step != step)
                why = $"{Path.Combine(path, StateFile)} says step {state.Step}, the folder is named for step {step}";
            if (why is null && load is not null) why = load(new CheckpointInfo(path, state!));
            if (why is null)
            {
                var found = new CheckpointInfo(path, state!);
                if (!found.Checksummed) warn?.Invoke($"{path}: {FileChecksum.Unverified}");
                return found;
            }
            failures.Add(why);
            warn?.Invoke($"skipping checkpoint {Path.GetFileName(path)}: {why}");
        }
        if (failures.Count == 0) return null;
        throw new InvalidDataException($"{dir}: none of its {failures.Count} checkpoint(s) verifies ({string.Join("; ", failures)}); " +
            "restore the folder from a copy, or move it away to train from scratch");
    }

    /// <summary>
    /// True when <paramref name="folder"/> is a complete, undamaged checkpoint; otherwise <paramref name="why"/> names the
    /// file and what is wrong with it. <paramref name="contents"/> false checks the state file (it is small) and the
    /// other files' presence and sizes only (what a crash can break), without reading them.
    /// </summary>
    public static bool TryVerify(string folder, out CheckpointState? state, out string? why, bool contents = true)
    {
        state = null;
        var statePath = Path.Combine(folder, StateFile);
        if (!File.Exists(statePath)) { why = $"{folder}: no {StateFile} (the checkpoint was never finished)"; return false; }
        string text;
        try { text = File.ReadAllText(statePath); }
        catch (IOException e) { why = $"{statePath}: unreadable ({e.Message})"; return false; }
        try { state = JsonSerializer.Deserialize<CheckpointState>(text, Json); }
        catch (JsonException e) { why = $"{statePath}: not valid JSON ({e.Message})"; return false; }
        if (state is null || state.Files.Count == 0) { why = $"{statePath}: lists no files"; state = null; return false; }
        foreach (var (file, size) in state.Files)
        {
            var p = Path.Combine(folder, file);
            if (!File.Exists(p)) { why = $"{folder}: {file} is missing"; state = null; return false; }
            long actual = new FileInfo(p).Length;
            if (actual != size) { why = $"{folder}: {file} has {actual} bytes, {StateFile} says {size}"; state = null; return false; }
        }
        // Sizes first (above): they name a torn file precisely; the seal and the content checksums catch the rest.
        var seal = FileChecksum.CheckSeal(text, statePath, out why);
        if (seal == Integrity.Damaged) { state = null; return false; }
        // Checksums without a seal cannot be an old file: the seal's key itself was damaged.
        if (seal == Integrity.Unverified && state.Checksums.Count > 0)
        {
            why = $"{statePath} is damaged: it lists checksums but has no {FileChecksum.SealKey}";
            state = null;
            return false;
        }
        if (contents && state.Checksums.Count > 0)
            foreach (var file in state.Files.Keys)
            {
                why = state.Checksums.TryGetValue(file, out var sum)
                    ? FileChecksum.Check(Path.Combine(folder, file), sum)
                    : $"{statePath} lists {file} without a checksum";
                if (why is not null) { state = null; return false; }
            }
        why = null;
        return true;
    }

    static IEnumerable<(string Path, long Step)> StepFolders(string dir) =>
        Directory.GetDirectories(dir)
            .Select(p => (p, m: StepFolder().Match(Path.GetFileName(p))))
            .Where(x => x.m.Success && long.TryParse(x.m.Groups[1].Value, out _))
            .Select(x => (x.p, long.Parse(x.m.Groups[1].Value)))
            .OrderByDescending(x => x.Item2);

    /// <summary>Keeps the newest <paramref name="keep"/> verified checkpoints and removes older folders.</summary>
    static void Prune(string dir, int keep)
    {
        var folders = StepFolders(dir).ToList();
        // Sizes only: the folders were verified when the run resumed or just written, and re-reading every kept
        // checkpoint at each save would cost more than the save.
        var kept = folders.Where(f => TryVerify(f.Path, out _, out _, contents: false)).Take(keep).ToList();
        if (kept.Count < keep) return;
        long oldestKept = kept[^1].Step;
        foreach (var (path, step) in folders)
            if (step < oldestKept) Discard(path);
    }

    /// <summary>Renames first so a kill halfway through the delete leaves a hidden folder, not a damaged step folder.</summary>
    static void Discard(string folder)
    {
        var trash = Path.Combine(Path.GetDirectoryName(folder)!, $"{TrashPrefix}{Path.GetFileName(folder)}-{Guid.NewGuid():N}");
        Directory.Move(folder, trash);
        TryDeleteTree(trash);
    }

    static void RemoveLeftovers(string dir)
    {
        foreach (var d in Directory.GetDirectories(dir))
        {
            var n = Path.GetFileName(d);
            if (n.StartsWith(TempPrefix, StringComparison.Ordinal) || n.StartsWith(TrashPrefix, StringComparison.Ordinal)) TryDeleteTree(d);
        }
    }

    static void TryDeleteTree(string path)
    {
        try { Directory.Delete(path, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* a leftover is harmless: it is hidden and cleaned next time */ }
    }
}
