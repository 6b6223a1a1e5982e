using System.Text.Json;
using System.Text.Json.Serialization;
using LatentLab.IO;
using LatentLab.Models;
using LatentLab.Text;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LatentLab.Methods.JepaReasoner;

/// <summary>
/// The latent loop's own settings, saved next to the Reasoner's weights as reasoner.json.
/// <see cref="L2"/> switches the hybrid normalisation's second half (RMSNorm inside the blocks always, L2 onto the
/// unit sphere at the output only when on: off for LM pre-training, on for SST and inference).
/// <see cref="InputScale"/> is the length a unit latent is stretched to when it is fed back as the next input
/// embedding: the mean norm of the token embeddings, so a fed-back latent looks to the first block like a token.
/// <see cref="LatentSteps"/> is how many latents the Reasoner produces per problem at inference (the longest
/// continuation seen in training plus a margin; the Talker decides where to stop).
/// </summary>
public sealed record ReasonerSettings
{
    public bool L2 { get; init; } = true;
    public double InputScale { get; init; } = 1.0;
    public int LatentSteps { get; init; } = 32;

    public const string FileName = "reasoner.json";
    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    public void Save(string dir) => AtomicFile.WriteAllText(Path.Combine(dir, FileName), JsonSerializer.Serialize(this, Json) + "\n");

    public static ReasonerSettings Load(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path} not found: is {dir} a Reasoner folder written by `reasoner sst`?", path);
        try { return JsonSerializer.Deserialize<ReasonerSettings>(File.ReadAllText(path), Json) ?? throw new InvalidDataException($"{path}: empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a reasoner settings file ({e.Message})", e); }
    }
}

/// <summary>
/// The JEPA-Reasoner: a decoder-only transformer with QK-norm and tied embeddings (Qwen3 layout) whose output,
/// L2-normalised onto the unit sphere, is fed back as the next input. A latent r_t depends only on the prompt and
/// r_{&lt;t} — <see cref="Reason"/> takes no token argument at all, which is the error-containment property by
/// construction: nothing a Talker samples can reach the chain.
/// </summary>
public sealed class Reasoner : IDisposable
{
    public DecoderLM Model { get; }
    public ReasonerSettings Settings { get; set; }

    public Reasoner(DecoderLM model, ReasonerSettings settings)
    {
        Model = model;
        Settings = settings;
        if (!model.Config.TieEmbeddings)
            throw new ArgumentException("a JEPA-Reasoner needs tied embeddings: latents are read and fed back in the embedding space");
    }

    /// <summary>The Reasoner's architecture: Qwen3 (QK-norm, tied embeddings) over the tokenizer's vocabulary.</summary>
    public static TransformerConfig ModelConfig(ITokenizer tok, int hidden, int layers, int heads, int maxPositions) =>
        TransformerConfig.Small("Qwen3ForCausalLM", tok.VocabSize, hidden, layers, heads, 3, maxPositions, tok.BosId, tok.EosId, tok.PadId)
            with { QkNorm = true };

    /// <summary>Final-norm output → latent: onto the unit sphere when L2 is on (in float32), unchanged otherwise.</summary>
    public Tensor ToLatent(Tensor hidden) =>
        Settings.L2 ? F.normalize(hidden.to(ScalarType.Float32), p: 2, dim: -1) : hidden.to(ScalarType.Float32);

    /// <summary>Mean L2 norm of the token embedding rows (the natural <see cref="ReasonerSettings.InputScale"/>).</summary>
    public static double MeanEmbeddingNorm(DecoderLM model)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        return model.EmbeddingWeight.to(ScalarType.Float32).norm(1).mean().item<float>();
    }

    /// <summary>
    /// Parallel (teacher-forced in latent space) prediction, as SST trains it: the prompt [B, P] (left-padded,
    /// <paramref name="promptMask"/> 1 on real tokens) followed by <paramref name="latentInputs"/> [B, R, D] (unit
    /// latents, stretched by InputScale). Returns the R + 1 predicted latents [B, R + 1, D]: the one after the prompt
    /// and one after each latent input.
    /// </summary>
    public Tensor PredictLatents(Tensor promptIds, Tensor promptMask, Tensor latentInputs)
    {
        using var scope = NewDisposeScope();
        long b = promptIds.shape[0], p = promptIds.shape[1], r = latentInputs.shape[1];
        var embeds = cat(new[] { Model.Embed(promptIds), (latentInputs * Settings.InputScale).to(Model.DType) }, 1);
        var mask = cat(new[] { promptMask.to(ScalarType.Int64), ones(b, r, dtype: ScalarType.Int64, device: promptIds.device) }, 1);
        using var output = Model.Forward(inputEmbeds: embeds, attentionMask: mask, logits: LogitsMode.None);
        return ToLatent(output.Hidden.narrow(1, p - 1, r + 1)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The autoregressive latent loop: r_0 from the prompt, then r_t = f(prompt, r_0..r_{t-1}) for
    /// <paramref name="steps"/> latents [B, steps, D]. It reads no token besides the prompt. Runs with a KV cache;
    /// gradients flow when the caller has them enabled (the containment test checks where they flow).
    /// </summary>
    public Tensor Reason(Tensor promptIds, Tensor? promptMask, int steps)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        using var scope = NewDisposeScope();
        using var cache = new KvCache(Model.Config.NumLayers);
        var latents = new List<Tensor>(steps);
        using (var first = Model.Forward(promptIds, attentionMask: promptMask, cache: cache, logits: LogitsMode.None))
            latents.Add(ToLatent(first.Hidden.narrow(1, first.Hidden.shape[1] - 1, 1)));
        long b = promptIds.shape[0];
        var one = ones(b, 1, dtype: ScalarType.Int64, device: promptIds.device);
        for (int t = 1; t < steps; t++)
        {
            using var next = Model.Forward(inputEmbeds: (latents[^1] * Settings.InputScale).to(Model.DType), attentionMask: one,
                cache: cache, logits: LogitsMode.None);
            latents.Add(ToLatent(next.Hidden));
        }
        return cat(latents, 1).MoveToOuterDisposeScope();
    }

    /// <summary>Saves the model (HF folder), the tokenizer and reasoner.json.</summary>
    public void Save(string dir, CharTokenizer tok)
    {
        Checkpoints.Save(Model, dir);
        tok.Save(dir);
        Settings.Save(dir);
    }

    public static Reasoner Load(string dir) => new(Checkpoints.Load(dir), ReasonerSettings.Load(dir));

    public void Dispose() => Model.Dispose();
}

/// <summary>SST's loss as a pure function, so it can be checked on hand-made vectors (its collapse diagnostics are <see cref="Evaluation.LatentMetrics"/>).</summary>
public static class SstMath
{
    /// <summary>
    /// k · (1 − cos(ĥ, h)) averaged over the positions where <paramref name="mask"/> is 1 (the reasoning positions).
    /// <paramref name="predicted"/> and <paramref name="target"/> are [..., D]; the mask has their shape without D.
    /// </summary>
    public static Tensor ScaledCosineLoss(Tensor predicted, Tensor target, Tensor mask, double k)
    {
        using var scope = NewDisposeScope();
        var cos = F.cosine_similarity(predicted.to(ScalarType.Float32), target.to(ScalarType.Float32), dim: -1, eps: 1e-8);
        var m = mask.to(ScalarType.Float32);
        var loss = (k * (1 - cos) * m).sum() / m.sum().clamp_min(1);
        return loss.MoveToOuterDisposeScope();
    }
}
