using System.Text.Json;
using System.Text.Json.Nodes;

namespace LatentLab.Models;

/// <summary>
/// The one place a Hugging Face config.json maps to a <see cref="TransformerConfig"/> and back: the supported
/// architectures, every key read (an unknown key or architecture is an error, never a silent default), and the
/// config.json written for a saved model.
/// </summary>
public sealed partial record TransformerConfig
{
    static readonly string[] Supported =
        { "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM" };

    /// <summary>Keys we read, plus keys that carry no meaning for inference; any other key is an error.</summary>
    static readonly HashSet<string> Known = new(StringComparer.Ordinal)
    {
        "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "use_cache", "initializer_range",
        "attention_dropout", "hidden_dropout", "_name_or_path", "return_dict", "output_hidden_states", "output_attentions",
        "torchscript", "id2label", "label2id", "problem_type", "tokenizer_class", "pretraining_tp", "mlp_bias",
        "max_window_layers", "use_sliding_window", "cache_implementation", "rope_scaling", "bos_token_id", "eos_token_id",
        "pad_token_id", "quantization_config_disabled", "_attn_implementation_autoset", "use_bidirectional_attention",
        "final_logit_softcapping", "attn_logit_softcapping", "sliding_window_pattern", "layer_types", "attention_bias",
        "max_position_embeddings", "sliding_window", "tie_word_embeddings", "head_dim", "rope_local_base_freq",
        "query_pre_attn_scalar", "hidden_activation", "hidden_act", "rms_norm_eps", "rope_theta", "vocab_size",
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "chunk_size_feed_forward", "is_encoder_decoder", "add_cross_attention", "tie_encoder_decoder", "is_decoder",
        "prefix", "sep_token_id", "decoder_start_token_id", "task_specific_params", "finetuning_task",
        "rope_parameters", "attn_implementation", "embedding_dropout", "residual_dropout",
    };

    /// <summary>Reads a config.json (a file, or a folder that has one).</summary>
    public static TransformerConfig FromHuggingFace(string path)
    {
        var file = Directory.Exists(path) ? Path.Combine(path, "config.json") : path;
        if (!File.Exists(file)) throw new FileNotFoundException($"no config.json at {path}");
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(file)); }
        catch (JsonException e) { throw new InvalidDataException($"{file}: not valid JSON ({e.Message})"); }
        if (node is not JsonObject obj) throw new InvalidDataException($"{file}: config must be a JSON object");
        try { return FromHuggingFace(obj); }
        catch (ArgumentException e) { throw new InvalidDataException($"{file}: {e.Message}", e); }
    }

    public static TransformerConfig FromHuggingFace(JsonObject config)
    {
        // Re-parse so every value is JSON-backed: numbers then read as int or double alike,
        // whether the object came from a file or was built in memory.
        var c = JsonNode.Parse(config.ToJsonString())!.AsObject();
        var arch = (c["architectures"] as JsonArray)?.FirstOrDefault()?.GetValue<string>()
                   ?? throw new ArgumentException("config has no 'architectures' entry");
        if (!Supported.Contains(arch))
            throw new ArgumentException($"unsupported architecture '{arch}'; supported: {string.Join(", ", Supported)}");

        var unknown = c.Select(kv => kv.Key).Where(k => !Known.Contains(k)).ToList();
        if (unknown.Count > 0)
            throw new ArgumentException($"unknown config keys for {arch}: {string.Join(", ", unknown)} (LatentLab refuses to guess what they mean)");

        bool gemma = arch.StartsWith("Gemma");
        int hidden = Int(c, "hidden_size");
        int heads = Int(c, "num_attention_heads");
        int layers = Int(c, "num_hidden_layers");

        var act = Str(c, gemma ? "hidden_activation" : "hidden_act", null) ?? Str(c, "hidden_act", null) ?? (gemma ? "gelu_pytorch_tanh" : "silu");
        var activation = act switch
        {
            "silu" or "swish" => Activation.SiLU,
            "gelu_pytorch_tanh" or "gelu_new" => Activation.GeluTanh,
            "gelu" => Activation.Gelu,
            _ => throw new ArgumentException($"unsupported activation '{act}'"),
        };

        if (c["mlp_bias"]?.GetValue<bool>() == true) throw new ArgumentException("mlp_bias=true is not supported");
        if (c["pretraining_tp"] is { } tp && tp.GetValue<int>() != 1) throw new ArgumentException("pretraining_tp != 1 is not supported");
        if (arch.StartsWith("Qwen") && c["use_sliding_window"]?.GetValue<bool>() == true)
            throw new ArgumentException("use_sliding_window=true (Qwen's per-layer window) is not supported");
        if (c["use_bidirectional_attention"]?.GetValue<bool>() == true)
            throw new ArgumentException("use_bidirectional_attention=true is not supported (decoder models only)");
        if (c["rope_parameters"] is not null)
            throw new ArgumentException("'rope_parameters' (transformers v5 layout) is not supported yet; use rope_theta/rope_scaling");

        var scaling = ParseRopeScaling(c["rope_scaling"] as JsonObject, c["rope_scaling"]);

        int? window = null;
        IReadOnlyList<bool>? slidingLayers = null;
        if (arch is "Gemma2ForCausalLM" or "Gemma3ForCausalLM")
        {
            window = IntOpt(c, "sliding_window");
            if (c["layer_types"] is JsonArray lt)
            {
                slidingLayers = lt.Select(x => x!.GetValue<string>() switch
                {
                    "sliding_attention" => true,
                    "full_attention" => false,
                    var other => throw new ArgumentException($"unknown layer type '{other}'"),
                }).ToList();
            }
            else if (arch == "Gemma2ForCausalLM")
                slidingLayers = Enumerable.Range(0, layers).Select(i => i % 2 == 0).ToList();
            else
            {
                int pattern = IntOpt(c, "sliding_window_pattern") ?? 6;
                slidingLayers = Enumerable.Range(0, layers).Select(i => (i + 1) % pattern != 0).ToList();
            }
            if (window is null) slidingLayers = null;
        }
        else if (c["layer_types"] is JsonArray lt2 && lt2.Any(x => x!.GetValue<string>() != "full_attention"))
            throw new ArgumentException("layer_types other than full_attention are not supported for " + arch);

        var eos = c["eos_token_id"] switch
        {
            JsonArray a => a.Select(x => x!.GetValue<int>()).ToArray(),
            JsonValue v => new[] { v.GetValue<int>() },
            _ => Array.Empty<int>(),
        };

        var cfg = new TransformerConfig
        {
            Architecture = arch,
            VocabSize = Int(c, "vocab_size"),
            HiddenSize = hidden,
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = IntOpt(c, "num_key_value_heads") ?? heads,
            HeadDim = IntOpt(c, "head_dim") ?? hidden / heads,
            IntermediateSize = Int(c, "intermediate_size"),
            Activation = activation,
            Norm = gemma ? NormKind.GemmaRmsNorm : NormKind.RmsNorm,
            NormEps = Dbl(c, "rms_norm_eps", 1e-6),
            SandwichNorm = gemma,
            QkNorm = arch is "Qwen3ForCausalLM" or "Gemma3ForCausalLM",
            // Qwen2 hard-wires biases on q/k/v (not o); the others put attention_bias on all four.
            AttentionBias = arch == "Qwen2ForCausalLM" || (c["attention_bias"]?.GetValue<bool>() ?? false),
            OutputBias = arch != "Qwen2ForCausalLM" && (c["attention_bias"]?.GetValue<bool>() ?? false),
            // transformers' defaults: Llama/Qwen configs untie, Gemma ties.
            TieEmbeddings = c["tie_word_embeddings"]?.GetValue<bool>() ?? gemma,
            ScaleEmbeddings = gemma,
            RopeTheta = Dbl(c, "rope_theta", 10000),
            RopeLocalTheta = arch == "Gemma3ForCausalLM" ? Dbl(c, "rope_local_base_freq", 10000) : null,
            RopeScaling = scaling,
            QueryPreAttnScalar = gemma ? Dbl(c, "query_pre_attn_scalar", IntOpt(c, "head_dim") ?? hidden / heads) : null,
            AttnSoftcap = DblOpt(c, "attn_logit_softcapping"),
            FinalSoftcap = DblOpt(c, "final_logit_softcapping"),
            SlidingWindow = window,
            SlidingLayers = slidingLayers,
            MaxPositions = IntOpt(c, "max_position_embeddings") ?? 4096,
            BosTokenId = IntOpt(c, "bos_token_id"),
            EosTokenIds = eos,
            PadTokenId = IntOpt(c, "pad_token_id"),
        };
        cfg.Validate();
        return cfg;
    }

    static RopeScaling ParseRopeScaling(JsonObject? rs, JsonNode? raw)
    {
        if (raw is null) return new RopeScaling();
        if (rs is null) throw new ArgumentException("rope_scaling must be an object or null");
        var kind = (rs["rope_type"] ?? rs["type"])?.GetValue<string>() ?? throw new ArgumentException("rope_scaling has no rope_type");
        double factor = rs["factor"]?.GetValue<double>() ?? 1.0;
        return kind switch
        {
            "default" => new RopeScaling(),
            "linear" => new RopeScaling(RopeScalingKind.Linear, factor),
            "llama3" => new RopeScaling(RopeScalingKind.Llama3, factor,
                rs["low_freq_factor"]?.GetValue<double>() ?? 1.0,
                rs["high_freq_factor"]?.GetValue<double>() ?? 4.0,
                rs["original_max_position_embeddings"]?.GetValue<int>() ?? 8192),
            _ => throw new ArgumentException($"unsupported rope_scaling type '{kind}' (supported: default, linear, llama3)"),
        };
    }

    /// <summary>The config.json transformers would write for this model.</summary>
    public JsonObject ToHuggingFace(string torchDtype = "float32")
    {
        bool gemma = Architecture.StartsWith("Gemma");
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray(Architecture),
            ["model_type"] = Architecture switch
            {
                "LlamaForCausalLM" => "llama",
                "Qwen2ForCausalLM" => "qwen2",
                "Qwen3ForCausalLM" => "qwen3",
                "Gemma2ForCausalLM" => "gemma2",
                "Gemma3ForCausalLM" => "gemma3_text",
                _ => throw new InvalidOperationException($"no model_type for {Architecture}"),
            },
            ["vocab_size"] = VocabSize,
            ["hidden_size"] = HiddenSize,
            ["num_hidden_layers"] = NumLayers,
            ["num_attention_heads"] = NumHeads,
            ["num_key_value_heads"] = NumKvHeads,
            ["head_dim"] = HeadDim,
            ["intermediate_size"] = IntermediateSize,
            [gemma ? "hidden_activation" : "hidden_act"] = Activation switch
            {
                Activation.SiLU => "silu",
                Activation.GeluTanh => "gelu_pytorch_tanh",
                _ => "gelu",
            },
            ["rms_norm_eps"] = NormEps,
            ["rope_theta"] = RopeTheta,
            ["tie_word_embeddings"] = TieEmbeddings,
            ["max_position_embeddings"] = MaxPositions,
            ["torch_dtype"] = torchDtype,
        };
        if (Architecture != "Qwen2ForCausalLM") o["attention_bias"] = AttentionBias;
        if (RopeScaling.Kind != RopeScalingKind.None)
        {
            var rs = new JsonObject { ["rope_type"] = RopeScaling.Kind == RopeScalingKind.Linear ? "linear" : "llama3", ["factor"] = RopeScaling.Factor };
            if (RopeScaling.Kind == RopeScalingKind.Llama3)
            {
                rs["low_freq_factor"] = RopeScaling.LowFreqFactor;
                rs["high_freq_factor"] = RopeScaling.HighFreqFactor;
                rs["original_max_position_embeddings"] = RopeScaling.OriginalMaxPositions;
            }
            o["rope_scaling"] = rs;
        }
        if (gemma)
        {
            o["query_pre_attn_scalar"] = QueryPreAttnScalar ?? HeadDim;
            o["attn_logit_softcapping"] = AttnSoftcap;
            o["final_logit_softcapping"] = FinalSoftcap;
            o["sliding_window"] = SlidingWindow;
            if (SlidingLayers is not null)
                o["layer_types"] = new JsonArray(SlidingLayers.Select(s => (JsonNode)(s ? "sliding_attention" : "full_attention")).ToArray());
            if (RopeLocalTheta is { } lt) o["rope_local_base_freq"] = lt;
        }
        if (BosTokenId is { } bos) o["bos_token_id"] = bos;
        if (EosTokenIds.Count == 1) o["eos_token_id"] = EosTokenIds[0];
        else if (EosTokenIds.Count > 1) o["eos_token_id"] = new JsonArray(EosTokenIds.Select(e => (JsonNode)e).ToArray());
        if (PadTokenId is { } pad) o["pad_token_id"] = pad;
        return o;
    }

    public void Save(string directory, string torchDtype = "float32")
    {
        Directory.CreateDirectory(directory);
        var text = ToHuggingFace(torchDtype).ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        var path = Path.Combine(directory, "config.json");
        var tmp = path + ".tmp";
        File.WriteAllText(tmp, text);
        File.Move(tmp, path, overwrite: true);
    }

    static int Int(JsonObject c, string key) =>
        IntOpt(c, key) ?? throw new ArgumentException($"config is missing '{key}'");
    static int? IntOpt(JsonObject c, string key) => c[key] is JsonValue v ? (int)v.GetValue<double>() : null;
    static double Dbl(JsonObject c, string key, double dflt) => DblOpt(c, key) ?? dflt;
    static double? DblOpt(JsonObject c, string key) => c[key] is JsonValue v ? v.GetValue<double>() : null;
    static string? Str(JsonObject c, string key, string? dflt) => c[key] is JsonValue v ? v.GetValue<string>() : dflt;
}
