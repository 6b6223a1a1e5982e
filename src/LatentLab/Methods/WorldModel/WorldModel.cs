using System.Text.Json;
using System.Text.Json.Serialization;
using LatentLab.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LatentLab.Methods.WorldModel;

public enum WorldLoss { L1, SmoothL1, Cosine }

/// <summary>
/// The world model's shape and loss. Context encoder and target encoder: <see cref="Layers"/> bidirectional blocks of
/// width <see cref="Width"/> over step latents; predictor: <see cref="PredictorLayers"/> blocks over the encoded context
/// plus mask tokens. Masks: contiguous spans covering <see cref="SpanMin"/>–<see cref="SpanMax"/> of the steps, or (with
/// probability <see cref="NextStepShare"/>) every step from a point on. Loss: <see cref="Loss"/> between the predictor's
/// output and the stop-gradient target-encoder output at masked steps, plus <see cref="LatentWeight"/> × the same loss
/// between the latent head's output and the standardised step latent itself (what NUDGE and PLAN inject), plus
/// <see cref="VarianceWeight"/> × a variance hinge and <see cref="InfoNceWeight"/> × InfoNCE against the batch's other traces.
/// </summary>
public sealed record WorldModelConfig
{
    public int Width { get; init; } = 128;
    public int Layers { get; init; } = 2;
    public int PredictorLayers { get; init; } = 2;
    public int Heads { get; init; } = 4;
    /// <summary>Longest trace in steps (plus the prompt row) the position embeddings cover.</summary>
    public int MaxSteps { get; init; } = 48;
    public WorldLoss Loss { get; init; } = WorldLoss.L1;
    public double LatentWeight { get; init; } = 1.0;
    public double VarianceWeight { get; init; } = 0.01;
    public double InfoNceWeight { get; init; }
    public double InfoNceTemperature { get; init; } = 0.1;
    public double SpanMin { get; init; } = 0.3;
    public double SpanMax { get; init; } = 0.7;
    public double NextStepShare { get; init; } = 0.5;

    public void Validate()
    {
        void Need(bool ok, string what) { if (!ok) throw new ArgumentException($"world model: {what}"); }
        Need(Width > 0 && Heads > 0 && Width % Heads == 0, $"width {Width} must be a positive multiple of heads {Heads}");
        Need(Layers >= 1 && PredictorLayers >= 1, "layers and predictor layers must be >= 1");
        Need(MaxSteps >= 2, $"max steps must be >= 2 (got {MaxSteps})");
        Need(SpanMin > 0 && SpanMin <= SpanMax && SpanMax <= 1, $"span bounds must satisfy 0 < min <= max <= 1 (got {SpanMin}, {SpanMax})");
        Need(NextStepShare is >= 0 and <= 1, $"next-step share must be in [0, 1] (got {NextStepShare})");
        Need(LatentWeight >= 0 && VarianceWeight >= 0 && InfoNceWeight >= 0, "loss weights must be >= 0");
        Need(InfoNceTemperature > 0, "InfoNCE temperature must be > 0");
    }

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };
}

/// <summary>A pre-norm transformer block without a causal mask: every step sees every visible step.</summary>
public sealed class StepBlock : nn.Module
{
    readonly LayerNorm norm1, norm2;
    readonly Linear qkv, proj, up, down;
    readonly int _heads;

    public StepBlock(int width, int heads) : base(nameof(StepBlock))
    {
        _heads = heads;
        norm1 = nn.LayerNorm(width);
        norm2 = nn.LayerNorm(width);
        qkv = nn.Linear(width, 3 * width);
        proj = nn.Linear(width, width);
        up = nn.Linear(width, 4 * width);
        down = nn.Linear(4 * width, width);
        RegisterComponents();
    }

    /// <summary>x [B, L, W]; <paramref name="bias"/> [B, 1, 1, L]: 0 for keys that may be attended to, a large negative number otherwise.</summary>
    public Tensor Forward(Tensor x, Tensor bias)
    {
        long b = x.shape[0], l = x.shape[1], w = x.shape[2];
        var parts = qkv.forward(norm1.forward(x)).view(b, l, 3, _heads, w / _heads).permute(2, 0, 3, 1, 4);
        var a = F.scaled_dot_product_attention(parts[0], parts[1], parts[2], bias);
        x = x + proj.forward(a.transpose(1, 2).reshape(b, l, w));
        return x + down.forward(F.gelu(up.forward(norm2.forward(x))));
    }
}

/// <summary>Step latents (standardised) → width, plus step-position embeddings, through bidirectional blocks.</summary>
public sealed class StepEncoder : nn.Module
{
    readonly Linear input;
    readonly Embedding position;
    readonly ModuleList<StepBlock> blocks;
    readonly LayerNorm norm;

    public StepEncoder(int dim, WorldModelConfig c) : base(nameof(StepEncoder))
    {
        input = nn.Linear(dim, c.Width);
        position = nn.Embedding(c.MaxSteps, c.Width);
        blocks = nn.ModuleList(Enumerable.Range(0, c.Layers).Select(_ => new StepBlock(c.Width, c.Heads)).ToArray());
        norm = nn.LayerNorm(c.Width);
        RegisterComponents();
    }

    /// <summary>x [B, L, D]; <paramref name="keys"/> [B, L] bool: which steps the encoder may look at.</summary>
    public Tensor Forward(Tensor x, Tensor keys)
    {
        var h = input.forward(x) + position.forward(arange(x.shape[1], dtype: ScalarType.Int64, device: x.device)).unsqueeze(0);
        var bias = WorldModel.KeyBias(keys, h.dtype);
        foreach (var blk in blocks) h = blk.Forward(h, bias);
        return norm.forward(h);
    }
}

/// <summary>Fills masked steps: encoded context where visible, a learned mask token plus the step's position embedding where masked.</summary>
public sealed class StepPredictor : nn.Module
{
    readonly Parameter mask_token;
    readonly Embedding position;
    readonly ModuleList<StepBlock> blocks;
    readonly LayerNorm norm;
    readonly Linear output;

    public StepPredictor(WorldModelConfig c) : base(nameof(StepPredictor))
    {
        mask_token = nn.Parameter(randn(c.Width) * 0.02);
        position = nn.Embedding(c.MaxSteps, c.Width);
        blocks = nn.ModuleList(Enumerable.Range(0, c.PredictorLayers).Select(_ => new StepBlock(c.Width, c.Heads)).ToArray());
        norm = nn.LayerNorm(c.Width);
        output = nn.Linear(c.Width, c.Width);
        RegisterComponents();
    }

    /// <summary>context [B, L, W]; masked [B, L] bool; valid [B, L] bool (real steps, padding false).</summary>
    public Tensor Forward(Tensor context, Tensor masked, Tensor valid)
    {
        var pos = position.forward(arange(context.shape[1], dtype: ScalarType.Int64, device: context.device)).unsqueeze(0);
        var h = where(masked.unsqueeze(-1), mask_token.view(1, 1, -1) + pos, context + pos);
        var bias = WorldModel.KeyBias(valid, h.dtype);
        foreach (var blk in blocks) h = blk.Forward(h, bias);
        return output.forward(norm.forward(h));
    }
}

/// <summary>What one masked forward pass gives: predictions and targets at every position (read them where masked).</summary>
public sealed record WorldPass(Tensor Predicted, Tensor Target, Tensor PredictedLatent, Tensor Latent, Tensor Context) : IDisposable
{
    public void Dispose()
    {
        Predicted.Dispose(); Target.Dispose(); PredictedLatent.Dispose(); Latent.Dispose(); Context.Dispose();
    }
}

/// <summary>
/// R-JEPA's world model of reasoning steps, I-JEPA style: a context encoder sees the visible steps, a predictor fills
/// the masked ones from it, and a target encoder — an EMA copy of the context encoder that no gradient reaches — says
/// what they should have been. Latents are standardised with the training set's per-dimension mean and std (kept here,
/// frozen). A latent head maps predictions back to (standardised) hidden states for re-injection into the LM.
/// </summary>
public sealed class WorldModel : nn.Module
{
    readonly Parameter latent_mean, latent_std;
    public readonly StepEncoder context;
    public readonly StepEncoder target;
    public readonly StepPredictor predictor;
    readonly Linear latent_head;

    public WorldModelConfig Config { get; }
    public int Dim { get; }

    public WorldModel(int dim, WorldModelConfig config) : base(nameof(WorldModel))
    {
        config.Validate();
        Config = config;
        Dim = dim;
        latent_mean = nn.Parameter(zeros(dim), requires_grad: false);
        latent_std = nn.Parameter(ones(dim), requires_grad: false);
        context = new StepEncoder(dim, config);
        target = new StepEncoder(dim, config);
        predictor = new StepPredictor(config);
        latent_head = nn.Linear(config.Width, dim);
        RegisterComponents();
        Ema = Training.Ema.IntoTarget(context, target);
    }

    /// <summary>The target encoder's averager (τ from the schedule after each update).</summary>
    public Training.Ema Ema { get; }

    public static Tensor KeyBias(Tensor keys, ScalarType dtype) =>
        where(keys, 0.0f, -1e9f).to(dtype).view(keys.shape[0], 1, 1, keys.shape[1]);

    /// <summary>Sets the standardisation from training rows [N, D] (std floored so a constant dimension does not explode).</summary>
    public void SetStandardisation(Tensor rows)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var r = rows.to(ScalarType.Float32).to(latent_mean.device);
        latent_mean.copy_(r.mean([0]));
        latent_std.copy_(r.std(0).clamp_min(1e-4));
    }

    public Tensor Standardise(Tensor x) => (x - latent_mean) / latent_std;
    public Tensor Unstandardise(Tensor z) => z * latent_std + latent_mean;

    /// <summary>
    /// One masked pass over padded latents x [B, L, D] (raw hidden states). <paramref name="masked"/> [B, L] marks the steps
    /// to predict, <paramref name="valid"/> the real ones. Targets are computed without gradient (stop-gradient) and
    /// layer-normalised as in I-JEPA.
    /// </summary>
    public WorldPass Forward(Tensor x, Tensor masked, Tensor valid)
    {
        using var scope = NewDisposeScope();
        var z = Standardise(x);
        var visible = valid.logical_and(masked.logical_not());
        var ctx = context.Forward(z, visible);
        var pred = predictor.Forward(ctx, masked, valid);
        Tensor tgt;
        using (no_grad())
        {
            var t = target.Forward(z, valid);
            tgt = F.layer_norm(t, [t.shape[^1]]).detach();
        }
        var latent = latent_head.forward(pred);
        return new WorldPass(pred.MoveToOuterDisposeScope(), tgt.MoveToOuterDisposeScope(), latent.MoveToOuterDisposeScope(),
            z.MoveToOuterDisposeScope(), ctx.MoveToOuterDisposeScope());
    }

    /// <summary>Per-position distance [B, L] under the configured loss (mean over features).</summary>
    public Tensor Distance(Tensor a, Tensor b) => Config.Loss switch
    {
        WorldLoss.L1 => (a - b).abs().mean([-1]),
        WorldLoss.SmoothL1 => F.smooth_l1_loss(a, b, reduction: nn.Reduction.None).mean([-1]),
        _ => 1 - F.cosine_similarity(a, b, -1),
    };

    // ---- files ----

    public const string ConfigFile = "world_model.json", WeightsFile = "world_model.safetensors";

    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), JsonSerializer.Serialize(new Saved(Dim, Config), WorldModelConfig.Json) + "\n");
        using var scope = NewDisposeScope();
        SafetensorsWriter.Write(Path.Combine(dir, WeightsFile),
            named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().cpu().contiguous()), new Dictionary<string, string>());
    }

    public static WorldModel Load(string dir)
    {
        var cfgPath = Path.Combine(dir, ConfigFile);
        if (!File.Exists(cfgPath)) throw new FileNotFoundException($"{dir}: not a world model folder (no {ConfigFile}; train one with `rjepa train`)", cfgPath);
        var saved = JsonSerializer.Deserialize<Saved>(File.ReadAllText(cfgPath), WorldModelConfig.Json)
            ?? throw new InvalidDataException($"{cfgPath}: empty");
        var wm = new WorldModel(saved.Dim, saved.Config);
        using var st = SafetensorsFile.Open(Path.Combine(dir, WeightsFile));
        using var _ = no_grad();
        foreach (var (name, p) in wm.named_parameters())
        {
            if (!st.Contains(name)) throw new InvalidDataException($"{dir}: {WeightsFile} has no '{name}'");
            using var t = st.Read(name, ScalarType.Float32);
            if (!t.shape.SequenceEqual(p.shape)) throw new InvalidDataException($"{dir}: '{name}' is [{string.Join(",", t.shape)}], expected [{string.Join(",", p.shape)}]");
            p.copy_(t);
        }
        wm.eval();
        return wm;
    }

    sealed record Saved(int Dim, WorldModelConfig Config);
}
