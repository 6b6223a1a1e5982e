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
/// <para>
/// <c>tree:hops</c> writes each edge as two tokens: the child, then one <em>hop</em> token that names the parent and the
/// side at once (<c>aK</c>: a is k's left child, uppercase; <c>aλ</c>: its right child, the Greek letter in the same
/// place of <see cref="HopRight"/>). Labels are the 24 lowercase letters but l and r, so depth ≤ 3. A step is then one
/// induction-head look-up (find the current node, copy the token after it), where in <c>tree:edges</c> the parent sits
/// two tokens past the matched child and its side four: the d = 64 Reasoners that learned neither look-up at depth 2
/// (README, JEPA-Reasoner diagnosis) are the reason for this rendering.
/// </para>
/// </summary>
public sealed partial class TreeFamily : TaskFamilyBase<TreeFamily.Params>
{
    public sealed record Entry(int Parent, int Left, int Right);
    /// <param name="EdgeOrder">tree:hops only: the order its edges are listed in, as indices 2·entry (left) and
    /// 2·entry + 1 (right); null lists each entry's left edge, then its right one.</param>
    public sealed record Params(IReadOnlyList<Entry> Entries, int Root, int Target, IReadOnlyList<int>? EdgeOrder = null);

    private const int MinLabel = 10, MaxLabel = 99;
    /// <summary>The single-character labels of <c>tree:labels=char</c>, label i + <see cref="MinLabel"/> written as Symbols[i].</summary>
    public const string Symbols = "0123456789abcdefghijkmnopqstuvwxyz";
    /// <summary>The node labels of <c>tree:hops</c>, and its hop tokens: a left child's parent (<see cref="HopLeft"/>) or a
    /// right child's (<see cref="HopRight"/>), each at the parent's place in <see cref="HopLabels"/>.</summary>
    public const string HopLabels = "abcdefghijkmnopqstuvwxyz", HopLeft = "ABCDEFGHIJKMNOPQSTUVWXYZ", HopRight = "αβγδεζηθικλμνξοπρστυφχψω";

    public TreeFamily() : this(charLabels: false) { }

    /// <summary>Two-digit labels, or with <paramref name="charLabels"/> one character per node; <paramref name="edges"/>
    /// writes the prompt as an edge list (one-character labels always), <paramref name="hops"/> as child-and-hop pairs.</summary>
    public TreeFamily(bool charLabels, bool edges = false, bool hops = false)
    {
        Hops = hops;
        Edges = edges && !hops;
        CharLabels = charLabels || edges || hops;
        Alphabet = Hops ? Chars(",;>=lr" + HopLabels + HopLeft + HopRight) : Chars("0123456789(),;<>:=lr" + (CharLabels ? Symbols : ""));
        Difficulty = Hops
            ? new("depth", 2, 1, 3, "depth of the complete binary tree (2^depth leaves; at most 3 with the 24 hop labels)")
            : CharLabels
            ? new("depth", 3, 1, 4, "depth of the complete binary tree (2^depth leaves; at most 4 with one-character labels)")
            : new("depth", 3, 1, 5, "depth of the complete binary tree (2^depth leaves)");
    }

    public bool CharLabels { get; }
    public bool Edges { get; }
    public bool Hops { get; }

    protected override string BaseName => "tree";

    public override string Name => Hops ? "tree:hops" : Edges ? "tree:edges" : CharLabels ? "tree:labels=char" : "tree";

    string LabelChars => Hops ? HopLabels : Symbols;

    int LabelCount => CharLabels ? LabelChars.Length : MaxLabel - MinLabel + 1;

    string L(int label) => CharLabels ? LabelChars[label - MinLabel].ToString() : label.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The hop token of <c>tree:hops</c>: <paramref name="parent"/> and the side its child hangs on.</summary>
    static char Hop(int parent, char dir) => (dir == 'l' ? HopLeft : HopRight)[parent - MinLabel];

    int ReadLabel(string text, string prompt)
    {
        if (!CharLabels)
            return NumberRegex().IsMatch(text) ? int.Parse(text, System.Globalization.CultureInfo.InvariantCulture)
                : throw BadPrompt(prompt, $"'{text}' is not a number label");
        int i = text.Length == 1 ? LabelChars.IndexOf(text[0]) : -1;
        if (i < 0) throw BadPrompt(prompt, $"'{text}' is not a one-character label ({LabelChars})");
        return i + MinLabel;
    }

    public override string Description =>
        "Binary-tree routing. Prompt 'p(l,r),p(l,r),...;root>target=' (entries shuffled, labels 10..99; tree:labels=char: one character each; tree:edges: the tree as edges 'c<p:d,...', one character each; tree:hops: 'cH,...' with H one token for the parent and side, uppercase left, Greek right). " +
        "Steps from the target up: 'child<parent:d' with d in {l,r} (tree:hops: 'cH'). Answer: the root-to-target path, e.g. 'lrl'. " +
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
        // tree:hops shuffles single edges, not entries: siblings listed side by side would let a model find the parent
        // from roughly where the child is, and the side from which of the pair it is, without an exact look-up.
        List<int>? order = null;
        if (Hops) rng.Shuffle(order = Enumerable.Range(0, 2 * entries.Count).ToList());
        return new Params(entries, labels[0], labels[leaf], order);
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

    [GeneratedRegex(@"^((?:[a-z][A-Zα-ω])(?:,[a-z][A-Zα-ω])*);([a-z])>([a-z])=$")]
    private static partial Regex HopPromptRegex();

    [GeneratedRegex(@"([a-z])([A-Zα-ω])")]
    private static partial Regex HopRegex();

    /// <summary>The (child, parent, side) edges of an edge-list or hop prompt's list, in order.</summary>
    IEnumerable<(int Child, int Parent, char Dir)> EdgesOf(string list, string prompt)
    {
        if (!Hops)
        {
            foreach (Match e in EdgeRegex().Matches(list))
                yield return (ReadLabel(e.Groups[1].Value, prompt), ReadLabel(e.Groups[2].Value, prompt), e.Groups[3].Value[0]);
            yield break;
        }
        foreach (Match e in HopRegex().Matches(list))
        {
            char hop = e.Groups[2].Value[0];
            int left = HopLeft.IndexOf(hop), right = HopRight.IndexOf(hop);
            if (left < 0 && right < 0) throw BadPrompt(prompt, $"'{hop}' is not a hop token ({HopLeft}, {HopRight})");
            yield return (ReadLabel(e.Groups[1].Value, prompt), MinLabel + Math.Max(left, right), left >= 0 ? 'l' : 'r');
        }
    }

    /// <summary>The entries of an edge-list or hop prompt (each parent's two edges, one l and one r, in order of first
    /// appearance), and the order of its edges as <see cref="Params.EdgeOrder"/> counts them.</summary>
    (List<Entry> Entries, List<int> EdgeOrder) ParseEdges(string list, string prompt)
    {
        var children = new Dictionary<int, (int? Left, int? Right)>();
        var order = new List<int>();
        var edges = EdgesOf(list, prompt).ToList();
        foreach (var (child, parent, dir) in edges)
        {
            if (!children.TryGetValue(parent, out var c)) { order.Add(parent); c = (null, null); }
            if (dir == 'l') c = c.Left is null ? (child, c.Right) : throw BadPrompt(prompt, $"{L(parent)} has two left children");
            else c = c.Right is null ? (c.Left, child) : throw BadPrompt(prompt, $"{L(parent)} has two right children");
            children[parent] = c;
        }
        var entries = order.Select(p => children[p] is (int l, int r) ? new Entry(p, l, r) : throw BadPrompt(prompt, $"{L(p)} lacks a child")).ToList();
        return (entries, edges.Select(e => 2 * order.IndexOf(e.Parent) + (e.Dir == 'l' ? 0 : 1)).ToList());
    }

    protected override Params Parse(TaskProblem problem)
    {
        var m = (Hops ? HopPromptRegex() : Edges ? EdgePromptRegex() : PromptRegex()).Match(problem.Prompt);
        if (!m.Success && Hops) throw BadPrompt(problem.Prompt, $"expected 'cH,...;root>target=' with labels from {HopLabels} and hop tokens from {HopLeft} (left) or {HopRight} (right)");
        if (!m.Success && Edges) throw BadPrompt(problem.Prompt, "expected 'child<parent:d,...;root>target=' with one-character labels");
        if (!m.Success) throw BadPrompt(problem.Prompt, "expected 'p(l,r),...;root>target='");
        var (entries, edgeOrder) = Edges || Hops ? ParseEdges(m.Groups[1].Value, problem.Prompt) : (EntryRegex().Matches(m.Groups[1].Value)
            .Select(e => new Entry(ReadLabel(e.Groups[1].Value, problem.Prompt), ReadLabel(e.Groups[2].Value, problem.Prompt), ReadLabel(e.Groups[3].Value, problem.Prompt))).ToList(), null);
        var p = new Params(entries, ReadLabel(m.Groups[2].Value, problem.Prompt), ReadLabel(m.Groups[3].Value, problem.Prompt), Hops ? edgeOrder : null);
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
        (Hops
            ? string.Join(',', (p.EdgeOrder ?? Enumerable.Range(0, 2 * p.Entries.Count).ToList()).Select(i => HopEdge(p.Entries[i / 2], i % 2 == 0)))
            : Edges
            ? string.Join(',', p.Entries.SelectMany(e => new[] { $"{L(e.Left)}<{L(e.Parent)}:l", $"{L(e.Right)}<{L(e.Parent)}:r" }))
            : string.Join(',', p.Entries.Select(e => $"{L(e.Parent)}({L(e.Left)},{L(e.Right)})"))) + $";{L(p.Root)}>{L(p.Target)}=";

    /// <summary>One edge of tree:hops: the child on the given side of <paramref name="e"/>, then its hop token.</summary>
    string HopEdge(Entry e, bool left) => left ? $"{L(e.Left)}{Hop(e.Parent, 'l')}" : $"{L(e.Right)}{Hop(e.Parent, 'r')}";

    protected override string Canonical(Params p) => Render(p with { Entries = p.Entries.OrderBy(e => e.Parent).ToList(), EdgeOrder = null });

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
            steps.Add(Hops ? $"{L(node)}{Hop(parent, dir)}" : $"{L(node)}<{L(parent)}:{dir}");
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
        if (p.EdgeOrder is { } order) return new(p with { EdgeOrder = rng.Reordered(order) }, "edges listed in another order");
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
        return new(new Params(p.Entries.Select(e => new Entry(map[e.Parent], map[e.Left], map[e.Right])).ToList(), map[p.Root], map[p.Target], p.EdgeOrder),
            "every node relabelled with fresh two-digit labels");
    }
}
