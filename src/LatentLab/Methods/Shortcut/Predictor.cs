using System.Text.Json;
using System.Text.Json.Serialization;
using LatentLab.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

public enum PredictorKind { Mlp, Transformer }

public enum PredictorLoss { Cosine, Mse, SmoothL1 }

/// <summary>
/// Everything that defines a predictor and how it is trained (written to the run's config.json and next to the weights).
/// The latent loss compares the prediction with a stop-gradient target in standardised space; with
/// <see cref="ProjectorDim"/> &gt; 0 a second loss compares an online projection of the prediction with a
/// stop-gradient projection of the target, whose projector is either the online one (SimSiam-style) or, with
/// <see cref="EmaProjector"/>, an EMA copy of it (I-JEPA/BYOL-style).
/// </summary>
public sealed record PredictorConfig
{
    public PredictorKind Kind { get; init; } = PredictorKind.Mlp;
    public int Hidden { get; init; } = 512;
    /// <summary>MLP: residual blocks; transformer: encoder layers over [input token, K slot tokens].</summary>
    public int Layers { get; init; } = 2;
    /// <summary>Transformer only.</summary>
    public int Heads { get; init; } = 4;
    /// <summary>Output slots; must equal the store's post-states per problem.</summary>
    public int K { get; init; } = 1;
    public PredictorLoss Loss { get; init; } = PredictorLoss.Cosine;
    /// <summary>Weight of the direct latent loss (prediction vs. target in standardised space).</summary>
    public double LatentWeight { get; init; } = 1.0;
    /// <summary>VICReg variance hinge (per-dimension std below 1 is penalised) on the predicted features.</summary>
    public double VarWeight { get; init; } = 0.1;
    /// <summary>VICReg covariance penalty (squared off-diagonal covariance / D) on the predicted features.</summary>
    public double CovWeight { get; init; } = 0.01;
    /// <summary>0 = no projector (the loss acts on the latent only).</summary>
    public int ProjectorDim { get; init; }
    public double ProjectorWeight { get; init; } = 1.0;
    public bool EmaProjector { get; init; }
    /// <summary>EMA momentum at the first step; it rises linearly to 1 at the last (I-JEPA's schedule).</summary>
    public double EmaMomentum { get; init; } = 0.996;
    public long Steps { get; init; } = 2000;
    public int BatchSize { get; init; } = 128;
    public double LearningRate { get; init; } = 1e-3;
    public long WarmupSteps { get; init; } = 100;
    public double WeightDecay { get; init; } = 0.05;
    public double Dropout { get; init; }
    public long Seed { get; init; }
    /// <summary>Per-dimension standardisation from the train set (real hidden states have a few huge dimensions).</summary>
    public bool Standardize { get; init; } = true;
    public long EvalEvery { get; init; } = 200;
    public long CheckpointEvery { get; init; } = 500;
    /// <summary>Validation problems used by the in-training retrieval metric (the pool is capped to keep evaluation cheap).</summary>
    public int EvalPool { get; init; } = 1024;

    public void Validate()
    {
        static void Check(bool ok, string message)
        {
            if (!ok) throw new ArgumentException($"predictor config: {message}");
        }
        Check(Hidden > 0, $"Hidden must be positive (got {Hidden})");
        Check(Layers >= 0, $"Layers must be ≥ 0 (got {Layers})");
        Check(K >= 1, $"K must be ≥ 1 (got {K})");
        Check(Kind != PredictorKind.Transformer || (Layers >= 1 && Heads >= 1 && Hidden % Heads == 0),
            $"a transformer predictor needs Layers ≥ 1 and Hidden divisible by Heads (got Layers {Layers}, Hidden {Hidden}, Heads {Heads})");
        Check(LatentWeight >= 0 && VarWeight >= 0 && CovWeight >= 0 && ProjectorWeight >= 0, "loss weights must be ≥ 0");
        Check(LatentWeight > 0 || (ProjectorDim > 0 && ProjectorWeight > 0), "some loss must have a positive weight");
        Check(ProjectorDim >= 0, $"ProjectorDim must be ≥ 0 (got {ProjectorDim})");
        Check(!EmaProjector || ProjectorDim > 0, "EmaProjector needs ProjectorDim > 0");
        Check(EmaMomentum is >= 0 and <= 1, $"EmaMomentum must be in [0, 1] (got {EmaMomentum})");
        Check(Steps > 0 && BatchSize > 0, $"Steps and BatchSize must be positive (got {Steps}, {BatchSize})");
        Check(LearningRate > 0, $"LearningRate must be positive (got {LearningRate})");
        Check(Dropout is >= 0 and < 1, $"Dropout must be in [0, 1) (got {Dropout})");
        Check(EvalPool >= 2, $"EvalPool must be ≥ 2 (got {EvalPool})");
    }

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public string ToJsonString() => JsonSerializer.Serialize(this, Json);

    public static PredictorConfig FromJson(string json, string source)
    {
        try { return JsonSerializer.Deserialize<PredictorConfig>(json, Json) ?? throw new InvalidDataException($"{source}: JSON null"); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not a predictor config ({e.Message})", e); }
    }
}

/// <summary>
/// q(h_pre) → ĥ_post over K slots. Works in standardised space internally (<see cref="forward"/>); <see cref="Predict"/>
/// takes and returns the model's own hidden-state space, so its output can be injected as is. The standardisation
/// statistics are buffers, saved with the weights.
/// </summary>
public sealed class LatentPredictor : nn.Module<Tensor, Tensor>, ILatentPredictor
{
    public const string WeightsFile = "predictor.safetensors";
    public const string ConfigFile = "predictor_config.json";

    public PredictorConfig Config { get; }
    public int D { get; }
    public int K => Config.K;

    readonly Tensor pre_mean, pre_std, post_mean, post_std;
    readonly Linear input;
    readonly ModuleList<nn.Module<Tensor, Tensor>> blocks;
    readonly LayerNorm out_norm;
    readonly Linear output;
    readonly Parameter? slots;

    public LatentPredictor(PredictorConfig config, int d) : base("latent_predictor")
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (d < 1) throw new ArgumentOutOfRangeException(nameof(d), d, "hidden size must be positive");
        Config = config;
        D = d;
        pre_mean = zeros(d);
        pre_std = ones(d);
        post_mean = zeros(d);
        post_std = ones(d);
        int h = config.Hidden;
        input = nn.Linear(d, h);
        blocks = new ModuleList<nn.Module<Tensor, Tensor>>();
        if (config.Kind == PredictorKind.Mlp)
        {
            for (int i = 0; i < config.Layers; i++) blocks.Add(new ResidualMlp(h, config.Dropout));
            output = nn.Linear(h, (long)config.K * d);
        }
        else
        {
            // Learned queries for the K slots; the input state is one more token they attend to (and each other).
            slots = nn.Parameter(randn(config.K, h) * 0.02);
            for (int i = 0; i < config.Layers; i++) blocks.Add(new SlotBlock(h, config.Heads, config.Dropout));
            output = nn.Linear(h, d);
        }
        out_norm = nn.LayerNorm(h);
        // Tensor fields become buffers here (pre_mean, pre_std, post_mean, post_std): saved, moved with .to(), never trained.
        RegisterComponents();
    }

    /// <summary>Sets the standardisation from training data: pre [N, D], post [N, K, D] (stds floored to avoid dividing by ~0).</summary>
    public void FitStandardizer(Tensor pre, Tensor post)
    {
        CheckShapes(pre, post, "FitStandardizer");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        if (!Config.Standardize) return;
        var p = pre.to(ScalarType.Float32);
        var q = post.to(ScalarType.Float32).reshape(-1, D);
        pre_mean.copy_(p.mean([0]));
        pre_std.copy_(p.std(0).clamp_min(1e-6));
        post_mean.copy_(q.mean([0]));
        post_std.copy_(q.std(0).clamp_min(1e-6));
    }

    public Tensor StandardizePre(Tensor pre) => (pre.to(ScalarType.Float32) - pre_mean) / pre_std;
    public Tensor StandardizePost(Tensor post) => (post.to(ScalarType.Float32) - post_mean) / post_std;
    public Tensor DestandardizePost(Tensor z) => z * post_std + post_mean;

    /// <summary>Standardised pre [B, D] → standardised prediction [B, K, D].</summary>
    public override Tensor forward(Tensor z)
    {
        if (z.dim() != 2 || z.shape[1] != D) throw new ArgumentException($"predictor: expected [B, {D}], got [{string.Join(",", z.shape)}]");
        long b = z.shape[0];
        var x = input.forward(z);
        if (Config.Kind == PredictorKind.Mlp)
        {
            foreach (var blk in blocks) x = blk.forward(x);
            return output.forward(out_norm.forward(x)).reshape(b, Config.K, D);
        }
        var tokens = cat([x.unsqueeze(1), slots!.unsqueeze(0).expand(b, -1, -1)], 1);
        foreach (var blk in blocks) tokens = blk.forward(tokens);
        return output.forward(out_norm.forward(tokens.narrow(1, 1, Config.K)));
    }

    /// <summary>Raw pre-states [B, D] → predicted post-states [B, K, D] in the model's space (no gradient).</summary>
    public Tensor Predict(Tensor pre)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        bool was = training;
        eval();
        try { return DestandardizePost(forward(StandardizePre(pre.to(pre_mean.device)))).MoveToOuterDisposeScope(); }
        finally { if (was) train(); }
    }

    /// <summary>Standardised prediction for raw pre-states (no gradient): what diagnostics compare.</summary>
    public Tensor PredictStandardized(Tensor pre)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        bool was = training;
        eval();
        try { return forward(StandardizePre(pre.to(pre_mean.device))).MoveToOuterDisposeScope(); }
        finally { if (was) train(); }
    }

    internal void CheckShapes(Tensor pre, Tensor post, string what)
    {
        if (pre.dim() != 2 || pre.shape[1] != D)
            throw new ArgumentException($"{what}: pre must be [N, {D}], got [{string.Join(",", pre.shape)}]");
        if (post.dim() != 3 || post.shape[0] != pre.shape[0] || post.shape[1] != K || post.shape[2] != D)
            throw new ArgumentException($"{what}: post must be [{pre.shape[0]}, {K}, {D}] (K from the config), got [{string.Join(",", post.shape)}]");
    }

    /// <summary>Writes predictor.safetensors (parameters and standardisation buffers) and predictor_config.json.</summary>
    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        using var _ = no_grad();
        var tensors = named_parameters().Select(p => new KeyValuePair<string, Tensor>(p.name, p.parameter.detach()))
            .Concat(named_buffers().Select(b => new KeyValuePair<string, Tensor>(b.name, b.buffer)));
        SafetensorsWriter.Write(Path.Combine(directory, WeightsFile), tensors,
            new Dictionary<string, string> { ["format"] = "pt", ["d"] = D.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        AtomicFile.WriteAllText(Path.Combine(directory, ConfigFile), Config.ToJsonString() + "\n");
    }

    public static LatentPredictor Load(string directory)
    {
        var cfgPath = Path.Combine(directory, ConfigFile);
        var wPath = Path.Combine(directory, WeightsFile);
        if (!File.Exists(cfgPath)) throw new FileNotFoundException($"predictor: {cfgPath} not found", cfgPath);
        if (!File.Exists(wPath)) throw new FileNotFoundException($"predictor: {wPath} not found", wPath);
        var config = PredictorConfig.FromJson(File.ReadAllText(cfgPath), cfgPath);
        using var f = SafetensorsCheckpoint.Open(wPath);
        if (!f.Contains("pre_mean")) throw new InvalidDataException($"{wPath}: no 'pre_mean' tensor; not a predictor file");
        int d = (int)f.Info("pre_mean").Shape[0];
        var model = new LatentPredictor(config, d);
        using var _ = no_grad();
        var targets = model.named_parameters().Select(p => (p.name, (Tensor)p.parameter))
            .Concat(model.named_buffers().Select(b => (b.name, b.buffer))).ToList();
        var missing = targets.Where(t => !f.Contains(t.Item1)).Select(t => t.Item1).ToList();
        if (missing.Count > 0) throw new InvalidDataException($"{wPath}: missing {string.Join(", ", missing.Take(3))} for the config in {cfgPath}");
        foreach (var (name, t) in targets)
        {
            using var src = f.Read(name, t.dtype, t.device);
            if (!src.shape.SequenceEqual(t.shape))
                throw new InvalidDataException($"{wPath}: '{name}' has shape [{string.Join(",", src.shape)}], the config gives [{string.Join(",", t.shape)}]");
            t.copy_(src);
        }
        model.eval();
        return model;
    }
}

/// <summary>Pre-norm residual MLP block (x + W₂·gelu(W₁·LN(x))).</summary>
sealed class ResidualMlp : nn.Module<Tensor, Tensor>
{
    readonly LayerNorm norm;
    readonly Linear fc, proj;
    readonly Dropout drop;

    public ResidualMlp(int h, double dropout) : base("residual_mlp")
    {
        norm = nn.LayerNorm(h);
        fc = nn.Linear(h, 4L * h);
        proj = nn.Linear(4L * h, h);
        drop = nn.Dropout(dropout);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => x + drop.forward(proj.forward(nn.functional.gelu(fc.forward(norm.forward(x)))));
}

/// <summary>Pre-norm transformer block over [B, 1 + K, H] without positions (slots are told apart by their learned queries).</summary>
sealed class SlotBlock : nn.Module<Tensor, Tensor>
{
    readonly LayerNorm norm1;
    readonly Linear qkv, o;
    readonly ResidualMlp mlp;
    readonly Dropout drop;
    readonly int heads;

    public SlotBlock(int h, int heads, double dropout) : base("slot_block")
    {
        this.heads = heads;
        norm1 = nn.LayerNorm(h);
        qkv = nn.Linear(h, 3L * h);
        o = nn.Linear(h, h);
        mlp = new ResidualMlp(h, dropout);
        drop = nn.Dropout(dropout);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        long b = x.shape[0], t = x.shape[1], h = x.shape[2];
        var parts = qkv.forward(norm1.forward(x)).reshape(b, t, 3, heads, h / heads).permute(2, 0, 3, 1, 4);
        var a = nn.functional.scaled_dot_product_attention(parts[0], parts[1], parts[2]);
        x = x + drop.forward(o.forward(a.transpose(1, 2).reshape(b, t, h)));
        return mlp.forward(x);
    }
}
