using System.Globalization;

namespace LatentLab.Tasks;

public static class TaskRegistry
{
    /// <summary>The families with default options (cfg without noise).</summary>
    public static IReadOnlyList<ITaskFamily> All { get; } =
    [
        new AdditionFamily(), new ModChainFamily(), new DfaFamily(), new ReachFamily(),
        new SortFamily(), new TreeFamily(), new CfgFamily(),
    ];

    public static IReadOnlyList<string> Names => All.Select(f => f.Name).ToList();

    /// <summary>A family by name; <c>cfg:noise=0.15</c> gives the CFG family with that token-noise rate, <c>tree:labels=char</c> the tree family with one-character node labels, <c>tree:edges</c> the same tree as an edge list, <c>tree:hops</c> as child-and-hop token pairs.</summary>
    public static ITaskFamily Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        string n = name.Trim().ToLowerInvariant();
        const string noisePrefix = "cfg:noise=";
        if (n.StartsWith(noisePrefix, StringComparison.Ordinal))
        {
            if (!double.TryParse(n[noisePrefix.Length..], NumberStyles.Float, CultureInfo.InvariantCulture, out double rate) || rate < 0 || rate > 1)
                throw new ArgumentException($"task family '{name}': the noise rate must be a number in [0, 1], e.g. cfg:noise=0.15", nameof(name));
            return new CfgFamily(rate);
        }
        if (n == "tree:labels=char") return new TreeFamily(charLabels: true);
        if (n == "tree:edges") return new TreeFamily(charLabels: true, edges: true);
        if (n == "tree:hops") return new TreeFamily(charLabels: true, hops: true);
        return All.FirstOrDefault(f => f.Name == n)
            ?? throw new ArgumentException(
                $"unknown task family '{name}'; known families: {string.Join(", ", Names)} (and cfg:noise=RATE, tree:labels=char, tree:edges, tree:hops)", nameof(name));
    }
}
