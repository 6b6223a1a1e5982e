using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LatentLab.Models;

// Field names in this file are Hugging Face weight names on purpose (q_proj, input_layernorm, ...):
// TorchSharp registers submodules under their field names, so state_dict keys match transformers.
#pragma warning disable IDE1006

/// <summary>RMSNorm over the last dimension, accumulated in float32. Gemma's variant scales by (1 + w).</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    readonly Parameter weight;
    // Held as Scalars the module keeps alive: an implicitly converted Scalar can be finalized by the GC while a
    // native call still reads it (seen as "INTERNAL ASSERT FAILED at Scalar.h" in x.pow(2) under a progress bar's thread).
    // The alpha too: `t + s` is TorchSharp's add(s), which passes a fresh Scalar 1 as alpha, so a 1,500-step
    // pre-training died in THSTensor_add_scalar ("Expected false to be true" in Scalar::toFloat). Hence add(s, _one).
    readonly Scalar _eps, _one = 1.0.ToScalar();
    readonly bool _gemma;

    public RmsNorm(string name, long size, double eps, bool gemma) : base(name)
    {
        // Gemma stores w with the "+1" taken out, so its identity is w = 0.
        weight = new Parameter(gemma ? zeros(size) : ones(size));
        _eps = eps.ToScalar();
        _gemma = gemma;
        RegisterComponents();
    }

    public Parameter Weight => weight;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var xf = x.to(ScalarType.Float32);
        var normed = xf * xf.square().mean(new long[] { -1 }, keepdim: true).add(_eps, _one).rsqrt();
        var w = weight.to(ScalarType.Float32);
        var y = _gemma ? normed * w.add(_one, _one) : normed * w;
        return y.to(x.dtype).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A linear map y = x Wᵀ (+ b) with HF's weight layout [out, in], and an optional LoRA adapter
/// (y += dropout(x) Aᵀ Bᵀ · alpha / r) whose parameters are named as PEFT names them (lora_A, lora_B).
/// </summary>
public sealed class Proj : nn.Module<Tensor, Tensor>
{
    readonly Parameter weight;
    readonly Parameter? bias;
    public LoraAdapter? Lora { get; private set; }
    /// <summary>Off: the adapter is kept but skipped, so one base weight set serves as the plain model (latent recurrence's frozen decode).</summary>
    public bool LoraEnabled { get; set; } = true;

    public Proj(string name, long inFeatures, long outFeatures, bool hasBias) : base(name)
    {
        weight = new Parameter(empty(outFeatures, inFeatures));
        if (hasBias) bias = new Parameter(zeros(outFeatures));
        RegisterComponents();
        Reset();
    }

    public Parameter Weight => weight;
    public Parameter? Bias => bias;
    public long InFeatures => weight.shape[1];
    public long OutFeatures => weight.shape[0];

    /// <summary>Kaiming-uniform like torch.nn.Linear, so fresh models train the way PyTorch users expect.</summary>
    public void Reset()
    {
        using var _ = no_grad();
        nn.init.kaiming_uniform_(weight, a: Math.Sqrt(5));
        if (bias is not null) bias.zero_();
    }

    public void AttachLora(int rank, double alpha, double dropout)
    {
        if (Lora is not null) throw new InvalidOperationException($"{GetName()} already has a LoRA adapter");
        Lora = new LoraAdapter(InFeatures, OutFeatures, rank, alpha, dropout, weight.dtype, weight.device);
        register_module("lora", Lora);
    }

    /// <summary>Folds the adapter into W and removes it.</summary>
    public void MergeLora()
    {
        if (Lora is null) return;
        using (no_grad())
        using (var scope = NewDisposeScope())
            weight.add_(Lora.Delta().to(weight.dtype));
        DetachLora();
    }

    public void DetachLora()
    {
        if (Lora is null) return;
        _internal_submodules.Remove("lora");
        Lora.Dispose();
        Lora = null;
    }

    /// <summary>When set, compute in this dtype while the stored (master) weights keep theirs: manual autocast.</summary>
    public ScalarType? ComputeDType { get; set; }

    public override Tensor forward(Tensor x)
    {
        Tensor y;
        if (ComputeDType is { } dt && dt != weight.dtype)
        {
            using var castScope = NewDisposeScope();
            y = F.linear(x.to(dt), weight.to(dt), bias?.to(dt)).MoveToOuterDisposeScope();
        }
        else y = F.linear(x, weight, bias);
        if (Lora is null || !LoraEnabled) return y;
        using var scope = NewDisposeScope();
        return (y + Lora.forward(x)).MoveToOuterDisposeScope();
    }
}

/// <summary>Rank-r update B·A with PEFT's initialisation (A Kaiming-uniform, B zero: the adapter starts as a no-op).</summary>
public sealed class LoraAdapter : nn.Module<Tensor, Tensor>
{
    readonly Parameter lora_A;
    readonly Parameter lora_B;
    readonly Dropout? _dropout;
    public int Rank { get; }
    public double Alpha { get; }
    public double Scaling => Alpha / Rank;

    public LoraAdapter(long inFeatures, long outFeatures, int rank, double alpha, double dropout, ScalarType dtype, Device device)
        : base("lora")
    {
        if (rank <= 0) throw new ArgumentException("LoRA rank must be > 0");
        Rank = rank;
        Alpha = alpha;
        lora_A = new Parameter(empty(rank, inFeatures, dtype: dtype, device: device));
        lora_B = new Parameter(zeros(outFeatures, rank, dtype: dtype, device: device));
        using (no_grad()) nn.init.kaiming_uniform_(lora_A, a: Math.Sqrt(5));
        if (dropout > 0) _dropout = nn.Dropout(dropout);
        RegisterComponents();
    }

    public Parameter A => lora_A;
    public Parameter B => lora_B;

    public Tensor Delta() => lora_B.matmul(lora_A) * Scaling;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = _dropout is null ? x : _dropout.forward(x);
        return (F.linear(F.linear(h, lora_A.to(h.dtype)), lora_B.to(h.dtype)) * Scaling).MoveToOuterDisposeScope();
    }
}

/// <summary>Rotary embedding tables for one (base, scaling) pair, in HF's rotate-half layout.</summary>
public sealed class Rope
{
    readonly float[] _invFreq;

    public Rope(int headDim, double theta, RopeScaling scaling)
    {
        int half = headDim / 2;
        var inv = new double[half];
        for (int i = 0; i < half; i++) inv[i] = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
        switch (scaling.Kind)
        {
            case RopeScalingKind.Linear:
                for (int i = 0; i < half; i++) inv[i] /= scaling.Factor;
                break;
            case RopeScalingKind.Llama3:
                double lowWavelen = scaling.OriginalMaxPositions / scaling.LowFreqFactor;
                double highWavelen = scaling.OriginalMaxPositions / scaling.HighFreqFactor;
                for (int i = 0; i < half; i++)
                {
                    double wavelen = 2 * Math.PI / inv[i];
                    if (wavelen > lowWavelen) inv[i] /= scaling.Factor;
                    else if (wavelen >= highWavelen)
                    {
                        double smooth = (scaling.OriginalMaxPositions / wavelen - scaling.LowFreqFactor)
                                        / (scaling.HighFreqFactor - scaling.LowFreqFactor);
                        inv[i] = (1 - smooth) * inv[i] / scaling.Factor + smooth * inv[i];
                    }
                }
                break;
        }
        _invFreq = inv.Select(v => (float)v).ToArray();
    }

    /// <summary>cos and sin of shape [B, 1, T, headDim] (float32) for integer positions [B, T].</summary>
    public (Tensor Cos, Tensor Sin) Tables(Tensor positions)
    {
        using var scope = NewDisposeScope();
        var inv = tensor(_invFreq, device: positions.device);
        var freqs = positions.to(ScalarType.Float32).unsqueeze(-1) * inv; // [B,T,half]
        var emb = cat(new[] { freqs, freqs }, -1).unsqueeze(1);
        return (emb.cos().MoveToOuterDisposeScope(), emb.sin().MoveToOuterDisposeScope());
    }

    /// <summary>x·cos + rotate_half(x)·sin, computed in float32 and returned in x's dtype.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var xf = x.to(ScalarType.Float32);
        long half = x.shape[^1] / 2;
        var x1 = xf.narrow(-1, 0, half);
        var x2 = xf.narrow(-1, half, half);
        var rotated = cat(new[] { -x2, x1 }, -1);
        return (xf * cos + rotated * sin).to(x.dtype).MoveToOuterDisposeScope();
    }
}
