using System.Text;
using System.Text.RegularExpressions;

namespace LatentLab.Tasks;

/// <summary>
/// Directed-graph reachability by breadth-first search. Nodes are lowercase letters. Prompt <c>ab,bc,ea,cd;a>d=</c>
/// (edges, then source>target); one step per BFS level, <c>depth:frontier</c> with the frontier's nodes sorted and
/// <c>-</c> for an empty frontier (<c>0:a</c>, <c>1:b</c>, <c>2:c</c>, <c>3:d</c>), stopping when the target enters the
/// frontier or the frontier empties; answer <c>yes</c> or <c>no</c>.
/// </summary>
public sealed partial class ReachFamily : TaskFamilyBase<ReachFamily.Params>
{
    public sealed record Params(IReadOnlyList<(char U, char V)> Edges, char Source, char Target);

    protected override string BaseName => "reach";

    public override string Description =>
        "Graph reachability. Prompt 'uv,uv,...;s>t=' (directed edges u->v between letters). One step per BFS level 'depth:frontier' " +
        "(sorted letters, '-' when empty), from '0:s' until t is found or the frontier is empty. Answer yes/no. " +
        "Intermediates per step: depth, frontier, visited (bitmasks, bit i = letter 'a'+i), size (frontier size), found (0/1). " +
        "Counterfactual: retarget to a node with the other answer, or else remove the target's in-edges / add the edge s->t. " +
        "Nuisance: add an edge that leaves the reachable set unchanged. Paraphrase: reorder the edges. Rename: relabel the nodes.";

    public override DifficultyKnob Difficulty { get; } = new("nodes", 6, 3, 26, "number of node letters; the graph has 3*nodes/2 edges");

    public override IReadOnlySet<char> Alphabet { get; } = Chars("abcdefghijklmnopqrstuvwxyz0123456789,;:>=-");

    protected override Params Sample(TaskRng rng, int n)
    {
        var letters = "abcdefghijklmnopqrstuvwxyz".ToList();
        rng.Shuffle(letters);
        var nodes = letters.Take(n).ToList();
        int m = 3 * n / 2;
        var edges = new List<(char, char)>();
        var seen = new HashSet<(char, char)>();
        while (edges.Count < m)
        {
            char u = rng.Pick(nodes), v = rng.Pick(nodes);
            if (u != v && seen.Add((u, v))) edges.Add((u, v));
        }
        char s = rng.Pick(nodes);
        var reach = Reachable(edges, s);
        var yes = nodes.Where(x => x != s && reach.Contains(x)).ToList();
        var no = nodes.Where(x => !reach.Contains(x)).ToList();
        bool wantYes = rng.Next(2) == 0;
        char t = (wantYes && yes.Count > 0) || no.Count == 0 ? rng.Pick(yes) : rng.Pick(no);
        return new Params(edges, s, t);
    }

    internal static HashSet<char> Reachable(IReadOnlyList<(char U, char V)> edges, char s)
    {
        var seen = new HashSet<char> { s };
        var queue = new Queue<char>([s]);
        while (queue.Count > 0)
        {
            char u = queue.Dequeue();
            foreach (var (a, b) in edges)
                if (a == u && seen.Add(b)) queue.Enqueue(b);
        }
        return seen;
    }

    private static IEnumerable<char> Nodes(Params p) =>
        p.Edges.SelectMany(e => new[] { e.U, e.V }).Append(p.Source).Append(p.Target).Distinct();

    [GeneratedRegex(@"^((?:[a-z]{2}(?:,[a-z]{2})*)?);([a-z])>([a-z])=$")]
    private static partial Regex PromptRegex();

    protected override Params Parse(TaskProblem problem)
    {
        var m = PromptRegex().Match(problem.Prompt);
        if (!m.Success) throw BadPrompt(problem.Prompt, "expected 'uv,uv,...;s>t=' with lowercase letters");
        var edges = m.Groups[1].Value.Length == 0
            ? new List<(char, char)>()
            : m.Groups[1].Value.Split(',').Select(e => (e[0], e[1])).ToList();
        if (edges.Any(e => e.Item1 == e.Item2)) throw BadPrompt(problem.Prompt, "self-loop");
        if (edges.Distinct().Count() != edges.Count) throw BadPrompt(problem.Prompt, "repeated edge");
        char s = m.Groups[2].Value[0], t = m.Groups[3].Value[0];
        if (s == t) throw BadPrompt(problem.Prompt, "source equals target");
        return new Params(edges, s, t);
    }

    private static string Render(Params p) =>
        string.Join(',', p.Edges.Select(e => $"{e.U}{e.V}")) + $";{p.Source}>{p.Target}=";

    // Edge order is surface form (the paraphrase), so the key sorts the edges.
    protected override string Canonical(Params p) =>
        Render(p with { Edges = p.Edges.OrderBy(e => e.U).ThenBy(e => e.V).ToList() });

    protected override int DifficultyOf(Params p) => Nodes(p).Count();

    private static int Mask(IEnumerable<char> set) => set.Aggregate(0, (acc, c) => acc | 1 << (c - 'a'));

    protected override Solution Solve(Params p, long seed)
    {
        var steps = new List<string>();
        var inter = new List<Dictionary<string, int>>();
        var visited = new HashSet<char> { p.Source };
        var frontier = new SortedSet<char> { p.Source };
        int depth = 0;
        bool found = false;
        while (true)
        {
            steps.Add($"{depth}:{(frontier.Count == 0 ? "-" : string.Concat(frontier))}");
            inter.Add(new()
            {
                ["depth"] = depth, ["frontier"] = Mask(frontier), ["visited"] = Mask(visited),
                ["size"] = frontier.Count, ["found"] = found ? 1 : 0,
            });
            if (found || frontier.Count == 0) break;
            var next = new SortedSet<char>();
            foreach (var (u, v) in p.Edges)
                if (frontier.Contains(u) && !visited.Contains(v)) next.Add(v);
            visited.UnionWith(next);
            frontier = next;
            found = next.Contains(p.Target);
            depth++;
        }
        return new Solution(Render(p), steps, found ? "yes" : "no", inter);
    }

    protected override EditOutcome Counterfactual(Params p, TaskRng rng)
    {
        var reach = Reachable(p.Edges, p.Source);
        bool yes = reach.Contains(p.Target);
        var others = Nodes(p).Where(x => x != p.Source && x != p.Target && reach.Contains(x) != yes).OrderBy(x => x).ToList();
        if (others.Count > 0)
        {
            char t = rng.Pick(others);
            return new(p with { Target = t }, $"target {p.Target} -> {t} ({(yes ? "unreachable" : "reachable")})");
        }
        if (yes)
            return new(p with { Edges = p.Edges.Where(e => e.V != p.Target).ToList() }, $"all edges into {p.Target} removed");
        var edges = p.Edges.ToList();
        edges.Insert(rng.Next(edges.Count + 1), (p.Source, p.Target));
        return new(p with { Edges = edges }, $"edge {p.Source}{p.Target} added");
    }

    protected override EditOutcome Nuisance(Params p, TaskRng rng)
    {
        var reach = Reachable(p.Edges, p.Source);
        var nodes = Nodes(p).OrderBy(x => x).ToList();
        var present = p.Edges.ToHashSet();
        // An edge out of an unreachable node, or between two reachable nodes, leaves the reachable set as it is.
        var candidates = (from u in nodes
                          from v in nodes
                          where u != v && !present.Contains((u, v)) && (!reach.Contains(u) || reach.Contains(v))
                          select (u, v)).ToList();
        if (candidates.Count == 0) return EditOutcome.Unsupported("no edge can be added without changing the reachable set");
        var e = rng.Pick(candidates);
        var edges = p.Edges.ToList();
        edges.Insert(rng.Next(edges.Count + 1), e);
        return new(p with { Edges = edges }, $"edge {e.u}{e.v} added (reachable set unchanged)");
    }

    protected override EditOutcome Paraphrase(Params p, TaskRng rng)
    {
        if (p.Edges.Count < 2) return EditOutcome.Unsupported("fewer than two edges: no other order");
        return new(p with { Edges = rng.Reordered(p.Edges) }, "edges listed in another order");
    }

    protected override EditOutcome Rename(Params p, TaskRng rng)
    {
        var letters = "abcdefghijklmnopqrstuvwxyz".ToList();
        rng.Shuffle(letters);
        var nodes = Nodes(p).OrderBy(x => x).ToList();
        var map = nodes.Select((c, i) => (c, letters[i])).ToDictionary(x => x.c, x => x.Item2);
        if (map.All(kv => kv.Key == kv.Value)) map = nodes.Select((c, i) => (c, letters[(i + 1) % 26])).ToDictionary(x => x.c, x => x.Item2);
        var desc = new StringBuilder("nodes relabelled ");
        desc.AppendJoin(", ", nodes.Select(c => $"{c}->{map[c]}"));
        return new(new Params(p.Edges.Select(e => (map[e.U], map[e.V])).ToList(), map[p.Source], map[p.Target]), desc.ToString());
    }
}
