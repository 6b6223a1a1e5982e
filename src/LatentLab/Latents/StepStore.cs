using System.Text;
using System.Text.Json;
using LatentLab.IO;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Text;
using static TorchSharp.torch;

namespace LatentLab.Latents;

/// <summary>How the traces of a step store were drawn; part of what must match for a resume.</summary>
public sealed record StepSampling(int Samples, double Temperature, int TopK, bool Greedy, long Seed, string StepRule);

/// <summary>manifest.json of a step store: the shared <see cref="StoreSettings"/> (position rule "step means") and the sampling.</summary>
public sealed record StepManifest
{
    public const string FormatName = "latentlab.step-latents/1";
    public string Format { get; init; } = FormatName;
    public required StoreSettings Settings { get; init; }
    public required StepSampling Sampling { get; init; }
    public List<StoreFile> Files { get; init; } = new();
    public int Rows { get; init; }
    public int Verified { get; init; }
    public bool Complete { get; init; }
    public double Seconds { get; init; }
    public string? SelfChecksum { get; init; }

    public static StepManifest Read(string dir)
    {
        var path = Path.Combine(dir, LatentManifest.FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"{dir}: not a step store (no {LatentManifest.FileName})", path);
        var text = File.ReadAllText(path);
        StepManifest? m;
        try { m = JsonSerializer.Deserialize<StepManifest>(text, LatentJson.Options); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a valid step store manifest ({e.Message})", e); }
        if (m is null || m.Format != FormatName) throw new InvalidDataException($"{path}: format '{m?.Format}', expected '{FormatName}' (a step store)");
        if (FileChecksum.CheckSeal(text, path, out var why) == Integrity.Damaged) throw new InvalidDataException($"{why}; extract into a new folder");
        return m;
    }

    public void Write(string dir) =>
        AtomicFile.WriteAllText(Path.Combine(dir, LatentManifest.FileName),
            FileChecksum.Seal(JsonSerializer.Serialize(this with { SelfChecksum = FileChecksum.Placeholder }, LatentJson.Options) + "\n"));
}

/// <summary>
/// A step store on disk, the latent store's "step means" layout: <c>manifest.json</c>, and per file of problems
/// [START, END) <c>steps-START-END.jsonl</c> (one <see cref="StepSample"/> per line) and <c>steps-START-END.safetensors</c>
/// (<c>latents</c> [rows, D]: per sample its prompt state and one mean per step, in line order). Written file by file,
/// each atomically with its checksums in the manifest, so a killed extraction resumes and a damaged file is redone.
/// Opening checks every file and, given a model or tokenizer, that it is the one the store was made with.
/// </summary>
public static class StepStore
{
    public const string PositionRule =
        "step means: row 0 = the hook point at the last prompt token; row 1+i = the mean of the hook point over step i's tokens " +
        "(the step and the token that closes it: its separator, or the end-of-thinking marker after the last step)";

    static string Stem(int start, int end) => $"steps-{start:D7}-{end:D7}";

    public static StoreSettings Settings(DecoderLM model, TraceFormat fmt, IReadOnlyList<TaskProblem> problems, StepOptions o) =>
        StoreSettings.For(model, fmt, problems, new ExtractionOptions
        {
            Point = o.Point, DType = o.DType, Trace = o.Trace, MaxNewTokens = o.MaxNewTokens, RowsPerFile = o.RowsPerFile, Source = o.Source,
        }) with { PositionRule = PositionRule, K = 0 };

    static StepSampling Sampling(TraceFormat fmt, StepOptions o) =>
        new(o.Samples, o.Temperature, o.TopK, o.Greedy, o.Seed, (StepRule.Parse(o.StepRule) ?? StepRule.For(fmt)).ToString());

    /// <summary>Writes (or resumes) the store of <paramref name="problems"/> in <paramref name="dir"/>; a folder made with other settings is refused.</summary>
    public static StepManifest Run(DecoderLM model, TraceFormat fmt, IReadOnlyList<TaskProblem> problems, StepOptions o, string dir,
        Action<string>? progress = null, CancellationToken cancel = default)
    {
        o.Validate();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var settings = Settings(model, fmt, problems, o);
        var sampling = Sampling(fmt, o);
        Directory.CreateDirectory(dir);
        var known = new Dictionary<string, StoreFile>();
        if (File.Exists(Path.Combine(dir, LatentManifest.FileName)))
        {
            var old = StepManifest.Read(dir);
            if (old.Settings.Difference(settings) is { } diff)
                throw new InvalidDataException($"{dir} holds a step store made with other settings ({diff}); write to a new folder");
            if (old.Sampling != sampling)
                throw new InvalidDataException($"{dir} holds a step store sampled otherwise ({old.Sampling} vs {sampling}); write to a new folder");
            foreach (var f in old.Files) known[f.Name] = f;
        }
        var files = new List<StoreFile>();
        int rows = 0, verified = 0;
        for (int a = 0; a < problems.Count; a += o.RowsPerFile)
        {
            cancel.ThrowIfCancellationRequested();
            int b = Math.Min(problems.Count, a + o.RowsPerFile);
            var name = Stem(a, b) + ".safetensors";
            StoreFile? file = known.TryGetValue(name, out var k) && Intact(dir, k) ? k : null;
            if (file is null)
            {
                using var set = StepExtraction.Run(model, fmt, problems.Skip(a).Take(b - a).ToList(), o, a);
                file = WriteFile(dir, a, b, set);
                progress?.Invoke($"problems {a}–{b - 1}: {set.Samples.Count} traces, {set.Samples.Count(s => s.Verified)} verified");
            }
            else progress?.Invoke($"problems {a}–{b - 1}: kept from an earlier run");
            files.Add(file);
            known[name] = file;
            rows += file.Rows;
            new StepManifest { Settings = settings, Sampling = sampling, Files = known.Values.OrderBy(f => f.Start).ToList() }.Write(dir);
        }
        foreach (var f in files) verified += ReadLines(dir, f).Count(s => s.Verified);
        var m = new StepManifest
        {
            Settings = settings, Sampling = sampling, Files = files, Rows = rows, Verified = verified, Complete = true,
            Seconds = Math.Round(sw.Elapsed.TotalSeconds, 2),
        };
        m.Write(dir);
        return m;
    }

    static StoreFile WriteFile(string dir, int start, int end, StepLatents set)
    {
        var stem = Stem(start, end);
        var sb = new StringBuilder();
        foreach (var s in set.Samples) sb.Append(JsonSerializer.Serialize(s, LatentJson.Line)).Append('\n');
        var text = sb.ToString();
        AtomicFile.WriteAllText(Path.Combine(dir, stem + ".jsonl"), text);
        var path = Path.Combine(dir, stem + ".safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["latents"] = set.Latents },
            new Dictionary<string, string> { ["start"] = start.ToString(), ["end"] = end.ToString(), ["rows"] = set.Samples.Count.ToString() });
        return new StoreFile(stem + ".safetensors", start, end, set.Samples.Count)
        {
            Checksum = FileChecksum.OfFile(path),
            SamplesChecksum = FileChecksum.Of(Encoding.UTF8.GetBytes(text)),
        };
    }

    static string LinesPath(string dir, StoreFile f) => Path.Combine(dir, Path.ChangeExtension(f.Name, ".jsonl"));

    static bool Intact(string dir, StoreFile f) => Problem(dir, f) is null;

    static string? Problem(string dir, StoreFile f)
    {
        var path = Path.Combine(dir, f.Name);
        var lines = LinesPath(dir, f);
        if (!File.Exists(path)) return $"{f.Name} is missing";
        if (!File.Exists(lines)) return $"{Path.GetFileName(lines)} is missing";
        if (f.Checksum is { } sum && FileChecksum.Check(path, sum) is { } bad) return bad;
        if (f.SamplesChecksum is { } want && FileChecksum.Of(File.ReadAllBytes(lines)) != want) return $"{lines} is damaged: its text does not match its checksum";
        return null;
    }

    static List<StepSample> ReadLines(string dir, StoreFile f) => Jsonl.ReadAll<StepSample>(LinesPath(dir, f), LatentJson.Line);

    /// <summary>Opens a complete store (samples renumbered 0…n−1 in file order). With a model or tokenizer: it must be the one that made the store.</summary>
    public static StepLatents Open(string dir, DecoderLM? model = null, ITokenizer? tok = null)
    {
        var m = StepManifest.Read(dir);
        if (!m.Complete) throw new InvalidDataException($"{dir}: the extraction that writes this step store has not finished (run it again with the same options to resume)");
        CheckCompatible(dir, m.Settings, model, tok);
        var samples = new List<StepSample>();
        var parts = new List<Tensor>();
        try
        {
            foreach (var f in m.Files)
            {
                if (Problem(dir, f) is { } why) throw new InvalidDataException($"{dir}: {f.Describe(samples.Count)} is damaged ({why}); run the same extraction again to redo it");
                var rows = ReadLines(dir, f);
                using var st = SafetensorsFile.Open(Path.Combine(dir, f.Name));
                var t = st.Read("latents", ScalarType.Float32);
                long need = rows.Sum(r => (long)r.Rows);
                if (t.shape[0] != need || t.shape[1] != m.Settings.HiddenSize)
                    throw new InvalidDataException($"{dir}: {f.Name} holds [{string.Join(", ", t.shape)}], its samples need [{need}, {m.Settings.HiddenSize}]");
                parts.Add(t);
                int first = samples.Count;
                samples.AddRange(rows.Select((r, i) => r with { Index = first + i }));
            }
            using var scope = NewDisposeScope();
            var all = parts.Count == 0 ? zeros(0, m.Settings.HiddenSize) : cat(parts, 0).MoveToOuterDisposeScope();
            return new StepLatents(samples, all);
        }
        finally
        {
            foreach (var t in parts) t.Dispose();
        }
    }

    static void CheckCompatible(string dir, StoreSettings s, DecoderLM? model, ITokenizer? tok)
    {
        if (model is not null)
        {
            if (model.Config.HiddenSize != s.HiddenSize)
                throw new InvalidDataException($"{dir}: the store holds states of size {s.HiddenSize}, the model's hidden size is {model.Config.HiddenSize}");
            if (model.Config.Hash() != s.ModelHash)
                throw new InvalidDataException($"{dir}: the store was extracted from a model with config hash {s.ModelHash}, this model's is {model.Config.Hash()}");
            if (ModelFingerprint.Of(model) is var fp && fp != s.WeightsFingerprint)
                throw new InvalidDataException($"{dir}: the store was extracted from other weights (fingerprint {s.WeightsFingerprint}, this model {fp})");
        }
        if (tok is not null && tok.Hash != s.TokenizerHash)
            throw new InvalidDataException($"{dir}: the store was made with another tokenizer");
    }
}
