using System.Text.RegularExpressions;

namespace LatentLab.Tasks;

/// <summary>
/// Binary-tree routing, as in JEPA-Reasoner's tree-search experiment: a complete binary tree with random two-digit node
/// labels is listed as <c>parent(left,right)</c> entries in shuffled order, then <c>;root>target=</c>. The answer is the
/// path from the root to the target leaf as <c>l</c>/<c>r</c> letters (lowercase, to keep the alphabet small).
/// The steps climb from the target to the root, <c>child&lt;parent:dir</c>, because each such step is a single lookup
/// in the prompt (whose entry holds this node?); the answer is their directions read backwards.
/// <para>
/// <c>tree:labels=char</c> labels the nodes with single characters (digits and lowercase letters but l and r, 34 of
/// them, so depth ≤ 4) instead of two digits. Then each look-up matches one token, as in the paper's tree search where
/// a node is a token; with two-digit labels a small character model must first pair the digits before it can match
/// them, which a d = 64, 4-layer model had not learned after 2,000 updates (README, JEPA-Reasoner diagnosis).
/// </para>
/// <para>
/// <c>tree:edges</c> lists the same tree, with one-character labels, as child-to-parent edges <c>child&lt;parent:dir</c>
/// (each entry's left edge, then its right one). A step is then the edge of the current node, found by matching that
/// one token, as an induction head does; in the nested form the model must also count back from the child to its
/// parent, 2 or 4 characters depending on the side.
/// </para>
/// </summary>
public sealed partial class TreeFamily : TaskFamilyBase<TreeFamily.Params>
{
    public sealed record Entry(int Parent, int Left, int Right);
    public sealed record Params(IReadOnlyList<Entry> Entries, int Root, int Target);

    private const int MinLabel = 10, MaxLabel = 99;
    /// <summary>The single-character labels of <c>tree:labels=char</c>, label i + <see cref="MinLabel"/> written as Symbols[i].</summary>
    public const string Symbols = "0123456789abcdefghijkmnopqstuvwxyz";

    public TreeFamily() : this(charLabels: false) { }

    /// <summary>Two-digit labels, or with <paramref name="charLabels"/> one character per node; <paramref name="edges"/>
    /// writes the prompt as an edge list (one-character labels always).</summary>
    public TreeFamily(bool charLabels, bool edges = false)
    {
        Edges = edges;
        charLabels |= edges;
        CharLabels = charLabels;
        Alphabet = Chars("0123456789(),;<>:=lr" + (charLabels ? Symbols : ""));
        Difficulty = charLabels
            ? new("depth", 3, 1, 4, "depth of the complete binary tree (2^depth leaves; at most 4 with one-character labels)")
            : new("depth", 3, 1, 5, "depth of the complete binary tree (2^depth leaves)");
    }

    public bool CharLabels { get; }
    public bool Edges { get; }

    protected override string BaseName => "tree";

    public override string Name => Edges ? "tree:edges" : CharLabels ? "tree:labels=char" : "tree";

    int LabelCount => CharLabels ? Symbols.Length : MaxLabel - MinLabel + 1;

    string L(int label) => CharLabels ? Symbols[label - MinLabel].ToString() : label.ToString(System.Globalization.CultureInfo.InvariantCulture);

    int ReadLabel(string text, string prompt)
    {
        if (!CharLabels)
            return NumberRegex().IsMatch(text) ? int.Parse(text, System.Globalization.CultureInfo.InvariantCulture)
                : throw BadPrompt(prompt, $"'{text}' is not a number label");
        int i = text.Length == 1 ? Symbols.IndexOf(text[0]) : -1;
        if (i < 0) throw BadPrompt(prompt, $"'{text}' is not a one-character label ({Symbols})");
        return i + MinLabel;
    }

    public override string Description =>
        "Binary-tree routing. Prompt 'p(l,r),p(l,r),...;root>target=' (entries shuffled, labels 10..99; tree:labels=char: one character each; tree:edges: the tree as edges 'c<p:d,...', one character each). " +
        "Steps from the target up: 'child<parent:d' with d in {l,r}. Answer: the root-to-target path, e.g. 'lrl'. " +
        "Intermediates per step: node, parent, dir (0 l, 1 r), depth (depth of the parent, root = 0). " +
        "Counterfactual: another target leaf. Nuisance: swap the children of a node off the path. " +
        "Paraphrase: list the entries in another order. Rename: relabel every node.";

    public override DifficultyKnob Difficulty { get; }

    public override IReadOnlySet<char> Alphabet { get; }

    protected override Params Sample(TaskRng rng, int depth)
    {
        int count = (1 << (depth + 1)) - 1;
        var labels = Enumerable.Range(MinLabel, LabelCount).ToList();
        rng.Shuffle(labels);
        var entries = new List<Entry>();
        for (int i = 0; i < (1 << depth) - 1; i++)
            entries.Add(new Entry(labels[i], labels[2 * i + 1], labels[2 * i + 2]));
        rng.Shuffle(entries);
        int leaf = rng.Next((1 << depth) - 1, count);
        return new Params(entries, labels[0], labels[leaf]);
    }

    [GeneratedRegex(@"^((?:[0-9a-z]+\([0-9a-z]+,[0-9a-z]+\))(?:,[0-9a-z]+\([0-9a-z]+,[0-9a-z]+\))*);([0-9a-z]+)>([0-9a-z]+)=$")]
    private static partial Regex PromptRegex();

    [GeneratedRegex(@"([0-9a-z]+)\(([0-9a-z]+),([0-9a-z]+)\)")]
    private static partial Regex EntryRegex();

    [GeneratedRegex(@"^[0-9]+$")]
    private static partial Regex NumberRegex();

    [GeneratedRegex(@"^((?:[0-9a-z]<[0-9a-z]:[lr])(?:,[0-9a-z]<[0-9a-z]:[lr])*);([0-9a-z])>([0-9a-z])=$")]
    private static partial Regex EdgePromptRegex();

    [GeneratedRegex(@"([0-9a-z])<([0-9a-z]):([lr])")]
    private static partial Regex EdgeRegex();

    /// <summary>The entries of an edge-list prompt: each parent's two edges, one l and one r, in order of first appearance.</summary>
    List<Entry> ParseEdges(string list, string prompt)
    {
        var children = new Dictionary<int, (int? Left, int? Right)>();
        var order = new List<int>();
        foreach (Match e in EdgeRegex().Matches(list))
        {
            int child = ReadLabel(e.Groups[1].Value, prompt), parent = ReadLabel(e.Groups[2].Value, prompt);
            if (!children.TryGetValue(parent, out var c)) { order.Add(parent); c = (null, null); }
            if (e.Groups[3].Value == "l") c = c.Left is null ? (child, c.Right) : throw BadPrompt(prompt, $"{e.Groups[2].Value} has two left children");
            else c = c.Right is null ? (c.Left, child) : throw BadPrompt(prompt, $"{e.Groups[2].Value} has two right children");
            children[parent] = c;
        }
        return order.Select(p => children[p] is (int l, int r) ? new Entry(p, l, r) : throw BadPrompt(prompt, $"{L(p)} lacks a child")).ToList();
    }

    protected override Params Parse(TaskProblem problem)
    {
        var m = (Edges ? EdgePromptRegex() : PromptRegex()).Match(problem.Prompt);
        if (!m.Success && Edges) throw BadPrompt(problem.Prompt, "expected 'child<parent:d,...;root>target=' with one-character labels");
        if (!m.Success) throw BadPrompt(problem.Prompt, "expected 'p(l,r),...;root>target='");
        var entries = Edges ? ParseEdges(m.Groups[1].Value, problem.Prompt) : EntryRegex().Matches(m.Groups[1].Value)
            .Select(e => new Entry(ReadLabel(e.Groups[1].Value, problem.Prompt), ReadLabel(e.Groups[2].Value, problem.Prompt), ReadLabel(e.Groups[3].Value, problem.Prompt))).ToList();
        var p = new Params(entries, ReadLabel(m.Groups[2].Value, problem.Prompt), ReadLabel(m.Groups[3].Value, problem.Prompt));
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

    private string Render(Params p) =>
        (Edges
            ? string.Join(',', p.Entries.SelectMany(e => new[] { $"{L(e.Left)}<{L(e.Parent)}:l", $"{L(e.Right)}<{L(e.Parent)}:r" }))
            : string.Join(',', p.Entries.Select(e => $"{L(e.Parent)}({L(e.Left)},{L(e.Right)})"))) + $";{L(p.Root)}>{L(p.Target)}=";

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
            steps.Add($"{L(node)}<{L(parent)}:{dir}");
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
        var labels = Enumerable.Range(MinLabel, LabelCount).ToList();
        if (nodes.Count > labels.Count) return EditOutcome.Unsupported("more nodes than two-digit labels");
        rng.Shuffle(labels);
        var map = nodes.Select((n, i) => (n, labels[i])).ToDictionary(x => x.n, x => x.Item2);
        if (map.All(kv => kv.Key == kv.Value)) map = nodes.Select((n, i) => (n, labels[(i + 1) % labels.Count])).ToDictionary(x => x.n, x => x.Item2);
        return new(new Params(p.Entries.Select(e => new Entry(map[e.Parent], map[e.Left], map[e.Right])).ToList(), map[p.Root], map[p.Target]),
            "every node relabelled with fresh two-digit labels");
    }
}
