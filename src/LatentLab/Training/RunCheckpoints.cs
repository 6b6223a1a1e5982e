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
}

public sealed record CheckpointInfo(string Path, CheckpointState State)
{
    public long Step => State.Step;
}

/// <summary>
/// The checkpoints folder of a run: <c>step-NNNNNN/</c> folders plus a <c>latest</c> pointer file.
/// A checkpoint is assembled in a hidden temporary folder and renamed into place (rename is atomic), and its
/// <c>trainer_state.json</c> lists every file's size; resuming trusts only folders whose files all check out,
/// so a kill at any moment leaves at worst a stray temporary folder, never a half checkpoint that gets used.
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
            var files = Directory.GetFiles(temp).Where(f => Path.GetFileName(f) != StateFile)
                .ToDictionary(f => Path.GetFileName(f), f => new FileInfo(f).Length, StringComparer.Ordinal);
            var full = state with { Files = files, SavedUtc = DateTime.UtcNow };
            AtomicFile.WriteAllText(Path.Combine(temp, StateFile), JsonSerializer.Serialize(full, Json) + "\n");

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
    /// The newest complete checkpoint, or null when there is none. Folders that do not verify (no state file,
    /// unreadable state, a listed file missing or of the wrong size) are skipped; so are temporary folders.
    /// The <c>latest</c> pointer is for people and tools: a run killed between the rename and the pointer
    /// update has a newer verified folder than the pointer names, and that newer one is the right place to resume.
    /// </summary>
    public static CheckpointInfo? FindLatest(string checkpointsDir)
    {
        var dir = Path.GetFullPath(checkpointsDir);
        if (!Directory.Exists(dir)) return null;
        CheckpointInfo? best = null;
        foreach (var (path, step) in StepFolders(dir))
        {
            if (best is not null && step <= best.Step) continue;
            if (TryVerify(path, out var state, out _) && state!.Step == step) best = new CheckpointInfo(path, state);
        }
        return best;
    }

    /// <summary>True when <paramref name="folder"/> is a complete checkpoint; otherwise <paramref name="why"/> says what is wrong.</summary>
    public static bool TryVerify(string folder, out CheckpointState? state, out string? why)
    {
        state = null;
        var statePath = Path.Combine(folder, StateFile);
        if (!File.Exists(statePath)) { why = $"{folder}: no {StateFile} (the checkpoint was never finished)"; return false; }
        try { state = JsonSerializer.Deserialize<CheckpointState>(File.ReadAllText(statePath), Json); }
        catch (JsonException e) { why = $"{statePath}: not valid JSON ({e.Message})"; return false; }
        if (state is null || state.Files.Count == 0) { why = $"{statePath}: lists no files"; state = null; return false; }
        foreach (var (file, size) in state.Files)
        {
            var p = Path.Combine(folder, file);
            if (!File.Exists(p)) { why = $"{folder}: {file} is missing"; state = null; return false; }
            long actual = new FileInfo(p).Length;
            if (actual != size) { why = $"{folder}: {file} has {actual} bytes, {StateFile} says {size}"; state = null; return false; }
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
        var kept = folders.Where(f => TryVerify(f.Path, out _, out _)).Take(keep).ToList();
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
