namespace LatentLab.Text;

/// <summary>A tokenizer.json "post_processor", reduced to what single-sequence encoding needs:
/// the ids it puts before and after the sequence when special tokens are requested.</summary>
internal sealed record PostProcessor(int[] Prefix, int[] Suffix)
{
    public static readonly PostProcessor None = new([], []);

    public int[] Apply(List<int> ids)
    {
        var result = new int[Prefix.Length + ids.Count + Suffix.Length];
        Prefix.CopyTo(result, 0);
        ids.CopyTo(result, Prefix.Length);
        Suffix.CopyTo(result, Prefix.Length + ids.Count);
        return result;
    }

    /// <summary>Steps of a Sequence post-processor apply one after another: prefixes nest outside-in.</summary>
    public PostProcessor Then(PostProcessor next) => new([.. next.Prefix, .. Prefix], [.. Suffix, .. next.Suffix]);
}
