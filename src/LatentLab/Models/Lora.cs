using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LatentLab.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentLab.Models;

/// <summary>LoRA settings, spelled as PEFT's adapter_config.json spells them.</summary>
public sealed record LoraConfig(int Rank = 8, double Alpha = 16, double Dropout = 0.0, IReadOnlyList<string>? TargetModules = null, string? TargetRegex = null)
{
    public IReadOnlyList<string> Targets => TargetModules ?? new[] { "q_proj", "v_proj" };

    public bool Matches(string modulePath)
    {
        if (TargetRegex is not null) return Regex.IsMatch(modulePath, "^(?:" + TargetRegex + ")$");
        return Targets.Any(t => modulePath == t || modulePath.EndsWith("." + t, StringComparison.Ordinal));
    }
}

/// <summary>
/// Attach, train, save, load and merge LoRA adapters on a <see cref="DecoderLM"/>, in PEFT's layout
/// (adapter_model.safetensors with `base_model.model.{module}.lora_A.weight` / `lora_B.weight`, and
/// adapter_config.json), so adapters move between LatentLab and PEFT.
/// </summary>
public static class Lora
{
    const string PeftPrefix = "base_model.model.";

    /// <summary>Wraps every matching projection; returns the wrapped module paths. Base weights are frozen.</summary>
    public static IReadOnlyList<string> Attach(DecoderLM model, LoraConfig config)
    {
        var wrapped = new List<string>();
        foreach (var (path, proj) in model.Projections())
        {
            if (!config.Matches(path)) continue;
            proj.AttachLora(config.Rank, config.Alpha, config.Dropout);
            wrapped.Add(path);
        }
        if (wrapped.Count == 0)
            throw new ArgumentException($"LoRA targets [{string.Join(", ", config.TargetRegex is null ? config.Targets : new[] { config.TargetRegex })}] match no projection of this model");
        FreezeBase(model);
        return wrapped;
    }

    /// <summary>Only adapter parameters keep requires_grad.</summary>
    public static void FreezeBase(DecoderLM model)
    {
        foreach (var (name, p) in model.named_parameters())
            p.requires_grad = name.Contains(".lora.");
    }

    public static IReadOnlyList<Parameter> TrainableParameters(DecoderLM model) =>
        model.named_parameters().Where(p => p.name.Contains(".lora.")).Select(p => p.parameter).ToList();

    /// <summary>Switches every adapter on or off without removing it (off = the base model's own forward).</summary>
    public static void SetEnabled(DecoderLM model, bool enabled)
    {
        foreach (var (_, proj) in model.Projections()) proj.LoraEnabled = enabled;
    }

    static IEnumerable<(string Path, LoraAdapter Adapter)> Adapters(DecoderLM model) =>
        model.Projections().Where(p => p.Proj.Lora is not null).Select(p => (p.Path, p.Proj.Lora!));

    public static void Save(DecoderLM model, string directory, LoraConfig config, string? baseModel = null)
    {
        var adapters = Adapters(model).ToList();
        if (adapters.Count == 0) throw new InvalidOperationException("the model has no LoRA adapters to save");
        Directory.CreateDirectory(directory);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (path, a) in adapters)
        {
            tensors.Add(new(PeftPrefix + path + ".lora_A.weight", a.A.detach().cpu()));
            tensors.Add(new(PeftPrefix + path + ".lora_B.weight", a.B.detach().cpu()));
        }
        SafetensorsWriter.Write(Path.Combine(directory, "adapter_model.safetensors"), tensors,
            new Dictionary<string, string> { ["format"] = "pt" });
        var cfg = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["r"] = config.Rank,
            ["lora_alpha"] = config.Alpha,
            ["lora_dropout"] = config.Dropout,
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["use_rslora"] = false,
            ["use_dora"] = false,
            ["modules_to_save"] = null,
            ["base_model_name_or_path"] = baseModel,
            ["target_modules"] = config.TargetRegex is not null
                ? JsonValue.Create(config.TargetRegex)
                : new JsonArray(config.Targets.Select(t => (JsonNode)JsonValue.Create(t)!).ToArray()),
        };
        AtomicFile.WriteAllText(Path.Combine(directory, "adapter_config.json"), cfg.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    public static LoraConfig ReadConfig(string directory)
    {
        var file = Path.Combine(directory, "adapter_config.json");
        if (!File.Exists(file)) throw new FileNotFoundException($"no adapter_config.json in {directory}");
        var c = JsonNode.Parse(File.ReadAllText(file)) as JsonObject ?? throw new InvalidDataException($"{file}: not a JSON object");
        var type = c["peft_type"]?.GetValue<string>();
        if (type != "LORA") throw new InvalidDataException($"{file}: peft_type '{type}' is not LORA");
        foreach (var flag in new[] { "use_dora", "use_rslora", "fan_in_fan_out" })
            if (c[flag]?.GetValue<bool>() == true) throw new InvalidDataException($"{file}: {flag}=true is not supported");
        if (c["bias"]?.GetValue<string>() is { } bias && bias != "none") throw new InvalidDataException($"{file}: bias='{bias}' is not supported");
        var targets = c["target_modules"];
        return new LoraConfig(
            Rank: c["r"]?.GetValue<int>() ?? throw new InvalidDataException($"{file}: missing r"),
            Alpha: c["lora_alpha"]?.GetValue<double>() ?? 8,
            Dropout: c["lora_dropout"]?.GetValue<double>() ?? 0,
            TargetModules: targets is JsonArray arr ? arr.Select(x => x!.GetValue<string>()).ToList() : null,
            TargetRegex: targets is JsonValue v ? v.GetValue<string>() : null);
    }

    /// <summary>Attaches adapters from a PEFT folder and loads their weights; every tensor must find its module.</summary>
    public static LoraConfig Load(DecoderLM model, string directory)
    {
        var config = ReadConfig(directory);
        var wrapped = Attach(model, config);
        using var file = SafetensorsCheckpoint.Open(Path.Combine(directory, "adapter_model.safetensors"));
        var byPath = Adapters(model).ToDictionary(a => a.Path, a => a.Adapter);
        var seen = new HashSet<string>();
        using (no_grad())
        {
            foreach (var name in file.Names)
            {
                var key = name.StartsWith(PeftPrefix) ? name[PeftPrefix.Length..] : name;
                // PEFT may keep the adapter name: ...q_proj.lora_A.default.weight
                var m = Regex.Match(key, @"^(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$");
                if (!m.Success || !byPath.TryGetValue(m.Groups[1].Value, out var adapter))
                    throw new InvalidDataException($"{directory}: adapter tensor '{name}' matches no LoRA module of this model");
                var target = m.Groups[2].Value == "A" ? adapter.A : adapter.B;
                using var t = file.Read(name, target.dtype, target.device);
                if (!t.shape.SequenceEqual(target.shape))
                    throw new InvalidDataException($"{directory}: '{name}' has shape [{string.Join(",", t.shape)}], expected [{string.Join(",", target.shape)}]");
                target.copy_(t);
                seen.Add(name);
            }
        }
        var missing = wrapped.Where(p => !seen.Any(s => s.Contains(p + ".lora_A")) || !seen.Any(s => s.Contains(p + ".lora_B"))).ToList();
        if (missing.Count > 0)
            throw new InvalidDataException($"{directory}: no adapter weights for {string.Join(", ", missing.Take(5))}");
        return config;
    }

    /// <summary>Folds every adapter into its base weight (W += B·A·alpha/r) and removes the adapters.</summary>
    public static void Merge(DecoderLM model)
    {
        foreach (var (_, proj) in model.Projections()) proj.MergeLora();
        foreach (var p in model.parameters()) p.requires_grad = true;
    }
}
