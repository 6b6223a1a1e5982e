using System.Text.Json;
using LatentLab.Tasks;

namespace LatentLab.Tests;

public sealed class TaskFamilyTests
{
    public static TheoryData<string> Families => new(TaskRegistry.Names);

    private static ITaskFamily F(string name) => TaskRegistry.Get(name);

    [Theory]
    [MemberData(nameof(Families))]
    public void Generate_is_deterministic_per_seed_and_varies_across_seeds(string name)
    {
        var f = F(name);
        for (long seed = 0; seed < 20; seed++)
        {
            var a = f.Generate(seed, f.Difficulty.Default);
            var b = f.Generate(seed, f.Difficulty.Default);
            Assert.Equal(TaskSampleFormatter.ToJsonl(a), TaskSampleFormatter.ToJsonl(b));
        }
        var prompts = Enumerable.Range(0, 50).Select(s => f.Generate(s, f.Difficulty.Default).Prompt).ToHashSet();
        Assert.True(prompts.Count > 40, $"{name}: only {prompts.Count} distinct prompts in 50 seeds");
        // A fresh instance (another process would build one) gives the same problem.
        var fresh = (ITaskFamily)Activator.CreateInstance(f.GetType())!;
        Assert.Equal(f.Generate(123, f.Difficulty.Default).Prompt, fresh.Generate(123, f.Difficulty.Default).Prompt);
    }

    [Fact]
    public void Addition_default_problem_has_the_compact_documented_format()
    {
        var f = F("addition");
        Assert.Equal(4, f.Difficulty.Default);
        var p = f.Generate(7, 4);
        Assert.Matches(@"^[1-9][0-9]{3}\+[1-9][0-9]{3}=$", p.Prompt);
        Assert.Equal(4, p.Steps.Count);
        Assert.All(p.Steps, s => Assert.Matches(@"^[0-9]\+[0-9]\+[01]=[01][0-9]$", s));
        var ab = p.Prompt.TrimEnd('=').Split('+').Select(long.Parse).ToArray();
        Assert.Equal((ab[0] + ab[1]).ToString(), p.Answer);
    }

    [Fact]
    public void Known_problems_solve_as_documented()
    {
        var add = (AdditionFamily)F("addition");
        var p = Rebuild(add, "1234+5678=");
        Assert.Equal(["4+8+0=12", "3+7+1=11", "2+6+1=09", "1+5+0=06"], p.Steps);
        Assert.Equal("6912", p.Answer);
        Assert.Equal("10998", Rebuild(add, "9999+999=").Answer);

        var mod = Rebuild(F("modchain"), "m7:3+5*2-4=");
        Assert.Equal(["3+5=1", "1*2=2", "2-4=5"], mod.Steps);
        Assert.Equal("5", mod.Answer);

        var dfa = Rebuild(F("dfa"), "1:abca=");
        Assert.Equal(["a:1>0", "b:0>0", "c:0>2", "a:2>2"], dfa.Steps);
        Assert.Equal("2", dfa.Answer);

        var reach = Rebuild(F("reach"), "ab,bc,ea,cd;a>d=");
        Assert.Equal(["0:a", "1:b", "2:c", "3:d"], reach.Steps);
        Assert.Equal("yes", reach.Answer);
        var unreachable = Rebuild(F("reach"), "ab,bc,ea,cd;a>e=");
        Assert.Equal("no", unreachable.Answer);
        Assert.Equal("4:-", unreachable.Steps[^1]);

        var sort = Rebuild(F("sort"), "[31,7,58,2]=");
        Assert.Equal(["2:31,7,58", "7:31,58", "31:58", "58:-"], sort.Steps);
        Assert.Equal("2,7,31,58", sort.Answer);

        var tree = Rebuild(F("tree"), "45(13,29),12(45,17),17(88,61);12>29=");
        Assert.Equal(["29<45:r", "45<12:l"], tree.Steps);
        Assert.Equal("lr", tree.Answer);

        var cfg = Rebuild(F("cfg"), "([()[=");
        Assert.Equal(["(>(", "[>([", "(>([(", ")>([", "[>([["], cfg.Steps);
        Assert.Equal("]])", cfg.Answer);
    }

    private static TaskProblem Rebuild(ITaskFamily f, string prompt)
    {
        var p = f.FromPrompt(prompt);
        Assert.Equal(prompt, p.Prompt);
        return p;
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Answer_verifies_and_wrong_answers_do_not(string name)
    {
        var f = F(name);
        for (long seed = 0; seed < 50; seed++)
        {
            var p = f.Generate(seed, f.Difficulty.Default);
            Assert.True(f.Verify(p, p.Answer));
            Assert.True(f.Verify(p, "  " + p.Answer + "\n"));
            Assert.False(f.Verify(p, p.Answer + "0"));
            Assert.False(f.Verify(p, ""));
            Assert.False(f.Verify(p, null!));
            var cf = f.Edit(p, EditKind.Counterfactual, seed);
            Assert.False(f.Verify(p, cf.Edited.Answer));
        }
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Counterfactual_edits_change_the_answer_and_nuisance_edits_do_not(string name)
    {
        var f = F(name);
        int nuisanceSupported = 0;
        for (long seed = 0; seed < 300; seed++)
        {
            int d = f.Difficulty.Min + (int)(seed % Math.Min(6, f.Difficulty.Max - f.Difficulty.Min + 1));
            var p = f.Generate(seed, d);
            var cf = f.Edit(p, EditKind.Counterfactual, seed);
            Assert.True(cf.Supported, cf.Description);
            Assert.True(cf.AnswerMustChange);
            Assert.NotEqual(p.Answer, cf.Edited.Answer);
            Assert.NotEqual(p.Prompt, cf.Edited.Prompt);
            AssertSelfConsistent(f, cf.Edited);

            var nu = f.Edit(p, EditKind.Nuisance, seed);
            Assert.False(nu.AnswerMustChange);
            if (nu.Supported)
            {
                nuisanceSupported++;
                Assert.Equal(p.Answer, nu.Edited.Answer);
                Assert.NotEqual(p.Prompt, nu.Edited.Prompt);
                AssertSelfConsistent(f, nu.Edited);
            }
            else Assert.Same(p, nu.Edited);

            var para = f.Edit(p, EditKind.Paraphrase, seed);
            if (para.Supported)
            {
                Assert.Equal(p.Answer, para.Edited.Answer);
                Assert.NotEqual(p.Prompt, para.Edited.Prompt);
                Assert.Equal(f.CanonicalKey(p), f.CanonicalKey(para.Edited));
            }
        }
        Assert.True(nuisanceSupported > 200, $"{name}: nuisance supported on only {nuisanceSupported}/300");
    }

    // An edited twin is a problem in its own right: its steps and answer are what the family computes from its prompt.
    private static void AssertSelfConsistent(ITaskFamily f, TaskProblem p)
    {
        Assert.Equal(p.Steps.Count, p.Intermediates.Count);
        if (f is CfgFamily { NoiseRate: > 0 }) return;   // a noisy prompt alone does not give the clean problem
        var again = f.FromPrompt(p.Prompt);
        Assert.Equal(p.Steps, again.Steps);
        Assert.Equal(p.Answer, again.Answer);
    }

    [Fact]
    public void Edits_are_deterministic_and_unsupported_edits_are_explicit()
    {
        var add = F("addition");
        var p = add.Generate(3, 4);
        Assert.Equal(add.Edit(p, EditKind.Counterfactual, 9).Edited.Prompt, add.Edit(p, EditKind.Counterfactual, 9).Edited.Prompt);
        var rename = add.Edit(p, EditKind.Rename, 0);
        Assert.False(rename.Supported);
        Assert.Same(p, rename.Edited);
        Assert.Contains("no variables", rename.Description);

        var extreme = Rebuild(add, "1000+1000=");
        var nu = add.Edit(extreme, EditKind.Nuisance, 0);
        Assert.False(nu.Supported);
        Assert.False(add.Edit(extreme, EditKind.Paraphrase, 0).Supported);
        var shifted = add.Edit(Rebuild(add, "1999+1999="), EditKind.Nuisance, 0);
        Assert.True(shifted.Supported, shifted.Description);
        Assert.Equal("3998", shifted.Edited.Answer);

        var tree = F("tree");
        var shallow = tree.Generate(1, 1);
        Assert.False(tree.Edit(shallow, EditKind.Nuisance, 0).Supported);
        Assert.False(tree.Edit(shallow, EditKind.Paraphrase, 0).Supported);
    }

    [Theory]
    [InlineData("reach")]
    [InlineData("tree")]
    [InlineData("dfa")]
    [InlineData("cfg")]
    public void Renames_relabel_consistently(string name)
    {
        var f = F(name);
        for (long seed = 0; seed < 100; seed++)
        {
            var p = f.Generate(seed, f.Difficulty.Default);
            var r = f.Edit(p, EditKind.Rename, seed);
            Assert.True(r.Supported, r.Description);
            Assert.False(r.AnswerMustChange);
            Assert.NotEqual(p.Prompt, r.Edited.Prompt);
            Assert.Equal(p.Steps.Count, r.Edited.Steps.Count);
            switch (name)
            {
                case "reach":
                case "tree":
                    Assert.Equal(p.Answer, r.Edited.Answer);
                    break;
                case "cfg":
                    Assert.Equal(p.Answer.Replace(')', 'x').Replace(']', ')').Replace('x', ']'), r.Edited.Answer);
                    break;
                case "dfa":
                    // The relabelling is a bijection of the cups applied to every state, so state equality patterns survive.
                    var s0 = p.Intermediates.Select(d => d["state"]).ToList();
                    var s1 = r.Edited.Intermediates.Select(d => d["state"]).ToList();
                    for (int i = 0; i < s0.Count; i++)
                        for (int j = 0; j < s0.Count; j++)
                            Assert.Equal(s0[i] == s0[j], s1[i] == s1[j]);
                    break;
            }
        }
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Every_character_lies_in_the_alphabet(string name)
    {
        var f = F(name);
        foreach (int d in new[] { f.Difficulty.Min, f.Difficulty.Default, f.Difficulty.Max })
            for (long seed = 0; seed < 30; seed++)
            {
                var p = f.Generate(seed, d);
                AssertInAlphabet(f, p);
                foreach (var kind in Enum.GetValues<EditKind>())
                    AssertInAlphabet(f, f.Edit(p, kind, seed).Edited);
            }
    }

    private static void AssertInAlphabet(ITaskFamily f, TaskProblem p)
    {
        foreach (var text in p.Steps.Append(p.Prompt).Append(p.Answer))
            foreach (char c in text)
                Assert.True(f.Alphabet.Contains(c), $"{f.Name}: '{c}' of '{text}' is not in the alphabet");
        Assert.All(p.Steps, s => Assert.DoesNotContain(';', s));
        Assert.DoesNotContain(';', p.Answer);
        Assert.All(f.Alphabet, c => Assert.True(c < 128 && (char.IsAsciiLetterLower(c) || !char.IsLetter(c))));
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Difficulty_increases_length(string name)
    {
        var f = F(name);
        double MeanLength(int d) => Enumerable.Range(0, 40)
            .Select(s => f.Generate(s, d)).Average(p => p.Prompt.Length + p.Steps.Sum(x => x.Length));
        int lo = f.Difficulty.Default, hi = Math.Min(f.Difficulty.Max, f.Difficulty.Default * 2);
        Assert.True(MeanLength(hi) > MeanLength(lo) * 1.3, $"{name}: {MeanLength(hi)} vs {MeanLength(lo)}");
        Assert.True(MeanLength(f.Difficulty.Min) < MeanLength(lo) || f.Difficulty.Min == lo);
        Assert.Throws<ArgumentOutOfRangeException>(() => f.Generate(0, f.Difficulty.Max + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => f.Generate(0, f.Difficulty.Min - 1));
    }

    [Fact]
    public void Addition_intermediates_recompute_the_answer()
    {
        var f = F("addition");
        for (long seed = 0; seed < 200; seed++)
        {
            var p = f.Generate(seed, 1 + (int)(seed % 12));
            var digits = new System.Text.StringBuilder();
            int carry = 0;
            foreach (var d in p.Intermediates)
            {
                Assert.Equal(carry, d["carry_in"]);
                Assert.Equal(d["a"] + d["b"] + d["carry_in"], d["sum"]);
                Assert.Equal(d["sum"], 10 * d["carry"] + d["digit"]);
                digits.Insert(0, d["digit"]);
                carry = d["carry"];
            }
            if (carry == 1) digits.Insert(0, '1');
            Assert.Equal(p.Answer, digits.ToString().TrimStart('0') is "" ? "0" : digits.ToString().TrimStart('0'));
        }
    }

    [Fact]
    public void Modchain_dfa_and_sort_intermediates_chain_to_the_answer()
    {
        for (long seed = 0; seed < 100; seed++)
        {
            var m = F("modchain").Generate(seed, 6);
            for (int i = 1; i < m.Intermediates.Count; i++) Assert.Equal(m.Intermediates[i - 1]["acc"], m.Intermediates[i]["acc_in"]);
            Assert.All(m.Intermediates, d => Assert.Equal(d["acc"], d["op"] switch
            {
                0 => (d["acc_in"] + d["operand"]) % d["modulus"],
                1 => ((d["acc_in"] - d["operand"]) % d["modulus"] + d["modulus"]) % d["modulus"],
                _ => d["acc_in"] * d["operand"] % d["modulus"],
            }));
            Assert.Equal(m.Answer, m.Intermediates[^1]["acc"].ToString());

            var dfa = F("dfa").Generate(seed, 10);
            for (int i = 0; i < dfa.Intermediates.Count; i++)
            {
                var d = dfa.Intermediates[i];
                if (i > 0) Assert.Equal(dfa.Intermediates[i - 1]["state"], d["state_in"]);
                Assert.Equal(DfaFamily.Step(d["state_in"], (char)('a' + d["symbol"])), d["state"]);
            }
            Assert.Equal(dfa.Answer, dfa.Intermediates[^1]["state"].ToString());

            var sort = F("sort").Generate(seed, 8);
            var mins = sort.Intermediates.Select(d => d["min"]).ToList();
            Assert.Equal(sort.Answer, string.Join(',', mins));
            Assert.Equal(mins.Order(), mins);
            Assert.Equal(0, sort.Intermediates[^1]["remaining_mask"]);
        }
    }

    [Fact]
    public void Reach_frontiers_match_steps_and_bfs()
    {
        var f = F("reach");
        int yes = 0;
        for (long seed = 0; seed < 200; seed++)
        {
            var p = f.Generate(seed, 8);
            int visited = 0;
            for (int i = 0; i < p.Steps.Count; i++)
            {
                var d = p.Intermediates[i];
                string nodes = p.Steps[i].Split(':')[1];
                int mask = nodes == "-" ? 0 : nodes.Aggregate(0, (a, c) => a | 1 << (c - 'a'));
                Assert.Equal(mask, d["frontier"]);
                Assert.Equal(i, d["depth"]);
                Assert.Equal(0, visited & mask);
                visited |= mask;
                Assert.Equal(visited, d["visited"]);
                Assert.Equal(System.Numerics.BitOperations.PopCount((uint)mask), d["size"]);
            }
            char target = p.Prompt[^2];
            bool found = (p.Intermediates[^1]["frontier"] & 1 << (target - 'a')) != 0;
            Assert.Equal(found ? "yes" : "no", p.Answer);
            Assert.Equal(found ? 1 : 0, p.Intermediates[^1]["found"]);
            if (found) yes++;
        }
        Assert.InRange(yes, 60, 140);   // roughly balanced answers
    }

    [Fact]
    public void Tree_steps_follow_the_prompt_and_answer_routes_to_the_target()
    {
        var f = F("tree");
        for (long seed = 0; seed < 100; seed++)
        {
            var p = f.Generate(seed, 4);
            Assert.Equal(4, p.Answer.Length);
            // Walk down from the root with the answer's directions, reading children from the prompt.
            var entries = System.Text.RegularExpressions.Regex.Matches(p.Prompt, @"(\d+)\((\d+),(\d+)\)")
                .ToDictionary(m => int.Parse(m.Groups[1].Value), m => (L: int.Parse(m.Groups[2].Value), R: int.Parse(m.Groups[3].Value)));
            var tail = p.Prompt.Split(';')[1].TrimEnd('=').Split('>');
            int node = int.Parse(tail[0]);
            foreach (char dir in p.Answer) node = dir == 'l' ? entries[node].L : entries[node].R;
            Assert.Equal(int.Parse(tail[1]), node);
            Assert.Equal(int.Parse(tail[1]), p.Intermediates[0]["node"]);
            Assert.Equal(0, p.Intermediates[^1]["depth"]);
        }
    }

    [Fact]
    public void Tree_with_char_labels_writes_one_token_per_node_and_routes_like_the_digit_tree()
    {
        var f = TaskRegistry.Get("tree:labels=char");
        Assert.Equal("tree:labels=char", f.Name);
        Assert.Equal(4, f.Difficulty.Max);
        var given = Rebuild(f, "k(3,z),3(a,b),z(c,d);k>b=");
        Assert.Equal(["b<3:r", "3<k:l"], given.Steps);
        Assert.Equal("lr", given.Answer);
        Assert.Throws<FormatException>(() => Rebuild(f, "45(13,29),12(45,17),17(88,61);12>29="));
        Assert.Throws<FormatException>(() => Rebuild(F("tree"), "k(3,z),3(a,b),z(c,d);k>b="));
        for (long seed = 0; seed < 100; seed++)
        {
            var p = f.Generate(seed, 4);
            Assert.All(p.Prompt, c => Assert.Contains(c, f.Alphabet));
            var entries = System.Text.RegularExpressions.Regex.Matches(p.Prompt, @"(\w)\((\w),(\w)\)")
                .ToDictionary(m => m.Groups[1].Value[0], m => (L: m.Groups[2].Value[0], R: m.Groups[3].Value[0]));
            Assert.Equal(15, entries.Count); // depth 4: 15 internal nodes, 31 distinct one-character labels
            var tail = p.Prompt.Split(';')[1].TrimEnd('=').Split('>');
            char node = tail[0].Single();
            foreach (char dir in p.Answer) node = dir == 'l' ? entries[node].L : entries[node].R;
            Assert.Equal(tail[1].Single(), node);
            Assert.True(f.Verify(p, p.Answer));
            var renamed = f.Edit(p, EditKind.Rename, seed);
            Assert.Equal(p.Answer, renamed.Edited.Answer);
        }
        Assert.ThrowsAny<ArgumentException>(() => f.Generate(0, 5));
    }

    [Fact]
    public void Tree_as_edges_reads_the_same_tree_and_refuses_a_broken_edge_list()
    {
        var f = TaskRegistry.Get("tree:edges");
        Assert.Equal("tree:edges", f.Name);
        var given = Rebuild(f, "3<k:l,z<k:r,a<3:l,b<3:r,c<z:l,d<z:r;k>b=");
        Assert.Equal(["b<3:r", "3<k:l"], given.Steps);
        Assert.Equal("lr", given.Answer);
        Assert.Throws<FormatException>(() => Rebuild(f, "3<k:l,z<k:l,a<3:l,b<3:r;k>b="));   // two left children
        Assert.Throws<FormatException>(() => Rebuild(f, "k(3,z),3(a,b),z(c,d);k>b="));        // the nested form
        var nested = TaskRegistry.Get("tree:labels=char");
        foreach (var (seed, p) in RoundTripped(f, 3))
            Assert.Equal(p.Answer, nested.Generate(seed, 3).Answer);   // same tree, other rendering
    }

    /// <summary>Problems of seeds 0–19 at <paramref name="difficulty"/>, each verified and read back from its prompt to the same steps.</summary>
    private static IEnumerable<(long Seed, TaskProblem Problem)> RoundTripped(ITaskFamily f, int difficulty)
    {
        for (long seed = 0; seed < 20; seed++)
        {
            var p = f.Generate(seed, difficulty);
            Assert.True(f.Verify(p, p.Answer));
            Assert.Equal(p.Steps, f.FromPrompt(p.Prompt).Steps);
            yield return (seed, p);
        }
    }

    [Fact]
    public void Tree_as_hops_names_parent_and_side_in_one_token_and_is_the_same_tree()
    {
        var f = TaskRegistry.Get("tree:hops");
        Assert.Equal("tree:hops", f.Name);
        // k's children: g (left, hop K) and z (right, hop λ); g's: a (left), b (right); z's: c, d.
        var given = Rebuild(f, "gK,zλ,aG,bη,cZ,dω;k>b=");
        Assert.Equal(["bη", "gK"], given.Steps);
        Assert.Equal("lr", given.Answer);
        Assert.Throws<FormatException>(() => Rebuild(f, "gK,zK,aG,bη;k>b="));     // two left children
        Assert.Throws<FormatException>(() => Rebuild(f, "gL,zλ,aG,bη,cZ,dω;k>b="));   // L is no hop token (l is no label)
        Assert.Throws<FormatException>(() => Rebuild(f, "g<k:l,z<k:r;k>g="));        // the edge-list form
        Assert.ThrowsAny<ArgumentException>(() => f.Generate(0, 4));                 // 31 nodes, 24 labels
        foreach (var (seed, p) in RoundTripped(f, 3))
        {
            Assert.All(p.Prompt, c => Assert.Contains(c, f.Alphabet));
            Assert.All(p.Steps, s => Assert.Equal(2, s.Length));
            Assert.Equal(p.Answer, f.Edit(p, EditKind.Rename, seed).Edited.Answer);
            var reordered = f.Edit(p, EditKind.Paraphrase, seed).Edited;
            Assert.Equal(p.Answer, reordered.Answer);
            Assert.Equal(f.CanonicalKey(p), f.CanonicalKey(reordered));
            Assert.Equal(p.Prompt, f.FromPrompt(p.Prompt).Prompt);   // the edge order survives a parse
        }
        // Single edges are shuffled, so siblings are not always side by side (with paired edges they always would be).
        int apart = Enumerable.Range(0, 50).Count(seed => f.Generate(seed, 2).Prompt.Split(';')[0].Split(',')
            .Select((e, i) => (Hop: e[1], i)).GroupBy(x => TreeFamily.HopLeft.Contains(x.Hop) ? TreeFamily.HopLeft.IndexOf(x.Hop) : TreeFamily.HopRight.IndexOf(x.Hop))
            .Any(g => Math.Abs(g.First().i - g.Last().i) != 1));
        Assert.InRange(apart, 25, 50);
    }

    [Fact]
    public void Cfg_stack_intermediates_match_steps_and_noise_keeps_the_clean_answer()
    {
        var clean = new CfgFamily();
        var noisy = new CfgFamily(0.3);
        Assert.Equal("cfg:noise=0.3", noisy.Name);
        Assert.Same(typeof(CfgFamily), TaskRegistry.Get("cfg:noise=0.3").GetType());
        int noised = 0, total = 0;
        for (long seed = 0; seed < 200; seed++)
        {
            var c = clean.Generate(seed, 16);
            var n = noisy.Generate(seed, 16);
            Assert.Equal(c.Steps, n.Steps);
            Assert.Equal(c.Answer, n.Answer);
            Assert.Equal(clean.CanonicalKey(c), noisy.CanonicalKey(n));
            for (int i = 0; i < c.Steps.Count; i++)
            {
                var d = c.Intermediates[i];
                string stack = c.Steps[i][2..];
                Assert.Equal(stack == "-" ? 0 : stack.Length, d["depth"]);
                Assert.Equal(0, d["noised"]);
                int mask = 0;
                for (int k = 0; k < d["depth"]; k++) if (stack[k] == '[') mask |= 1 << k;
                Assert.Equal(mask, d["stack"]);
                var dn = n.Intermediates[i];
                Assert.Equal(dn["noised"] == 1, n.Prompt[i] != c.Prompt[i]);
                Assert.Equal("()[]"[dn["observed"]], n.Prompt[i]);
                noised += dn["noised"];
                total++;
            }
            var cf = noisy.Edit(n, EditKind.Counterfactual, seed);
            Assert.NotEqual(n.Answer, cf.Edited.Answer);
            Assert.Equal(clean.Edit(c, EditKind.Counterfactual, seed).Edited.Answer, cf.Edited.Answer);
        }
        Assert.InRange(noised / (double)total, 0.25, 0.35);
        Assert.Throws<ArgumentException>(() => TaskRegistry.Get("cfg:noise=2"));
    }


    /// <summary>The sampler's probability of a clean prefix, walked token by token: an independent reading of its rules.</summary>
    private static double SamplerProbability(string clean)
    {
        var stack = new List<char>();
        double p = 1;
        for (int i = 0; i < clean.Length; i++)
        {
            bool canClose = stack.Count > 0 && !(i == clean.Length - 1 && stack.Count == 1);
            char c = clean[i];
            if (c is ')' or ']')
            {
                if (!canClose || stack[^1] != (c == ')' ? '(' : '[')) return 0;
                p *= 0.45;
                stack.RemoveAt(stack.Count - 1);
            }
            else
            {
                p *= canClose ? 0.275 : 0.5;
                stack.Add(c);
            }
        }
        return p;
    }

    [Fact]
    public void Cfg_completion_posterior_is_the_brute_force_posterior_and_its_argmax_beats_reading_the_noise_literally()
    {
        // Brute force over all 4^6 clean prefixes: prior (the sampler's rules) × noise likelihood, grouped by completion.
        const double r = 0.2;
        var noisy = new CfgFamily(r);
        foreach (var observed in new[] { "([)]([", "((((((", "][][][", "([([)]" })
        {
            var brute = new Dictionary<string, double>();
            for (int code = 0; code < 4096; code++)
            {
                var clean = new string(Enumerable.Range(0, 6).Select(i => "()[]"[(code >> (2 * i)) & 3]).ToArray());
                double prior = SamplerProbability(clean);
                if (prior == 0) continue;
                double lik = Enumerable.Range(0, 6).Aggregate(1.0, (a, i) => a * (clean[i] == observed[i] ? 1 - r : r / 3));
                var open = new List<char>();
                foreach (char c in clean) if (c is '(' or '[') open.Add(c); else open.RemoveAt(open.Count - 1);
                string completion = new(open.AsEnumerable().Reverse().Select(c => c == '(' ? ')' : ']').ToArray());
                brute[completion] = brute.GetValueOrDefault(completion) + prior * lik;
            }
            double z = brute.Values.Sum();
            var posterior = noisy.CompletionPosterior(observed + "=");
            Assert.Equal(brute.Count, posterior.Count);
            foreach (var (completion, p) in brute) Assert.Equal(p / z, posterior[completion], 12);
            Assert.Equal(brute.MaxBy(kv => kv.Value).Key, noisy.MostLikelyCompletion(observed + "="));
        }

        // The brute force's prior is a reading of the sampler's rules: the sampler itself must agree with it.
        var counts = new Dictionary<string, int>();
        var plain = new CfgFamily();
        const int draws = 20000;
        for (long seed = 0; seed < draws; seed++)
        {
            var clean = plain.Generate(seed, 6).Prompt.TrimEnd('=');
            counts[clean] = counts.GetValueOrDefault(clean) + 1;
        }
        foreach (var (clean, c) in counts)
        {
            double p = SamplerProbability(clean), sd = Math.Sqrt(p * (1 - p) / draws);
            Assert.True(p > 0, $"the sampler drew '{clean}', which the prior calls impossible");
            Assert.InRange(c / (double)draws, p - 5 * sd - 1e-9, p + 5 * sd + 1e-9);
        }
        Assert.Throws<ArgumentException>(() => noisy.CompletionPosterior(new string('(', CfgFamily.MaxPosteriorLength + 1) + "="));

        // Noise-free, the posterior is a point mass on the answer; under noise its argmax is a real denoiser: on the same
        // problems it beats completing the noisy prefix as if it were clean.
        var clean0 = new CfgFamily();
        for (long seed = 0; seed < 100; seed++)
        {
            var p = clean0.Generate(seed, 10);
            Assert.Equal(p.Answer, clean0.MostLikelyCompletion(p.Prompt));
            Assert.Equal(1.0, clean0.CompletionPosterior(p.Prompt)[p.Answer], 12);
        }
        int bayes = 0, literal = 0;
        for (long seed = 0; seed < 400; seed++)
        {
            var p = noisy.Generate(seed, 10);
            bayes += noisy.MostLikelyCompletion(p.Prompt) == p.Answer ? 1 : 0;
            try { literal += clean0.MostLikelyCompletion(p.Prompt) == p.Answer ? 1 : 0; }
            catch (FormatException) { }   // the noisy prefix is no Dyck prefix at all: the literal reading has no answer
        }
        Assert.True(bayes > literal + 40, $"Bayes-optimal {bayes}/400 vs literal {literal}/400");
        Assert.InRange(bayes / 400.0, 0.30, 0.55);   // measured 0.386 at r = 0.2 on 4,000 draws: far from perfect, far from chance
        Assert.Throws<FormatException>(() => noisy.CompletionPosterior("(a="));
    }
    [Fact]
    public void Registry_lists_the_families_and_names_them_on_error()
    {
        Assert.Equal(["addition", "modchain", "dfa", "reach", "sort", "tree", "cfg"], TaskRegistry.Names);
        Assert.Equal("tree", TaskRegistry.Get("Tree").Name);
        var ex = Assert.Throws<ArgumentException>(() => TaskRegistry.Get("nosuch"));
        Assert.Contains("nosuch", ex.Message);
        Assert.Contains("addition, modchain, dfa, reach, sort, tree, cfg", ex.Message);
        Assert.Throws<ArgumentException>(() => F("addition").Edit(F("dfa").Generate(0, 4), EditKind.Nuisance, 0));
        var fx = Assert.Throws<FormatException>(() => F("addition").Edit(new TaskProblem("addition", 0, 4, "12*3=", [], "", []), EditKind.Nuisance, 0));
        Assert.Contains("12*3=", fx.Message);
    }

    [Fact]
    public void Formatter_writes_parseable_jsonl_and_readable_text()
    {
        var f = F("addition");
        var p = f.Generate(5, 4);
        string line = TaskSampleFormatter.ToJsonl(p);
        Assert.DoesNotContain('\n', line);
        using var doc = JsonDocument.Parse(line);
        var root = doc.RootElement;
        Assert.Equal(p.Prompt, root.GetProperty("prompt").GetString());
        Assert.Equal(p.Answer, root.GetProperty("answer").GetString());
        Assert.Equal(p.Steps.Count, root.GetProperty("steps").GetArrayLength());
        Assert.Equal(p.Intermediates[0]["carry"], root.GetProperty("intermediates")[0].GetProperty("carry").GetInt32());
        Assert.Contains("+", line);   // relaxed escaping keeps the prompt readable

        var edit = f.Edit(p, EditKind.Counterfactual, 1);
        using var e = JsonDocument.Parse(TaskSampleFormatter.ToJsonl(edit));
        Assert.Equal("counterfactual", e.RootElement.GetProperty("kind").GetString());
        Assert.Equal(edit.Edited.Answer, e.RootElement.GetProperty("edited").GetProperty("answer").GetString());
        Assert.Equal(p.Answer, e.RootElement.GetProperty("original_answer").GetString());
        Assert.Contains(edit.Edited.Prompt, TaskSampleFormatter.ToText(edit));
        Assert.Contains("answer: " + p.Answer, TaskSampleFormatter.ToText(p));
    }
}
