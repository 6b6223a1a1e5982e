using LatentLab.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Models;

/// <summary>
/// Hugging Face model folders: config.json + model.safetensors (or shards + index) + tokenizer files.
/// What LatentLab writes here, transformers reads, and the other way round. LatentLab adds checksums.json
/// (<see cref="ChecksumManifest"/>), checked on every load, so a damaged export fails loudly instead of loading wrong weights.
/// </summary>
public static class Checkpoints
{
    static readonly string[] TokenizerFiles =
        { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "chat_template.jinja" };

    /// <summary>
    /// Loads a model folder into a new <see cref="DecoderLM"/> in <paramref name="dtype"/> (default float32). A folder
    /// whose checksums.json names a damaged file is an error; one without (Hugging Face downloads, older exports) loads unverified.
    /// </summary>
    public static DecoderLM Load(string directory, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"model folder not found: {directory}");
        var integrity = ChecksumManifest.Verify(directory);
        if (integrity.State == Integrity.Damaged)
            throw new InvalidDataException($"{directory}: {integrity.Problem}; export the model again (re-running the command that wrote it does) " +
                $"or restore the folder from a copy (a file changed on purpose: delete {ChecksumManifest.FileName} to load the folder unverified)");
        var config = TransformerConfig.FromHuggingFace(directory);
        using var weights = SafetensorsCheckpoint.Open(directory);
        var model = new DecoderLM(config);
        try
        {
            model.to(dtype);
            if (device is not null) model.to(device);
            LoadWeights(model, weights, directory);
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Copies every parameter from the checkpoint; missing, unexpected or mis-shaped tensors are errors.</summary>
    public static void LoadWeights(DecoderLM model, SafetensorsCheckpoint weights, string source)
    {
        var expected = model.named_parameters().Where(p => !p.name.Contains(".lora.")).ToDictionary(p => p.name, p => p.parameter);
        var missing = expected.Keys.Where(k => !weights.Contains(k)).ToList();
        if (missing.Count > 0)
            throw new InvalidDataException($"{source}: checkpoint lacks {missing.Count} weight(s), e.g. {string.Join(", ", missing.Take(3))}");
        var unexpected = weights.Names.Where(n => !expected.ContainsKey(n) && !Ignorable(n, model.Config)).ToList();
        if (unexpected.Count > 0)
            throw new InvalidDataException($"{source}: checkpoint has {unexpected.Count} weight(s) this {model.Config.Architecture} does not use, e.g. {string.Join(", ", unexpected.Take(3))}");
        using var _ = no_grad();
        foreach (var (name, p) in expected)
        {
            using var scope = NewDisposeScope();
            var t = weights.Read(name, p.dtype, p.device);
            if (!t.shape.SequenceEqual(p.shape))
                throw new InvalidDataException($"{source}: '{name}' has shape [{string.Join(",", t.shape)}], the config implies [{string.Join(",", p.shape)}]");
            p.copy_(t);
        }
    }

    static bool Ignorable(string name, TransformerConfig c) =>
        name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal) || (c.TieEmbeddings && name == "lm_head.weight");

    /// <summary>
    /// Writes config.json and weights (one file up to <paramref name="maxShardBytes"/>, shards beyond), plus the
    /// tokenizer files found in <paramref name="tokenizerSource"/> when given. Weights are written in their
    /// current dtype; adapters are not part of the base weights (see <see cref="Lora.Save"/>).
    /// </summary>
    public static void Save(DecoderLM model, string directory, string? tokenizerSource = null, long maxShardBytes = 2L << 30)
    {
        Directory.CreateDirectory(directory);
        var dtype = model.DType;
        model.Config.Save(directory, dtype switch
        {
            ScalarType.BFloat16 => "bfloat16",
            ScalarType.Float16 => "float16",
            _ => "float32",
        });
        var tensors = model.named_parameters()
            .Where(p => !p.name.Contains(".lora."))
            .Select(p => new KeyValuePair<string, Tensor>(p.name, p.parameter.detach().cpu().contiguous()))
            .ToList();
        try
        {
            SafetensorsWriter.WriteSharded(directory, tensors, maxShardBytes, new Dictionary<string, string> { ["format"] = "pt" });
        }
        finally
        {
            foreach (var t in tensors) t.Value.Dispose();
        }
        if (tokenizerSource is not null && Path.GetFullPath(tokenizerSource) != Path.GetFullPath(directory))
            foreach (var f in TokenizerFiles)
            {
                var src = Path.Combine(tokenizerSource, f);
                if (File.Exists(src)) File.Copy(src, Path.Combine(directory, f), overwrite: true);
            }
        Seal(directory);
    }

    /// <summary>
    /// Writes checksums.json over every file now in the folder; call it again after adding files to a saved folder
    /// (a tokenizer saved beside the weights), or they stay unchecked.
    /// </summary>
    public static void Seal(string directory) => ChecksumManifest.Write(directory);
}
