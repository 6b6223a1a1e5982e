using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using LatentLab.Models;
using LatentLab.Tasks;
using static TorchSharp.torch;

namespace LatentLab.Latents;

/// <summary>
/// Everything that decides what a store's rows are. Two folders may be resumed into or merged with each other only
/// when these are equal. <see cref="ModelHash"/> is <see cref="TransformerConfig.Hash"/> (the architecture);
/// <see cref="WeightsFingerprint"/> tells two trainings of one architecture apart.
/// </summary>
public sealed record StoreSettings
{
    public required string ModelHash { get; init; }
    public required string WeightsFingerprint { get; init; }
    public required string Architecture { get; init; }
    public required int HiddenSize { get; init; }
    public required int NumLayers { get; init; }
    public required string TokenizerHash { get; init; }
    public required string ChatFamily { get; init; }
    /// <summary>The hook point, layer resolved (blocks.-2.resid_post on 4 layers is blocks.2.resid_post).</summary>
    public required string Point { get; init; }
    public required string PositionRule { get; init; }
    public required TraceMode Trace { get; init; }
    [JsonPropertyName("dtype")] public required string DType { get; init; }
    public required string Compute { get; init; }
    public required int K { get; init; }
    public int? MaxNewTokens { get; init; }
    public TaskSource? Source { get; init; }
    /// <summary>Size of the whole problem list that `--shard i/N` slices, and a hash of its prompts.</summary>
    public required int Problems { get; init; }
    public required string ProblemsHash { get; init; }
    public required int RowsPerFile { get; init; }

    public const string Rule =
        "pre: the hook point at the last prompt token (before any thinking); post: K states ending at the token that " +
        "completes the end-of-thinking marker (positions post-K+1..post); every position is before the first answer token, " +
        "and the forward pass that computes them stops at post, so no answer token is ever seen";

    /// <summary>The settings of this model, format and option set over a given problem list.</summary>
    public static StoreSettings For(DecoderLM model, Teacher.TraceFormat fmt, IReadOnlyList<TaskProblem> problems, ExtractionOptions o)
    {
        var c = model.Config;
        return new StoreSettings
        {
            ModelHash = c.Hash(),
            WeightsFingerprint = ModelFingerprint.Of(model),
            Architecture = c.Architecture,
            HiddenSize = c.HiddenSize,
            NumLayers = c.NumLayers,
            TokenizerHash = fmt.Tokenizer.Hash,
            ChatFamily = fmt.Chat.Family.ToString(),
            Point = Hooks.HookPoint.Parse(o.Point).Resolve(c.NumLayers).ToString(),
            PositionRule = Rule,
            Trace = o.Trace,
            DType = Tensors.TorchRuntime.DTypeName(Tensors.TorchRuntime.ParseDType(o.DType)),
            Compute = Tensors.TorchRuntime.DTypeName(o.Compute is null ? model.ComputeDType : Tensors.TorchRuntime.ParseDType(o.Compute)),
            K = o.K,
            MaxNewTokens = o.MaxNewTokens,
            Source = o.Source,
            Problems = problems.Count,
            ProblemsHash = HashProblems(problems),
            RowsPerFile = o.RowsPerFile,
        };
    }

    static string HashProblems(IReadOnlyList<TaskProblem> problems)
    {
        var sb = new StringBuilder();
        foreach (var p in problems) sb.Append(p.Family).Append('\n').Append(p.Prompt).Append('\n').Append(p.Answer).Append('\n');
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString()))).ToLowerInvariant()[..16];
    }

    /// <summary>The first setting that differs, as "name: a vs b", or null when equal.</summary>
    public string? Difference(StoreSettings other)
    {
        var a = JsonSerializer.SerializeToElement(this, LatentJson.Options);
        var b = JsonSerializer.SerializeToElement(other, LatentJson.Options);
        foreach (var prop in a.EnumerateObject())
        {
            var left = prop.Value.GetRawText();
            var right = b.TryGetProperty(prop.Name, out var v) ? v.GetRawText() : "null";
            if (left != right) return $"{prop.Name}: {left} vs {right}";
        }
        return this == other ? null : "settings differ";
    }
}

/// <summary>
/// One safetensors file of a store: the problems [Start, End) it covers and the rows it holds, with the content checksum
/// of the file and of its rows' lines in samples.jsonl (<see cref="IO.FileChecksum"/>; null in stores written before checksums).
/// </summary>
public sealed record StoreFile(string Name, int Start, int End, int Rows)
{
    public string? Checksum { get; init; }
    public string? SamplesChecksum { get; init; }

    /// <summary>"latents-….safetensors (problems 4–7, store rows 3–6)": what a person needs to find the damage.</summary>
    public string Describe(int firstRow) =>
        $"{Name} (problems {Start}–{End - 1}, {(Rows == 0 ? "no rows" : $"store rows {firstRow}–{firstRow + Rows - 1}")})";
}

/// <summary>manifest.json of a latent store.</summary>
public sealed record LatentManifest
{
    public const string FormatName = "latentlab.latents/1";
    public const string FileName = "manifest.json";

    public string Format { get; init; } = FormatName;
    public required StoreSettings Settings { get; init; }
    /// <summary>The job shards (`i/N`) this folder holds; several after a merge.</summary>
    public required List<string> Shards { get; init; }
    public List<StoreFile> Files { get; init; } = new();
    public int Rows { get; init; }
    public int Verified { get; init; }
    public List<SkippedProblem> Skipped { get; init; } = new();
    public bool Complete { get; init; }
    public double Seconds { get; init; }
    /// <summary>The manifest's checksum over its own text (<see cref="IO.FileChecksum.Seal"/>), so damage to settings or file list is caught.</summary>
    public string? SelfChecksum { get; init; }

    /// <summary>False for a store written before checksums: it opens, but nothing vouches for its content.</summary>
    [JsonIgnore] public bool Checksummed => Files.Count > 0 && Files.All(f => f.Checksum is not null && f.SamplesChecksum is not null);

    public static LatentManifest Read(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"{dir}: not a latent store (no {FileName})", path);
        var text = File.ReadAllText(path);
        LatentManifest? m;
        try { m = JsonSerializer.Deserialize<LatentManifest>(text, LatentJson.Options); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a valid latent store manifest ({e.Message})", e); }
        if (m is null) throw new InvalidDataException($"{path}: empty manifest");
        if (m.Format != FormatName) throw new InvalidDataException($"{path}: format '{m.Format}', expected '{FormatName}'");
        var seal = IO.FileChecksum.CheckSeal(text, path, out var why);
        // A manifest that lists checksums but has no seal cannot be an old one: the seal's key was damaged.
        if (seal == IO.Integrity.Unverified && m.Files.Any(f => f.Checksum is not null))
        {
            seal = IO.Integrity.Damaged;
            why = $"{path} is damaged: it lists checksums but has no {IO.FileChecksum.SealKey}";
        }
        if (seal == IO.Integrity.Damaged)
            throw new InvalidDataException($"{why}; the shards may be intact, but what they hold is no longer known for sure: " +
                "restore the folder from a copy, or extract into a new folder");
        return m;
    }

    public void Write(string dir) =>
        IO.AtomicFile.WriteAllText(Path.Combine(dir, FileName),
            IO.FileChecksum.Seal(JsonSerializer.Serialize(this with { SelfChecksum = IO.FileChecksum.Placeholder }, LatentJson.Options) + "\n"));
}

/// <summary>JSON settings shared by manifests and samples.jsonl (snake_case, enums as names).</summary>
public static class LatentJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        // Prompts are full of '+' and '<': keep them readable in the files.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public static readonly JsonSerializerOptions Line = new(Options) { WriteIndented = false };
}

/// <summary>
/// A cheap fingerprint of a model's weights: SHA-256 over each parameter's name, shape and first 4096 values rounded
/// to bf16 (so the same checkpoint loaded in f32 or bf16 agrees). Different trainings of one architecture differ.
/// </summary>
public static class ModelFingerprint
{
    public static string Of(DecoderLM model)
    {
        using var scope = NewDisposeScope();
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, p) in model.named_parameters())
        {
            if (name.Contains(".lora.", StringComparison.Ordinal)) continue;
            sha.AppendData(Encoding.UTF8.GetBytes(name + "[" + string.Join(",", p.shape) + "]"));
            var head = p.detach().flatten();
            head = head.narrow(0, 0, Math.Min(4096, head.shape[0])).to(ScalarType.BFloat16).to(ScalarType.Float32).cpu();
            var values = head.data<float>().ToArray();
            var bytes = new byte[values.Length * 4];
            Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
            sha.AppendData(bytes);
        }
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant()[..16];
    }
}
