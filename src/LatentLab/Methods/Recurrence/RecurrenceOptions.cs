using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace LatentLab.Methods.Recurrence;

/// <summary>
/// How latent steps feed back. <see cref="Append"/>: each step appends one position (KV-cached), fed the previous
/// step's last hidden state, as Coconut does; at p = 1 it is greedy decoding. <see cref="Depth"/>: the whole
/// sequence's states [B, T, D] go back through the stack K times (the seed's literal shape), no position is added.
/// </summary>
public enum RecurrenceMode { Append, Depth }

/// <summary>How a latent enters the step input: rescaled per position to the mean token-embedding norm (default), or raw
/// (h / √d for Gemma, h otherwise: the seed's formula as written). See <see cref="LatentRecurrence"/>.</summary>
public enum LatentScale { EmbeddingNorm, Raw }

/// <summary>How p falls from Start to End: linearly or on a cosine over the annealing steps; gated (one linear
/// decrement per update, taken only while the loss is below <see cref="PSchedule.GateLoss"/>); or tracking (gated, and
/// one step back up towards Start after each update whose loss is above it, so p follows the frontier where the
/// arm still answers, instead of staying where a too-fast drop broke it).</summary>
public enum PAnnealing { Linear, Cosine, Gated, Tracking }

/// <summary>
/// The interpolation weight p of `p · embed(argmax) + (1 − p) · latent`. It anneals over the first
/// <see cref="AnnealFraction"/> of training and then holds at End, so the last updates train the pure-latent
/// regime that evaluation uses.
/// </summary>
public sealed record PSchedule
{
    public PAnnealing Kind { get; init; } = PAnnealing.Linear;
    public double Start { get; init; } = 0.9;
    public double End { get; init; }
    public double AnnealFraction { get; init; } = 0.6;
    /// <summary>Gated and tracking: p drops by one step's worth while the update's loss is below this (tracking: and rises while above).</summary>
    public double GateLoss { get; init; } = 1.0;
    /// <summary>
    /// Gated and tracking: the share of training by which p must have reached End, whatever the losses: p never stands
    /// above the linear line from Start (step 0) to End (this share of the steps). So an arm whose loss never opens the
    /// gate (K too short for the thought) still trains at End for the last updates, as every arm is graded there. Null: no deadline.
    /// </summary>
    public double? Deadline { get; init; }

    public void Validate()
    {
        if (Start is < 0 or > 1 || End is < 0 or > 1) throw new ArgumentException($"p schedule: start {Start} and end {End} must be in [0, 1]");
        if (AnnealFraction is <= 0 or > 1) throw new ArgumentException($"p schedule: anneal fraction {AnnealFraction} must be in (0, 1]");
        if (!(GateLoss > 0)) throw new ArgumentException($"p schedule: gate loss {GateLoss} must be positive");
        if (Deadline is { } d && d is <= 0 or > 1) throw new ArgumentException($"p schedule: deadline {d} must be in (0, 1]");
    }

    /// <summary>p at 0-based update <paramref name="step"/> of <paramref name="steps"/> for the ungated kinds.</summary>
    public double At(long step, long steps)
    {
        double span = Math.Max(1, AnnealFraction * steps);
        double t = Math.Clamp(step / span, 0, 1);
        double w = Kind == PAnnealing.Cosine ? 0.5 * (1 - Math.Cos(Math.PI * t)) : t;
        return Start + (End - Start) * w;
    }

    /// <summary>The deadline's bound on p after <paramref name="done"/> of <paramref name="steps"/> updates (1 without a deadline).</summary>
    public double DeadlineAt(long done, long steps) =>
        Deadline is { } d ? Math.Max(End, Start + (End - Start) * Math.Clamp(done / Math.Max(1, d * steps), 0, 1)) : 1;

    /// <summary>Gated and tracking: how much one update that passes the gate lowers p (and, tracking, one that fails it raises p).</summary>
    public double GateDecrement(long steps) => (Start - End) / Math.Max(1, AnnealFraction * steps);

    /// <summary>p moves with the losses (gated or tracking) rather than with the step count.</summary>
    public bool LossDriven => Kind is PAnnealing.Gated or PAnnealing.Tracking;

    /// <summary>Parses "linear", "cosine", "gated[:LOSS]" or "track[:LOSS]", optionally followed by ",START,END".</summary>
    public static PSchedule Parse(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var head = parts[0].Split(':', StringSplitOptions.TrimEntries);
        var s = new PSchedule
        {
            Kind = head[0].ToLowerInvariant() switch
            {
                "linear" => PAnnealing.Linear,
                "cosine" => PAnnealing.Cosine,
                "gated" => PAnnealing.Gated,
                "track" or "tracking" => PAnnealing.Tracking,
                var k => throw new ArgumentException($"p schedule '{k}': expected linear, cosine, gated[:LOSS] or track[:LOSS]"),
            },
        };
        if (head.Length > 1) s = s with { GateLoss = double.Parse(head[1], System.Globalization.CultureInfo.InvariantCulture) };
        if (parts.Length == 3)
            s = s with
            {
                Start = double.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture),
                End = double.Parse(parts[2], System.Globalization.CultureInfo.InvariantCulture),
            };
        else if (parts.Length != 1) throw new ArgumentException($"p schedule '{text}': expected KIND or KIND,START,END");
        s.Validate();
        return s;
    }
}

/// <summary>
/// The K curriculum: K grows from <see cref="Start"/> to the arm's K as p falls (the seed's "anneal both
/// together"), so K = Start + (K − Start) · (fraction of the p annealing done), rounded.
/// </summary>
public sealed record KSchedule
{
    public int Start { get; init; } = 2;
    /// <summary>Off: K is the arm's K from the first update.</summary>
    public bool Curriculum { get; init; } = true;

    public int At(int k, double annealed)
    {
        if (!Curriculum || k <= Start) return k;
        return (int)Math.Round(Start + (k - Start) * Math.Clamp(annealed, 0, 1));
    }

    /// <summary>Parses "fixed" or "grow:START".</summary>
    public static KSchedule Parse(string text)
    {
        var t = text.Trim().ToLowerInvariant();
        if (t == "fixed") return new KSchedule { Curriculum = false };
        if (t.StartsWith("grow:", StringComparison.Ordinal) && int.TryParse(t[5..], out var s) && s >= 0) return new KSchedule { Start = s };
        throw new ArgumentException($"k schedule '{text}': expected fixed or grow:START");
    }
}

/// <summary>Everything that defines one latent-recurrence run (written to its config.json).</summary>
public sealed record RecurrenceOptions
{
    /// <summary>Hugging Face model folder (the demo teacher's model/ folder or a real checkpoint).</summary>
    public string Model { get; init; } = "";
    public string Task { get; init; } = "addition";
    public int? Difficulty { get; init; }
    public RecurrenceMode Mode { get; init; } = RecurrenceMode.Append;
    /// <summary>Latent steps at the end of the curriculum (and at evaluation). 0 = the answer-only baseline.</summary>
    public int K { get; init; } = 4;
    /// <summary>Pause-token arm: K learned input embeddings after the question instead of K latent steps.</summary>
    public bool Pause { get; init; }
    public PSchedule P { get; init; } = new();
    public KSchedule KCurriculum { get; init; } = new();
    /// <summary>0 = the latent-phase transformer is a full trainable copy; r &gt; 0 = LoRA adapters on the one base model, on only while reasoning.</summary>
    public int LoraRank { get; init; }
    /// <summary>Adds a small residual MLP after the bridge's LayerNorm → Linear.</summary>
    public bool BridgeMlp { get; init; }
    /// <summary>
    /// Append mode: the decoder starts from the end-of-thinking marker's own embedding plus g·bridge(final latent), the
    /// gate g a learned scalar starting at 0, instead of a bridged position before the marker. The latent steps reach it
    /// through the cache, so at p = 1 with K the trace's length the decode is the teacher's own trace and answer.
    /// </summary>
    public bool MarkerDecode { get; init; }
    public LatentScale LatentScale { get; init; } = LatentScale.EmbeddingNorm;
    /// <summary>Recompute each latent step in backward instead of keeping its activations.</summary>
    public bool Checkpointing { get; init; }
    public long Steps { get; init; } = 300;
    public int BatchSize { get; init; } = 64;
    /// <summary>A fine-tuning rate (the seed: 1e-5 to 5e-5 for a 2B model): on the 2-digit teacher 1e-3 and 3e-4 broke
    /// the latent-phase copy within 20–60 updates of gated annealing, 1e-4 annealed to p = 0.</summary>
    public double LearningRate { get; init; } = 1e-4;
    public long WarmupSteps { get; init; } = 20;
    /// <summary>Evaluations during training (accuracy vs p); each grades <see cref="EvalProblems"/> problems.</summary>
    public int EvalPoints { get; init; } = 4;
    public int EvalProblems { get; init; } = 100;
    public int TestProblems { get; init; } = 300;
    public string Compute { get; init; } = "auto";
    public string Device { get; init; } = "cpu";
    public long Seed { get; init; }
    public string OutDir { get; init; } = "runs/recurrence";
    [JsonIgnore] public bool? ProgressBar { get; init; }

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Model)) throw new ArgumentException("recurrence: --model DIR is required");
        if (K < 0) throw new ArgumentException($"recurrence: K must be ≥ 0 (got {K})");
        if (Pause && K < 1) throw new ArgumentException("recurrence: the pause arm needs K ≥ 1 pause tokens");
        if (LoraRank < 0) throw new ArgumentException($"recurrence: LoRA rank must be ≥ 0 (got {LoraRank})");
        if (Steps < 1 || BatchSize < 1) throw new ArgumentException("recurrence: steps and batch size must be positive");
        P.Validate();
    }

    public JsonObject ToJson() => JsonSerializer.SerializeToNode(this, Json)!.AsObject();

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };
}
