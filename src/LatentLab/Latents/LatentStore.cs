using System.Text;
using System.Text.Json;
using LatentLab.IO;
using LatentLab.Models;
using LatentLab.Tensors;
using LatentLab.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Latents;

/// <summary>
/// A latent store on disk: <c>manifest.json</c>, <c>samples.jsonl</c> (one <see cref="TraceSample"/> per row, with
/// its problem and intermediates) and safetensors files <c>latents-START-END.safetensors</c>, each holding
/// <c>pre</c> [n, D], <c>post</c> [n, K, D] (stored dtype) and <c>index</c> [n] (sample index) for the problems
/// [START, END). Rows of every tensor follow the order of samples.jsonl. Opening a store checks it whole
/// (each file's content checksum and that of its rows in samples.jsonl, row counts, indices, the leak rule) and, when a
/// model or tokenizer is given, that it is the one that made it. A damaged file is named with its problem and row range;
/// running the extraction again redoes only that file.
/// </summary>
public sealed class LatentStore
{
    public const string SamplesFile = "samples.jsonl";

    readonly List<TraceSample> _samples;

    LatentStore(string directory, LatentManifest manifest, List<TraceSample> samples)
    {
        Directory = directory;
        Manifest = manifest;
        _samples = samples;
    }

    public string Directory { get; }
    public LatentManifest Manifest { get; }
    public StoreSettings Settings => Manifest.Settings;
    public string Point => Settings.Point;
    public int K => Settings.K;
    public int HiddenSize => Settings.HiddenSize;
    public ScalarType DType => TorchRuntime.ParseDType(Settings.DType);
    /// <summary>All rows, verified or not.</summary>
    public int Count => _samples.Count;
    public int VerifiedCount => _samples.Count(s => s.Verified);
    /// <summary><see cref="Integrity.Intact"/> when every file was checked against its checksum on open, <see cref="Integrity.Unverified"/> for a store written before checksums.</summary>
    public Integrity Integrity => Manifest.Checksummed ? Integrity.Intact : Integrity.Unverified;

    /// <summary>
    /// Opens a complete store. With <paramref name="model"/>: its hidden size, config hash and weights must be those
    /// the store was extracted from; with <paramref name="tok"/>: its hash must match. A mismatch is an error.
    /// </summary>
    public static LatentStore Open(string dir, DecoderLM? model = null, ITokenizer? tok = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(dir);
        if (!System.IO.Directory.Exists(dir)) throw new DirectoryNotFoundException($"latent store not found: {dir}");
        var m = LatentManifest.Read(dir);
        if (!m.Complete)
            throw new InvalidDataException($"{dir}: the extraction that writes this store has not finished (run it again with the same options to resume)");
        var samplesPath = Path.Combine(dir, SamplesFile);
        var lines = SampleLines(dir);
        if (lines.Count != m.Rows)
            throw new InvalidDataException($"{samplesPath}: {lines.Count} rows, the manifest says {m.Rows}");
        foreach (var (file, first, problem) in Damaged(dir, m, lines))
            if (problem is not null)
                throw new InvalidDataException($"{dir}: {file.Describe(first)} is damaged ({problem}); " +
                    "run the same extraction command again to re-extract only that file");
        var samples = new List<TraceSample>(lines.Count);
        for (int i = 0; i < lines.Count; i++)
        {
            try { samples.Add(JsonSerializer.Deserialize<TraceSample>(lines[i], LatentJson.Line) ?? throw new JsonException("null row")); }
            catch (JsonException e) { throw new InvalidDataException($"{samplesPath}:{i + 1}: not a valid sample ({e.Message})", e); }
        }
        foreach (var s in samples) LeakRule.Check(s, m.Settings.K);

        int row = 0;
        foreach (var f in m.Files)
        {
            var path = Path.Combine(dir, f.Name);
            if (!File.Exists(path)) throw new FileNotFoundException($"{dir}: store file {f.Name} is missing", path);
            using var st = SafetensorsFile.Open(path);
            CheckShapes(st, path, f.Rows, m.Settings);
            using var index = st.Read("index");
            var ids = index.data<long>().ToArray();
            for (int i = 0; i < ids.Length; i++, row++)
                if (samples[row].Index != ids[i] || ids[i] < f.Start || ids[i] >= f.End)
                    throw new InvalidDataException($"{path}: row {i} holds sample {ids[i]}, but samples.jsonl row {row} is sample {samples[row].Index}");
        }
        if (row != samples.Count) throw new InvalidDataException($"{dir}: the store files hold {row} rows, samples.jsonl {samples.Count}");

        var store = new LatentStore(dir, m, samples);
        store.CheckCompatible(model, tok);
        return store;
    }

    /// <summary>Throws when <paramref name="model"/> or <paramref name="tok"/> is not the one this store was made with.</summary>
    public void CheckCompatible(DecoderLM? model, ITokenizer? tok)
    {
        var s = Settings;
        if (model is not null)
        {
            var c = model.Config;
            if (c.HiddenSize != s.HiddenSize)
                throw new InvalidDataException($"{Directory}: the store holds states of size {s.HiddenSize}, the model's hidden size is {c.HiddenSize}");
            if (c.Hash() != s.ModelHash)
                throw new InvalidDataException($"{Directory}: the store was extracted from a model with config hash {s.ModelHash} ({s.Architecture}, {s.NumLayers} layers), this model's is {c.Hash()}");
            var fp = ModelFingerprint.Of(model);
            if (fp != s.WeightsFingerprint)
                throw new InvalidDataException($"{Directory}: the store was extracted from other weights (fingerprint {s.WeightsFingerprint}, this model {fp})");
        }
        if (tok is not null && tok.Hash != s.TokenizerHash)
            throw new InvalidDataException($"{Directory}: the store was made with tokenizer {s.TokenizerHash[..Math.Min(16, s.TokenizerHash.Length)]}…, this tokenizer is {tok.Hash[..Math.Min(16, tok.Hash.Length)]}…");
    }

    public IReadOnlyList<TraceSample> Samples(bool verifiedOnly = true) =>
        verifiedOnly ? _samples.Where(s => s.Verified).ToList() : _samples;

    /// <summary>h_pre [n, D] in the stored dtype (or <paramref name="dtype"/>), rows in the order of <see cref="Samples"/>.</summary>
    public Tensor Pre(bool verifiedOnly = true, ScalarType? dtype = null) => Read("pre", verifiedOnly, dtype);

    /// <summary>h_post [n, K, D], rows in the order of <see cref="Samples"/>.</summary>
    public Tensor Post(bool verifiedOnly = true, ScalarType? dtype = null) => Read("post", verifiedOnly, dtype);

    /// <summary>Samples and both tensors at once.</summary>
    public LatentSet Load(bool verifiedOnly = true, ScalarType? dtype = null) =>
        new(Samples(verifiedOnly), Pre(verifiedOnly, dtype), Post(verifiedOnly, dtype), Manifest.Skipped);

    Tensor Read(string name, bool verifiedOnly, ScalarType? dtype)
    {
        using var scope = NewDisposeScope();
        var parts = new List<Tensor>();
        foreach (var f in Manifest.Files)
        {
            using var st = SafetensorsFile.Open(Path.Combine(Directory, f.Name));
            parts.Add(st.Read(name, dtype));
        }
        Tensor all = parts.Count == 0
            ? zeros(name == "pre" ? new long[] { 0, HiddenSize } : new long[] { 0, K, HiddenSize }, dtype: dtype ?? DType)
            : cat(parts, 0);
        if (verifiedOnly)
        {
            var keep = _samples.Select((s, i) => (s, i)).Where(p => p.s.Verified).Select(p => (long)p.i).ToArray();
            all = all.index_select(0, tensor(keep, dtype: ScalarType.Int64));
        }
        return all.contiguous().MoveToOuterDisposeScope();
    }

    // ---- integrity ----

    /// <summary>The lines of samples.jsonl as written (without their newlines), for checksums over the exact text.</summary>
    static List<string> SampleLines(string dir)
    {
        var path = Path.Combine(dir, SamplesFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"{dir}: {SamplesFile} is missing", path);
        var lines = File.ReadAllText(path).Split('\n').ToList();
        if (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        return lines;
    }

    /// <summary>The checksum of a run of sample lines, as <see cref="WriteFile"/> and <see cref="Finish"/> write them.</summary>
    static string LinesChecksum(IEnumerable<string> lines)
    {
        var sb = new StringBuilder();
        foreach (var l in lines) sb.Append(l).Append('\n');
        return FileChecksum.Of(Encoding.UTF8.GetBytes(sb.ToString()));
    }

    /// <summary>
    /// Every file of a complete store with its first row and, where damaged, what is wrong (null when intact or when
    /// the store predates checksums): the safetensors file's content checksum, then its rows' lines in samples.jsonl.
    /// </summary>
    internal static IEnumerable<(StoreFile File, int FirstRow, string? Problem)> Damaged(string dir, LatentManifest m, IReadOnlyList<string> lines)
    {
        int row = 0;
        foreach (var f in m.Files)
        {
            string? problem = null;
            if (f.Checksum is { } sum) problem = FileChecksum.Check(Path.Combine(dir, f.Name), sum);
            if (problem is null && f.SamplesChecksum is { } rowsSum)
            {
                bool inRange = row + f.Rows <= lines.Count;
                if (!inRange || LinesChecksum(lines.Skip(row).Take(f.Rows)) != rowsSum)
                    problem = $"{Path.Combine(dir, SamplesFile)} is damaged: its lines for these rows do not match their checksum";
            }
            yield return (f, row, problem);
            row += f.Rows;
        }
    }

    /// <summary>
    /// The damaged files of the complete store in <paramref name="dir"/>, each with a sentence naming it and its rows;
    /// empty when all are intact or the store predates checksums. For callers that repair rather than refuse.
    /// </summary>
    public static IReadOnlyList<string> Check(string dir)
    {
        var m = LatentManifest.Read(dir);
        var lines = SampleLines(dir);
        return Damaged(dir, m, lines).Where(d => d.Problem is not null).Select(d => $"{d.File.Describe(d.FirstRow)}: {d.Problem}").ToList();
    }

    /// <summary>
    /// Turns a complete store with damaged files back into a resumable one: each intact file gets its rows back as a
    /// side file (the exact lines of samples.jsonl, so its checksum still holds), each damaged file is removed, and
    /// the manifest is left saying incomplete but keeping the intact files' checksums. The extraction then redoes only
    /// the removed files. Returns the sentences naming what was damaged.
    /// </summary>
    internal static IReadOnlyList<string> Reopen(string dir, LatentManifest m)
    {
        var lines = SampleLines(dir);
        var files = Damaged(dir, m, lines).ToList();
        var damaged = new List<string>();
        foreach (var (f, first, problem) in files)
        {
            var stem = Path.Combine(dir, Path.GetFileNameWithoutExtension(f.Name));
            if (problem is null)
                AtomicFile.WriteAllText(stem + ".jsonl", string.Concat(lines.Skip(first).Take(f.Rows).Select(l => l + "\n")));
            else
            {
                damaged.Add($"{f.Describe(first)}: {problem}");
                File.Delete(stem + ".safetensors");
                if (File.Exists(stem + ".jsonl")) File.Delete(stem + ".jsonl");
            }
        }
        (m with { Complete = false, Files = files.Where(d => d.Problem is null).Select(d => d.File).ToList() }).Write(dir);
        return damaged;
    }

    // ---- writing (used by LatentExtraction.Run and Merge) ----

    internal sealed record Chunk(StoreFile File, IReadOnlyList<TraceSample> Samples, IReadOnlyList<SkippedProblem> Skipped);

    static string Stem(int start, int end) => $"latents-{start:D7}-{end:D7}";

    /// <summary>Writes one file's rows: its samples (.jsonl) first, then the tensors, whose arrival marks the file complete.</summary>
    internal static Chunk WriteFile(string dir, int start, int end, IReadOnlyList<TraceSample> samples, IReadOnlyList<SkippedProblem> skipped,
        Tensor pre, Tensor post)
    {
        var stem = Stem(start, end);
        var sb = new StringBuilder();
        foreach (var s in samples) sb.Append(JsonSerializer.Serialize(s, LatentJson.Line)).Append('\n');
        var rowsText = sb.ToString();
        AtomicFile.WriteAllText(Path.Combine(dir, stem + ".jsonl"), rowsText);
        using var index = tensor(samples.Select(s => (long)s.Index).ToArray(), dtype: ScalarType.Int64);
        var meta = new Dictionary<string, string>
        {
            ["start"] = start.ToString(), ["end"] = end.ToString(), ["rows"] = samples.Count.ToString(),
            ["skipped"] = JsonSerializer.Serialize(skipped, LatentJson.Line),
        };
        var path = Path.Combine(dir, stem + ".safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["pre"] = pre, ["post"] = post, ["index"] = index }, meta);
        var file = new StoreFile(stem + ".safetensors", start, end, samples.Count)
        {
            Checksum = FileChecksum.OfFile(path),
            SamplesChecksum = FileChecksum.Of(Encoding.UTF8.GetBytes(rowsText)),
        };
        return new Chunk(file, samples, skipped);
    }

    /// <summary>
    /// A file left by an earlier run of the same job, if it is complete and consistent (and, where <paramref name="known"/>
    /// holds its checksums, intact); null means redo it, with <paramref name="damage"/> saying why when it was damaged.
    /// </summary>
    internal static Chunk? TryReadFile(string dir, int start, int end, StoreSettings settings, StoreFile? known, out string? damage)
    {
        damage = null;
        var stem = Stem(start, end);
        var tensors = Path.Combine(dir, stem + ".safetensors");
        var rows = Path.Combine(dir, stem + ".jsonl");
        if (!File.Exists(tensors) || !File.Exists(rows)) return null;
        var rowsText = File.ReadAllText(rows);
        var rowsSum = FileChecksum.Of(Encoding.UTF8.GetBytes(rowsText));
        if (known?.Checksum is { } sum && FileChecksum.Check(tensors, sum) is { } bad) { damage = bad; return null; }
        if (known?.SamplesChecksum is { } want && want != rowsSum) { damage = $"{rows} is damaged: its text does not match its checksum"; return null; }
        try
        {
            using var st = SafetensorsFile.Open(tensors);
            int n = int.Parse(st.Metadata["rows"]);
            if (st.Metadata["start"] != start.ToString() || st.Metadata["end"] != end.ToString()) return null;
            CheckShapes(st, tensors, n, settings);
            var samples = Jsonl.ReadAll<TraceSample>(rows, LatentJson.Line);
            using var index = st.Read("index");
            if (!samples.Select(s => (long)s.Index).SequenceEqual(index.data<long>().ToArray())) return null;
            var skipped = JsonSerializer.Deserialize<List<SkippedProblem>>(st.Metadata["skipped"], LatentJson.Line) ?? new();
            var file = new StoreFile(stem + ".safetensors", start, end, n)
            {
                Checksum = known?.Checksum ?? FileChecksum.OfFile(tensors),
                SamplesChecksum = rowsSum,
            };
            return new Chunk(file, samples, skipped);
        }
        catch (Exception e) when (e is InvalidDataException or SafetensorsFormatException or JsonException or KeyNotFoundException or FormatException or IOException)
        {
            return null;
        }
    }

    static void CheckShapes(SafetensorsFile st, string path, int rows, StoreSettings s)
    {
        void Expect(string name, long[] shape, ScalarType dtype)
        {
            if (!st.Contains(name)) throw new InvalidDataException($"{path}: no '{name}' tensor");
            var info = st.Info(name);
            if (!info.Shape.SequenceEqual(shape) || info.ScalarType != dtype)
                throw new InvalidDataException($"{path}: '{name}' is {info.DType}[{string.Join(", ", info.Shape)}], expected {TorchRuntime.DTypeName(dtype)}[{string.Join(", ", shape)}]");
        }
        var dt = TorchRuntime.ParseDType(s.DType);
        Expect("pre", [rows, s.HiddenSize], dt);
        Expect("post", [rows, s.K, s.HiddenSize], dt);
        Expect("index", [rows], ScalarType.Int64);
    }

    /// <summary>Writes samples.jsonl and the complete manifest, then drops the per-file row lists.</summary>
    internal static LatentManifest Finish(string dir, StoreSettings settings, List<string> shards, IReadOnlyList<Chunk> chunks, double seconds)
    {
        var ordered = chunks.OrderBy(c => c.File.Start).ToList();
        var sb = new StringBuilder();
        var files = new List<StoreFile>();
        foreach (var c in ordered)
        {
            var lines = c.Samples.Select(s => JsonSerializer.Serialize(s, LatentJson.Line)).ToList();
            foreach (var l in lines) sb.Append(l).Append('\n');
            // Taken from the lines written here, so a merge of stores from an older version still gets matching checksums.
            files.Add(c.File with
            {
                Checksum = c.File.Checksum ?? FileChecksum.OfFile(Path.Combine(dir, c.File.Name)),
                SamplesChecksum = LinesChecksum(lines),
            });
        }
        AtomicFile.WriteAllText(Path.Combine(dir, SamplesFile), sb.ToString());
        var manifest = new LatentManifest
        {
            Settings = settings,
            Shards = shards,
            Files = files,
            Rows = ordered.Sum(c => c.Samples.Count),
            Verified = ordered.Sum(c => c.Samples.Count(s => s.Verified)),
            Skipped = ordered.SelectMany(c => c.Skipped).OrderBy(s => s.Index).ToList(),
            Complete = true,
            Seconds = Math.Round(seconds, 2),
        };
        manifest.Write(dir);
        foreach (var c in ordered)
        {
            var rows = Path.Combine(dir, Path.ChangeExtension(c.File.Name, ".jsonl"));
            if (File.Exists(rows)) File.Delete(rows);
        }
        return manifest;
    }

    /// <summary>
    /// Merges stores written by `--shard i/N` jobs of one extraction into <paramref name="outDir"/> (new or empty).
    /// The inputs must be complete, made with equal settings, and hold disjoint problems.
    /// </summary>
    public static LatentManifest Merge(string outDir, IReadOnlyList<string> inputs)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outDir);
        ArgumentNullException.ThrowIfNull(inputs);
        if (inputs.Count == 0) throw new ArgumentException("merge: no input stores given");
        if (System.IO.Directory.Exists(outDir) && System.IO.Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new ArgumentException($"merge: output folder {outDir} is not empty");
        var stores = inputs.Select(d => Open(d)).ToList();
        var settings = stores[0].Settings;
        for (int i = 1; i < stores.Count; i++)
            if (stores[i].Settings.Difference(settings) is { } diff)
                throw new InvalidDataException($"merge: {inputs[i]} was made with other settings than {inputs[0]} ({diff})");
        var shards = stores.SelectMany(s => s.Manifest.Shards).ToList();
        if (shards.Distinct().Count() != shards.Count)
            throw new InvalidDataException($"merge: shard(s) {string.Join(", ", shards.GroupBy(x => x).Where(g => g.Count() > 1).Select(g => g.Key))} given twice");
        var files = stores.SelectMany(s => s.Manifest.Files.Select(f => (Store: s, File: f))).OrderBy(p => p.File.Start).ToList();
        for (int i = 1; i < files.Count; i++)
            if (files[i].File.Start < files[i - 1].File.End)
                throw new InvalidDataException($"merge: {files[i - 1].Store.Directory} and {files[i].Store.Directory} both hold problems from {files[i].File.Start}");

        System.IO.Directory.CreateDirectory(outDir);
        var chunks = new List<Chunk>();
        foreach (var (store, file) in files)
        {
            using (var src = File.OpenRead(Path.Combine(store.Directory, file.Name)))
                AtomicFile.Write(Path.Combine(outDir, file.Name), dst => src.CopyTo(dst));
            var rows = store._samples.Where(s => s.Index >= file.Start && s.Index < file.End).ToList();
            var skipped = store.Manifest.Skipped.Where(s => s.Index >= file.Start && s.Index < file.End).ToList();
            chunks.Add(new Chunk(file, rows, skipped));
        }
        return Finish(outDir, settings, shards, chunks, stores.Sum(s => s.Manifest.Seconds));
    }
}
