using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>
/// Everything that defines a JEPA-Reasoner run, shared by its phases (each phase writes the whole record into its
/// config.json, and a resumed phase must be given the same one). Run folder layout under <see cref="OutDir"/>:
/// <c>pretrain/</c>, <c>sst/</c>, <c>talker-mono/</c> or <c>talker-dual/</c> and <c>baseline/</c>, each with <c>train/</c> (Trainer: metrics,
/// checkpoints) and <c>model/</c> (the result).
/// </summary>
public sealed record ReasonerOptions
{
    /// <summary>Task family (see `tasks list`), or "gsm8k" for GSM8K-format files (<see cref="TrainFile"/>).</summary>
    public string Task { get; init; } = "tree";
    /// <summary>The family's difficulty knob; null = its default.</summary>
    public int? Difficulty { get; init; }
    /// <summary>
    /// A curriculum in the data: training problems are drawn evenly from every difficulty between this and
    /// <see cref="Difficulty"/> (null = <see cref="Difficulty"/> only); tests stay at <see cref="Difficulty"/>. A d = 64
    /// Reasoner learns depth-1 tree routing in 600 updates (94.5 % greedy) but not depth 2 in 2,500 (chance).
    /// </summary>
    public int? TrainMinDifficulty { get; init; }
    /// <summary>GSM8K-format jsonl for training (task gsm8k).</summary>
    public string? TrainFile { get; init; }
    /// <summary>GSM8K: how many examples at the end of <see cref="TrainFile"/> are held out of training (used as the test set when no test file is given).</summary>
    public int HoldOut { get; init; }

    // Reasoner (Qwen3 layout: QK-norm, tied embeddings).
    public int Hidden { get; init; } = 128;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 4;

    // Talker.
    public string Talker { get; init; } = "mono";
    public int TalkerHidden { get; init; } = 96;
    public int TalkerLayers { get; init; } = 2;
    public int TalkerEncoderLayers { get; init; } = 1;

    public int BatchSize { get; init; } = 32;
    public long PretrainSteps { get; init; } = 500;
    public double PretrainLr { get; init; } = 3e-3;
    public long SstSteps { get; init; } = 200;
    public double SstLr { get; init; } = 5e-4;
    /// <summary>EMA momentum of the SST target encoder (the paper's 0.98).</summary>
    public double Momentum { get; init; } = 0.98;
    /// <summary>Scale k of the SST loss k·(1 − cos) (the paper's 4).</summary>
    public double LossScale { get; init; } = 4;
    /// <summary>
    /// Share of each SST batch's rows whose latent inputs are the Reasoner's own free-running chain (computed without
    /// gradients) instead of the target encoder's latents; the targets stay the target encoder's. 0 = the paper's
    /// purely teacher-forced SST; above 0 trains the loop to recover from its own drift (exposure bias in latent space).
    /// </summary>
    public double Rollout { get; init; }
    public long TalkerSteps { get; init; } = 300;
    public double TalkerLr { get; init; } = 2e-3;
    /// <summary>Distinct training problems whose latent chains the Talker is trained on (chains are computed once).</summary>
    public int TalkerPool { get; init; } = 2048;
    /// <summary>
    /// Slip-augmented training of both token decoders, the Talkers and the coupled baseline alike: each trace token of
    /// their teacher-forced input is replaced with this probability by another trace token (<see cref="GenerationSlips"/>;
    /// targets unchanged), so each learns to recover from slips it reads: the Talker by reading the chain, the baseline
    /// however it can. 0 = plain teacher forcing (left out of config.json, so runs from before the option still resume).
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public double TrainSlips { get; init; }

    /// <summary>Activation dtype of the transformers (weights stay f32): auto (measured here, see ComputePolicy), f32 or bf16.</summary>
    public string Compute { get; init; } = "auto";
    public long Seed { get; init; }
    public string OutDir { get; init; } = "runs/reasoner";
    public bool? ProgressBar { get; init; }

    internal static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    public JsonObject ToJson() => JsonSerializer.SerializeToNode(this with { OutDir = "", ProgressBar = null }, Json)!.AsObject();

    /// <summary>Options from a JSON file (snake_case keys as in config.json; keys left out keep their defaults).</summary>
    public static ReasonerOptions Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"options file not found: {path}", path);
        try { return JsonSerializer.Deserialize<ReasonerOptions>(File.ReadAllText(path), Json) ?? throw new InvalidDataException($"{path}: empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a reasoner options file ({e.Message})", e); }
    }

    public string PhaseDir(string phase) => Path.Combine(OutDir, phase);
    public string ModelDir(string phase) => Path.Combine(OutDir, phase, "model");

    /// <summary>
    /// A bigger run: steps grow by <paramref name="scale"/>, width by √scale (kept a multiple of 2·heads),
    /// so a scale-4 run trains about 4× longer on a model about 4× larger.
    /// </summary>
    public ReasonerOptions Scaled(double scale)
    {
        if (!(scale > 0) || !double.IsFinite(scale)) throw new ArgumentException($"scale must be a positive number (got {scale})");
        if (scale == 1) return this;
        int Width(int h, int heads) => Math.Max(2 * heads, (int)Math.Round(h * Math.Sqrt(scale) / (2 * heads)) * 2 * heads);
        long S(long s) => Math.Max(1, (long)Math.Round(s * scale));
        return this with
        {
            Hidden = Width(Hidden, Heads), TalkerHidden = Width(TalkerHidden, 4),
            PretrainSteps = S(PretrainSteps), SstSteps = S(SstSteps), TalkerSteps = S(TalkerSteps),
            TalkerPool = (int)Math.Max(TalkerPool, TalkerPool * scale),
        };
    }

    public void Validate()
    {
        static void Check(bool ok, string m) { if (!ok) throw new ArgumentException($"reasoner options: {m}"); }
        Check(Hidden > 0 && Heads > 0 && Hidden % Heads == 0 && (Hidden / Heads) % 2 == 0, $"Hidden ({Hidden}) must be a multiple of 2·Heads ({Heads})");
        Check(TalkerHidden % 4 == 0 && (TalkerHidden / 4) % 2 == 0, $"TalkerHidden ({TalkerHidden}) must be a multiple of 8 (4 heads, even head size)");
        Check(Layers > 0 && TalkerLayers > 0 && TalkerEncoderLayers > 0, "layer counts must be positive");
        Check(BatchSize > 0, "BatchSize must be positive");
        Check(TrainMinDifficulty is null || Difficulty is null || TrainMinDifficulty <= Difficulty,
            $"TrainMinDifficulty ({TrainMinDifficulty}) must not exceed Difficulty ({Difficulty})");
        Check(Momentum is >= 0 and <= 1, $"Momentum must be in [0, 1] (got {Momentum})");
        Check(LossScale > 0, $"LossScale must be positive (got {LossScale})");
        Check(Rollout is >= 0 and <= 1, $"Rollout must be a share in [0, 1] (got {Rollout})");
        Check(Talker is "mono" or "dual", $"Talker must be mono or dual (got '{Talker}')");
        Check(TrainSlips >= 0 && TrainSlips < 1, $"TrainSlips must lie in [0, 1) (got {TrainSlips})");
        Check(TalkerPool >= BatchSize, $"TalkerPool ({TalkerPool}) must be at least BatchSize ({BatchSize})");
        Tensors.ComputePolicy.Validate(Compute);
    }
}
