using System.Text.RegularExpressions;

namespace LatentLab.Hooks;

public enum HookSite { Embed, ResidPre, AttnOut, ResidMid, MlpOut, ResidPost, FinalNorm, Logits }

/// <summary>
/// A named point in the residual stream, spelled as in TransformerLens: `embed`, `blocks.{i}.resid_pre`,
/// `blocks.{i}.attn_out`, `blocks.{i}.resid_mid`, `blocks.{i}.mlp_out`, `blocks.{i}.resid_post`, `final_norm`, `logits`.
/// Negative layer indices count from the end; `blocks.3.hook_resid_post` is accepted as an alias.
/// </summary>
public readonly record struct HookPoint(HookSite Site, int Layer)
{
    static readonly Regex BlockPattern = new(@"^blocks\.(-?\d+)\.(?:hook_)?(resid_pre|attn_out|resid_mid|mlp_out|resid_post)$", RegexOptions.Compiled);

    public static HookPoint Parse(string name)
    {
        var n = name.Trim();
        switch (n)
        {
            case "embed" or "hook_embed": return new(HookSite.Embed, -1);
            case "final_norm" or "ln_final" or "ln_final.hook_normalized": return new(HookSite.FinalNorm, -1);
            case "logits": return new(HookSite.Logits, -1);
        }
        var m = BlockPattern.Match(n);
        if (!m.Success)
            throw new ArgumentException($"unknown hook point '{name}': use embed, blocks.{{i}}.(resid_pre|attn_out|resid_mid|mlp_out|resid_post), final_norm or logits");
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
        _ => $"blocks.{Layer}.resid_post",
    };
}
