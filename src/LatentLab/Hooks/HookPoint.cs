using System.Text.RegularExpressions;

namespace LatentLab.Hooks;

public enum HookSite
{
    Embed, ResidPre, AttnOut, ResidMid, MlpOut, ResidPost, FinalNorm, Logits,
    // Inside a block (TransformerLens: blocks.{i}.attn.hook_*, blocks.{i}.mlp.hook_*).
    AttnQ, AttnK, AttnV, AttnZ, AttnScores, AttnPattern, MlpPre, MlpPost,
}

/// <summary>
/// A named point in the model, spelled as in TransformerLens. The residual stream: `embed`, `blocks.{i}.resid_pre`,
/// `blocks.{i}.attn_out`, `blocks.{i}.resid_mid`, `blocks.{i}.mlp_out`, `blocks.{i}.resid_post`, `final_norm`, `logits`
/// (`blocks.3.hook_resid_post` is accepted as an alias). Inside attention, per head: `blocks.{i}.attn.hook_q`,
/// `hook_k`, `hook_v` [B, T, heads, head_dim] (after QK-norm, before RoPE), `hook_z` [B, T, heads, head_dim] (the
/// heads' outputs before o_proj), `hook_attn_scores` and `hook_pattern` [B, heads, T, S] (pre- and post-softmax; asking
/// for either makes that layer use explicit attention instead of the fused kernel). Inside the MLP: `blocks.{i}.mlp.hook_pre`
/// (gate pre-activation) and `blocks.{i}.mlp.hook_post` (act(gate)·up, the input of down_proj), [B, T, ffn].
/// Positions always index the query/token axis. Negative layer indices count from the end.
/// </summary>
public readonly record struct HookPoint(HookSite Site, int Layer)
{
    static readonly Regex BlockPattern = new(@"^blocks\.(-?\d+)\.(?:hook_)?(resid_pre|attn_out|resid_mid|mlp_out|resid_post)$", RegexOptions.Compiled);
    static readonly Regex InnerPattern = new(@"^blocks\.(-?\d+)\.(attn|mlp)\.(?:hook_)?(q|k|v|z|attn_scores|pattern|pre|post)$", RegexOptions.Compiled);

    public static HookPoint Parse(string name)
    {
        var n = name.Trim();
        switch (n)
        {
            case "embed" or "hook_embed": return new(HookSite.Embed, -1);
            case "final_norm" or "ln_final" or "ln_final.hook_normalized": return new(HookSite.FinalNorm, -1);
            case "logits": return new(HookSite.Logits, -1);
        }
        var inner = InnerPattern.Match(n);
        if (inner.Success)
        {
            var at = (inner.Groups[2].Value, inner.Groups[3].Value) switch
            {
                ("attn", "q") => HookSite.AttnQ,
                ("attn", "k") => HookSite.AttnK,
                ("attn", "v") => HookSite.AttnV,
                ("attn", "z") => HookSite.AttnZ,
                ("attn", "attn_scores") => HookSite.AttnScores,
                ("attn", "pattern") => HookSite.AttnPattern,
                ("mlp", "pre") => HookSite.MlpPre,
                ("mlp", "post") => HookSite.MlpPost,
                _ => throw new ArgumentException($"unknown hook point '{name}': attn has hook_q, hook_k, hook_v, hook_z, hook_attn_scores, hook_pattern; mlp has hook_pre, hook_post"),
            };
            return new(at, int.Parse(inner.Groups[1].Value));
        }
        var m = BlockPattern.Match(n);
        if (!m.Success)
            throw new ArgumentException($"unknown hook point '{name}': use embed, blocks.{{i}}.(resid_pre|attn_out|resid_mid|mlp_out|resid_post), " +
                                        "blocks.{i}.attn.hook_(q|k|v|z|attn_scores|pattern), blocks.{i}.mlp.hook_(pre|post), final_norm or logits");
        var site = m.Groups[2].Value switch
        {
            "resid_pre" => HookSite.ResidPre,
            "attn_out" => HookSite.AttnOut,
            "resid_mid" => HookSite.ResidMid,
            "mlp_out" => HookSite.MlpOut,
            _ => HookSite.ResidPost,
        };
        return new(site, int.Parse(m.Groups[1].Value));
    }

    /// <summary>Which axis of the hooked tensor positions index: the query axis (2) of [B, heads, T, S], else the token axis (1).</summary>
    public int PositionDim => Site is HookSite.AttnScores or HookSite.AttnPattern ? 2 : 1;

    /// <summary>Every point of a model of <paramref name="numLayers"/> layers, in this library's and TransformerLens's spelling.</summary>
    public static IEnumerable<(HookPoint Point, string TransformerLens)> All(int numLayers)
    {
        yield return (new(HookSite.Embed, -1), "hook_embed");
        var inBlock = new[]
        {
            HookSite.ResidPre, HookSite.AttnQ, HookSite.AttnK, HookSite.AttnV, HookSite.AttnScores, HookSite.AttnPattern, HookSite.AttnZ,
            HookSite.AttnOut, HookSite.ResidMid, HookSite.MlpPre, HookSite.MlpPost, HookSite.MlpOut, HookSite.ResidPost,
        };
        for (int i = 0; i < numLayers; i++)
            foreach (var site in inBlock)
            {
                var p = new HookPoint(site, i);
                yield return (p, p.TransformerLensName);
            }
        yield return (new(HookSite.FinalNorm, -1), "ln_final.hook_normalized");
        yield return (new(HookSite.Logits, -1), "logits");
    }

    /// <summary>The TransformerLens spelling (`blocks.3.hook_resid_post`, `blocks.3.attn.hook_pattern`).</summary>
    public string TransformerLensName => Site switch
    {
        HookSite.Embed => "hook_embed",
        HookSite.FinalNorm => "ln_final.hook_normalized",
        HookSite.Logits => "logits",
        HookSite.AttnQ or HookSite.AttnK or HookSite.AttnV or HookSite.AttnZ or HookSite.AttnScores or HookSite.AttnPattern or HookSite.MlpPre or HookSite.MlpPost => ToString(),
        _ => ToString().Replace($"blocks.{Layer}.", $"blocks.{Layer}.hook_"),
    };

    /// <summary>Resolves a negative layer against the model depth; range errors name the point.</summary>
    public HookPoint Resolve(int numLayers)
    {
        if (Site is HookSite.Embed or HookSite.FinalNorm or HookSite.Logits) return this;
        int l = Layer < 0 ? numLayers + Layer : Layer;
        if (l < 0 || l >= numLayers)
            throw new ArgumentException($"hook point {this} is outside a model with {numLayers} layers");
        return this with { Layer = l };
    }

    public override string ToString() => Site switch
    {
        HookSite.Embed => "embed",
        HookSite.FinalNorm => "final_norm",
        HookSite.Logits => "logits",
        HookSite.ResidPre => $"blocks.{Layer}.resid_pre",
        HookSite.AttnOut => $"blocks.{Layer}.attn_out",
        HookSite.ResidMid => $"blocks.{Layer}.resid_mid",
        HookSite.MlpOut => $"blocks.{Layer}.mlp_out",
        HookSite.AttnQ => $"blocks.{Layer}.attn.hook_q",
        HookSite.AttnK => $"blocks.{Layer}.attn.hook_k",
        HookSite.AttnV => $"blocks.{Layer}.attn.hook_v",
        HookSite.AttnZ => $"blocks.{Layer}.attn.hook_z",
        HookSite.AttnScores => $"blocks.{Layer}.attn.hook_attn_scores",
        HookSite.AttnPattern => $"blocks.{Layer}.attn.hook_pattern",
        HookSite.MlpPre => $"blocks.{Layer}.mlp.hook_pre",
        HookSite.MlpPost => $"blocks.{Layer}.mlp.hook_post",
        _ => $"blocks.{Layer}.resid_post",
    };
}
