using LatentLab.Tasks;
using Parquet;
using Parquet.Schema;

namespace LatentLab.Tests;

public sealed class DatasetLoaderTests : IDisposable
{
    private static readonly string FixtureDir = Path.Combine(AppContext.BaseDirectory, "Fixtures", "data");
    private readonly string _tmp = Directory.CreateTempSubdirectory("latentlab-data-").FullName;

    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    private string Write(string name, string content)
    {
        string path = Path.Combine(_tmp, name);
        File.WriteAllText(path, content);
        return path;
    }

    [Fact]
    public void Gsm8k_excerpt_parses_completely_and_every_answer_normalises()
    {
        string path = Path.Combine(FixtureDir, "gsm8k_test_excerpt.jsonl");
        Assert.True(File.Exists(Path.Combine(FixtureDir, "gsm8k_LICENSE")));
        var r = Gsm8kLoader.Load(path, MalformedPolicy.Fail);
        Assert.Equal(40, r.Examples.Count);
        Assert.Empty(r.Problems);
        Assert.All(r.Examples, e => Assert.True(AnswerNormalizer.Normalize(e.Answer).IsNumeric, e.Answer));
        var first = r.Examples[0];
        Assert.StartsWith("Janet", first.Question);
        Assert.Equal("18", first.Answer);
        Assert.Equal(1, first.Line);
        Assert.Contains("<<16-3-4=9>>", first.Steps);
        Assert.Equal("Janet sells 16 - 3 - 4 = 9 duck eggs a day.", Gsm8kLoader.StripCalculatorAnnotations(first.Steps!).Split('\n')[0]);
        Assert.Equal(70000, AnswerNormalizer.Normalize(r.Examples[2].Answer).Value);
        Assert.Equal(40, r.Examples[^1].Line);

        var report = DataCheck.Run(path, "gsm8k");
        Assert.True(report.Clean, report.ToText());
        Assert.Equal(40, report.Rows);
        Assert.Equal(40, report.NumericAnswers);
    }

    [Fact]
    public void Malformed_lines_are_reported_with_file_and_line_or_fail()
    {
        string path = Write("gsm.jsonl", string.Join('\n',
            """{"question": "What is 2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"}""",
            """{"question": "broken", "answer": """,
            "",
            """{"question": "no final", "answer": "just words"}""",
            """{"answer": "#### 3"}""",
            """{"question": "Sum?", "answer": "#### 1,234"}""",
            """[1, 2]""",
            ""));
        var r = Gsm8kLoader.Load(path, MalformedPolicy.Skip);
        Assert.Equal([1, 6], r.Examples.Select(e => e.Line));
        Assert.Equal([2, 4, 5, 7], r.Problems.Select(p => p.Line));
        Assert.All(r.Problems, p => Assert.Equal(path, p.File));
        Assert.Contains("invalid JSON", r.Problems[0].Reason);
        Assert.Contains("####", r.Problems[1].Reason);
        Assert.Contains("'question'", r.Problems[2].Reason);
        Assert.Contains("object", r.Problems[3].Reason);
        Assert.Equal(1234, AnswerNormalizer.Normalize(r.Examples[1].Answer).Value);

        var ex = Assert.Throws<DatasetFormatException>(() => Gsm8kLoader.Load(path, MalformedPolicy.Fail));
        Assert.Contains(path + ":2", ex.Message);
        Assert.Equal(2, ex.Problem.Line);

        var report = DataCheck.Run(path, DatasetFormat.Gsm8k);
        Assert.False(report.Clean);
        Assert.Equal(2, report.Rows);
        Assert.Equal(4, report.Malformed.Count);
        Assert.Contains("line 7", report.ToText());
        Assert.Throws<FileNotFoundException>(() => Gsm8kLoader.Load(Path.Combine(_tmp, "missing.jsonl"), MalformedPolicy.Skip));
    }

    [Fact]
    public void Gsm8k_non_numeric_answer_is_reported_unreadable()
    {
        string path = Write("g.jsonl", """{"question": "q", "answer": "#### seven"}""" + "\n" + """{"question": "q", "answer": "#### 7"}""");
        var report = DataCheck.Run(path, DatasetFormat.Gsm8k);
        Assert.Equal(2, report.Rows);
        var u = Assert.Single(report.Unreadable);
        Assert.Equal(1, u.Line);
        Assert.Equal("seven", u.Answer);
    }

    [Fact]
    public void Math_reads_jsonl_and_json_arrays_with_line_numbers_and_nested_boxed_answers()
    {
        string jsonl = Write("math.jsonl", string.Join('\n',
            """{"problem": "Half?", "solution": "It is $\\boxed{\\frac{1}{2}}$."}""",
            """{"problem": "Set?", "solution": "So \\boxed{\\{1, \\frac{2}{3}\\}} and finally \\boxed{x^{2}+\\sqrt{2}}"}""",
            """{"problem": "None?", "solution": "no box here"}"""));
        var r = MathLoader.Load(jsonl, MalformedPolicy.Skip);
        Assert.Equal(2, r.Examples.Count);
        Assert.Equal("\\frac{1}{2}", r.Examples[0].Answer);
        Assert.Equal("x^{2}+\\sqrt{2}", r.Examples[1].Answer);
        Assert.Equal(3, Assert.Single(r.Problems).Line);
        Assert.Contains("boxed", r.Problems[0].Reason);

        string array = Write("math.json", """
            [
              {"problem": "One?", "solution": "\\boxed{1}", "level": "Level 1"},
              {
                "problem": "Two?",
                "solution": "\\boxed{2}"
              },
              {"problem": "Bad", "solution": 5}
            ]
            """);
        var a = MathLoader.Load(array, MalformedPolicy.Skip);
        Assert.Equal([2, 3], a.Examples.Select(e => e.Line));
        Assert.Equal("2", a.Examples[1].Answer);
        Assert.Equal(7, Assert.Single(a.Problems).Line);
        Assert.Equal("math", a.Examples[0].Source);

        string broken = Write("broken.json", "[\n {\"problem\": \"a\", \"solution\": \"\\\\boxed{1}\"},\n {\"problem\": \n");
        var b = MathLoader.Load(broken, MalformedPolicy.Skip);
        Assert.Single(b.Examples);
        Assert.Contains("invalid JSON array", Assert.Single(b.Problems).Reason);
        Assert.Throws<DatasetFormatException>(() => MathLoader.Load(broken, MalformedPolicy.Fail));

        var report = DataCheck.Run(array, "math");
        Assert.Equal(2, report.Rows);
        Assert.Equal(2, report.NumericAnswers);
    }

    [Fact]
    public async Task BigMath_reads_jsonl_and_parquet()
    {
        string jsonl = Write("bm.jsonl", string.Join('\n',
            """{"problem": "p1", "answer": "\\frac{3}{4}", "source": "cn_k12"}""",
            """{"problem": "p2", "answer": 12}""",
            """{"problem": "p3"}"""));
        var j = BigMathLoader.Load(jsonl, MalformedPolicy.Skip);
        Assert.Equal(["\\frac{3}{4}", "12"], j.Examples.Select(e => e.Answer));
        Assert.Null(j.Examples[0].Steps);
        Assert.Equal(3, Assert.Single(j.Problems).Line);

        string parquet = Path.Combine(_tmp, "bm.parquet");
        var problem = new DataField<string>("problem");
        var answer = new DataField<string>("answer");
        var source = new DataField<string>("source");
        var schema = new ParquetSchema(problem, answer, source);
        await using (var fs = File.Create(parquet))
        await using (var writer = await ParquetWriter.CreateAsync(schema, fs))
        {
            using var group = writer.CreateRowGroup();
            await group.WriteAsync(problem, new[] { "What is 1+1?", "Solve x", "Empty answer" });
            await group.WriteAsync(answer, new[] { "2", "x = -3.5", "" });
            await group.WriteAsync(source, new[] { "a", "b", "c" });
        }
        var p = BigMathLoader.Load(parquet, MalformedPolicy.Skip);
        Assert.Equal(["2", "x = -3.5"], p.Examples.Select(e => e.Answer));
        Assert.Equal([1, 2], p.Examples.Select(e => e.Line));
        Assert.Equal(3, Assert.Single(p.Problems).Line);
        Assert.Equal(-3.5, AnswerNormalizer.Normalize(p.Examples[1].Answer).Value);
        var ex = Assert.Throws<DatasetFormatException>(() => BigMathLoader.Load(parquet, MalformedPolicy.Fail));
        Assert.Contains("bm.parquet:3", ex.Message);

        // The format is recognised by its magic bytes too.
        string renamed = Path.Combine(_tmp, "bm.data");
        File.Copy(parquet, renamed);
        Assert.Equal(2, BigMathLoader.Load(renamed, MalformedPolicy.Skip).Examples.Count);

        string noAnswer = Path.Combine(_tmp, "noanswer.parquet");
        await using (var fs = File.Create(noAnswer))
        await using (var writer = await ParquetWriter.CreateAsync(new ParquetSchema(problem), fs))
        {
            using var group = writer.CreateRowGroup();
            await group.WriteAsync(problem, new[] { "q" });
        }
        var fx = Assert.Throws<FormatException>(() => BigMathLoader.Load(noAnswer, MalformedPolicy.Skip));
        Assert.Contains("no column 'answer'", fx.Message);

        Assert.Equal(2, DataCheck.Run(parquet, "bigmath").Rows);
        Assert.Equal(DatasetFormat.BigMath, DatasetLoader.ParseFormat("Big-Math"));
        Assert.Contains("gsm8k, math or bigmath", Assert.Throws<ArgumentException>(() => DatasetLoader.ParseFormat("csv")).Message);
    }

    [Fact]
    public void ProsQa_excerpt_loads_with_graph_fields()
    {
        string path = Path.Combine(FixtureDir, "prosqa_test_excerpt.json");
        Assert.True(File.Exists(Path.Combine(FixtureDir, "prosqa_LICENSE")));
        var r = ProsQaLoader.Load(path, MalformedPolicy.Fail);
        Assert.Equal(5, r.Items.Count);
        var first = r.Items[0];
        Assert.Equal("Sally is a sterpus.", first.Answer);
        Assert.Equal(["Sally is a scrompus.", "Every scrompus is a rempus.", "Every rempus is a sterpus."], first.Steps);
        Assert.Equal("Sally", first.IdxToSymbol[first.Root]);
        Assert.Equal("sterpus", first.IdxToSymbol[first.Target]);
        Assert.Contains((0, 2), first.Edges);
        Assert.Equal(2, first.Line);
        // The answer's concept is reachable from the root along the edges.
        Assert.All(r.Items, item => Assert.Contains(item.Target, Reach(item)));

        string bad = Write("pq.json", """[{"question": "q", "answer": "a", "steps": [], "idx_to_symbol": ["x"], "edges": [[0, 3]], "root": 0, "target": 0, "neg_target": 0}]""");
        var b = ProsQaLoader.Load(bad, MalformedPolicy.Skip);
        Assert.Empty(b.Items);
        Assert.Contains("node index 3", Assert.Single(b.Problems).Reason);
        Assert.Throws<DatasetFormatException>(() => ProsQaLoader.Load(bad, MalformedPolicy.Fail));
    }

    private static HashSet<int> Reach(ProsQaItem item)
    {
        var seen = new HashSet<int> { item.Root };
        var queue = new Queue<int>([item.Root]);
        while (queue.Count > 0)
        {
            int u = queue.Dequeue();
            foreach (var (a, b) in item.Edges) if (a == u && seen.Add(b)) queue.Enqueue(b);
        }
        return seen;
    }
}
