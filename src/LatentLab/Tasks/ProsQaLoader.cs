using System.Text.Json;

namespace LatentLab.Tasks;

/// <summary>One ProsQA item (Coconut's graph-reasoning benchmark): <paramref name="Edges"/> index into
/// <paramref name="IdxToSymbol"/>; <paramref name="Root"/> is the entity asked about, <paramref name="Target"/> the
/// concept it reaches (the correct option) and <paramref name="NegTarget"/> the distractor.</summary>
public sealed record ProsQaItem(int Index, string Question, string Answer, IReadOnlyList<string> Steps,
    IReadOnlyList<(int From, int To)> Edges, IReadOnlyList<string> IdxToSymbol, int Root, int Target, int NegTarget, int Line);

public sealed record ProsQaLoadResult(IReadOnlyList<ProsQaItem> Items, IReadOnlyList<MalformedLine> Problems);

/// <summary>Reads ProsQA's JSON list (or JSON lines) of {question, answer, steps, idx_to_symbol, edges, root, target, neg_target}.</summary>
public static class ProsQaLoader
{
    public static ProsQaLoadResult Load(string path, MalformedPolicy policy)
    {
        var c = new LoadCollector<ProsQaItem>(path, policy);
        int index = 0;
        JsonRecords.Read(path, (line, e) =>
        {
            int idx = index++;
            void Bad(string r) => c.Bad(line, $"item {idx}: {r}");
            string? q = JsonRecords.String(e, "question", Bad);
            if (q is null) return;
            string? a = JsonRecords.String(e, "answer", Bad);
            if (a is null) return;
            try
            {
                var steps = e.GetProperty("steps").EnumerateArray().Select(s => s.GetString() ?? throw new FormatException("null step")).ToList();
                var symbols = e.GetProperty("idx_to_symbol").EnumerateArray().Select(s => s.GetString() ?? throw new FormatException("null symbol")).ToList();
                var edges = e.GetProperty("edges").EnumerateArray().Select(pair =>
                {
                    var ab = pair.EnumerateArray().Select(x => x.GetInt32()).ToArray();
                    if (ab.Length != 2) throw new FormatException($"edge with {ab.Length} ends");
                    return (ab[0], ab[1]);
                }).ToList();
                int root = e.GetProperty("root").GetInt32(), target = e.GetProperty("target").GetInt32(), neg = e.GetProperty("neg_target").GetInt32();
                foreach (int v in edges.SelectMany(x => new[] { x.Item1, x.Item2 }).Append(root).Append(target).Append(neg))
                    if (v < 0 || v >= symbols.Count) throw new FormatException($"node index {v} outside idx_to_symbol (size {symbols.Count})");
                c.Items.Add(new ProsQaItem(idx, q, a, steps, edges, symbols, root, target, neg, line));
            }
            catch (Exception ex) when (ex is KeyNotFoundException or InvalidOperationException or FormatException)
            {
                Bad(ex is KeyNotFoundException ? "missing field (steps, idx_to_symbol, edges, root, target or neg_target)" : ex.Message);
            }
        }, c.Bad);
        return new ProsQaLoadResult(c.Items, c.Problems);
    }
}
