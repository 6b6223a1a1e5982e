using System.Text.RegularExpressions;

namespace LatentLab.Tasks;

/// <summary>
/// Binary-tree routing, as in JEPA-Reasoner's tree-search experiment: a complete binary tree with random two-digit node
/// labels is listed as <c>parent(left,right)</c> entries in shuffled order, then <c>;root>target=</c>. The answer is the
/// path from the root to the target leaf as <c>l</c>/<c>r</c> letters (lowercase, to keep the alphabet small).
/// The steps climb from the target to the root, <c>child&lt;parent:dir</c>, because each such step is a single lookup
/// in the prompt (whose entry holds this node?); the answer is their directions read backwards.
/// </summary>
public sealed partial class TreeFamily : TaskFamilyBase<TreeFamily.Params>
{
    public sealed record Entry(int Parent, int Left, int Right);
    public sealed record Params(IReadOnlyList<Entry> Entries, int Root, int Target);

    private const int MinLabel = 10, MaxLabel = 99;

    protected override string BaseName => "tree";

    public override string Description =>
        "Binary-tree routing. Prompt 'p(l,r),p(l,r),...;root>target=' (entries shuffled, labels 10..99). " +
        "Steps from the target up: 'child<parent:d' with d in {l,r}. Answer: the root-to-target path, e.g. 'lrl'. " +
        "Intermediates per step: node, parent, dir (0 l, 1 r), depth (depth of the parent, root = 0). " +
        "Counterfactual: another target leaf. Nuisance: swap the children of a node off the path. " +
        "Paraphrase: list the entries in another order. Rename: relabel every node.";

    public override DifficultyKnob Difficulty { get; } = new("depth", 3, 1, 5, "depth of the complete binary tree (2^depth leaves)");

    public override IReadOnlySet<char> Alphabet { get; } = Chars("0123456789(),;<>:=lr");

    protected override Params Sample(TaskRng rng, int depth)
    {
        int count = (1 << (depth + 1)) - 1;
        var labels = Enumerable.Range(MinLabel, MaxLabel - MinLabel + 1).ToList();
        rng.Shuffle(labels);
        var entries = new List<Entry>();
        for (int i = 0; i < (1 << depth) - 1; i++)
            entries.Add(new Entry(labels[i], labels[2 * i + 1], labels[2 * i + 2]));
        rng.Shuffle(entries);
        int leaf = rng.Next((1 << depth) - 1, count);
        return new Params(entries, labels[0], labels[leaf]);
    }

    [GeneratedRegex(@"^((?:[0-9]+\([0-9]+,[0-9]+\))(?:,[0-9]+\([0-9]+,[0-9]+\))*);([0-9]+)>([0-9]+)=$")]
    private static partial Regex PromptRegex();

    [GeneratedRegex(@"([0-9]+)\(([0-9]+),([0-9]+)\)")]
    private static partial Regex EntryRegex();

    protected override Params Parse(TaskProblem problem)
    {
        var m = PromptRegex().Match(problem.Prompt);
        if (!m.Success) throw BadPrompt(problem.Prompt, "expected 'p(l,r),...;root>target='");
        var entries = EntryRegex().Matches(m.Groups[1].Value)
            .Select(e => new Entry(int.Parse(e.Groups[1].Value), int.Parse(e.Groups[2].Value), int.Parse(e.Groups[3].Value))).ToList();
        var p = new Params(entries, int.Parse(m.Groups[2].Value), int.Parse(m.Groups[3].Value));
        var parents = ParentMap(p, problem.Prompt);
        if (parents.ContainsKey(p.Root)) throw BadPrompt(problem.Prompt, $"root {p.Root} has a parent");
        if (entries.Any(e => e.Parent == p.Target)) throw BadPrompt(problem.Prompt, $"target {p.Target} is not a leaf");
        int node = p.Target, guard = 0;
        while (node != p.Root)
        {
            if (!parents.TryGetValue(node, out var up) || ++guard > entries.Count)
                throw BadPrompt(problem.Prompt, $"target {p.Target} does not hang below root {p.Root}");
            node = up.Parent;
        }
        return p;
    }

    private Dictionary<int, (int Parent, char Dir)> ParentMap(Params p, string prompt)
    {
        var parents = new Dictionary<int, (int, char)>();
        foreach (var e in p.Entries)
        {
            if (!parents.TryAdd(e.Left, (e.Parent, 'l')) || !parents.TryAdd(e.Right, (e.Parent, 'r')))
                throw BadPrompt(prompt, $"a child of {e.Parent} has two parents");
        }
        return parents;
    }

    private static string Render(Params p) =>
        string.Join(',', p.Entries.Select(e => $"{e.Parent}({e.Left},{e.Right})")) + $";{p.Root}>{p.Target}=";

    protected override string Canonical(Params p) => Render(p with { Entries = p.Entries.OrderBy(e => e.Parent).ToList() });

    protected override int DifficultyOf(Params p) => PathUp(p).Count;

    private List<(int Node, int Parent, char Dir)> PathUp(Params p)
    {
        var parents = ParentMap(p, Render(p));
        var path = new List<(int, int, char)>();
        for (int node = p.Target; node != p.Root;)
        {
            var (parent, dir) = parents[node];
            path.Add((node, parent, dir));
            node = parent;
        }
        return path;
    }

    protected override Solution Solve(Params p, long seed)
    {
        var path = PathUp(p);
        var steps = new List<string>();
        var inter = new List<Dictionary<string, int>>();
        for (int i = 0; i < path.Count; i++)
        {
            var (node, parent, dir) = path[i];
            steps.Add($"{node}<{parent}:{dir}");
            inter.Add(new() { ["node"] = node, ["parent"] = parent, ["dir"] = dir == 'l' ? 0 : 1, ["depth"] = path.Count - 1 - i });
        }
        string answer = new(path.Select(x => x.Dir).Reverse().ToArray());
        return new Solution(Render(p), steps, answer, inter);
    }

    private static List<int> Leaves(Params p)
    {
        var internalNodes = p.Entries.Select(e => e.Parent).ToHashSet();
        return p.Entries.SelectMany(e => new[] { e.Left, e.Right }).Where(x => !internalNodes.Contains(x)).OrderBy(x => x).ToList();
    }

    protected override EditOutcome Counterfactual(Params p, TaskRng rng)
    {
        // Distinct leaves have distinct root paths.
        int t = rng.Pick(Leaves(p).Where(x => x != p.Target).ToList());
        return new(p with { Target = t }, $"target {p.Target} -> {t}");
    }

    protected override EditOutcome Nuisance(Params p, TaskRng rng)
    {
        var onPath = PathUp(p).Select(x => x.Parent).ToHashSet();
        var off = Enumerable.Range(0, p.Entries.Count).Where(i => !onPath.Contains(p.Entries[i].Parent)).ToList();
        if (off.Count == 0) return EditOutcome.Unsupported("every internal node lies on the path to the target");
        int k = rng.Pick(off);
        var entries = p.Entries.ToList();
        var e = entries[k];
        entries[k] = new Entry(e.Parent, e.Right, e.Left);
        return new(p with { Entries = entries }, $"children of {e.Parent} swapped (off the path)");
    }

    protected override EditOutcome Paraphrase(Params p, TaskRng rng)
    {
        if (p.Entries.Count < 2) return EditOutcome.Unsupported("a single entry has no other order");
        return new(p with { Entries = rng.Reordered(p.Entries) }, "entries listed in another order");
    }

    protected override EditOutcome Rename(Params p, TaskRng rng)
    {
        var nodes = p.Entries.SelectMany(e => new[] { e.Parent, e.Left, e.Right }).Distinct().OrderBy(x => x).ToList();
        var labels = Enumerable.Range(MinLabel, MaxLabel - MinLabel + 1).ToList();
        if (nodes.Count > labels.Count) return EditOutcome.Unsupported("more nodes than two-digit labels");
        rng.Shuffle(labels);
        var map = nodes.Select((n, i) => (n, labels[i])).ToDictionary(x => x.n, x => x.Item2);
        if (map.All(kv => kv.Key == kv.Value)) map = nodes.Select((n, i) => (n, labels[(i + 1) % labels.Count])).ToDictionary(x => x.n, x => x.Item2);
        return new(new Params(p.Entries.Select(e => new Entry(map[e.Parent], map[e.Left], map[e.Right])).ToList(), map[p.Root], map[p.Target]),
            "every node relabelled with fresh two-digit labels");
    }
}
