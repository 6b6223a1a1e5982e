using LatentLab.IO;
using LatentLab.Latents;
using LatentLab.Teacher;
using LatentLab.Text;
using static LatentLab.Tests.LatentTestKit;
using static TorchSharp.torch;

namespace LatentLab.Tests;

public sealed class LatentStoreTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-latent-store").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string Dir(string name) => Path.Combine(_dir, name);

    [Fact]
    public void StoreRoundTripsSamplesAndStates()
    {
        var (model, fmt) = RandomTeacher();
        using var _ = model;
        var problems = Problems(10);
        var o = Reference(k: 2) with { RowsPerFile = 4, DType = "bf16", Source = new TaskSource("addition", 2, "train", 1, 10) };
        var m = LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o, Dir("a"));
        Assert.Equal(3, m.Files.Count);
        Assert.Equal(10, m.Rows);
        Assert.Equal("blocks.1.resid_post", m.Settings.Point);
        Assert.Equal(model.Config.Hash(), m.Settings.ModelHash);
        Assert.Equal(fmt.Tokenizer.Hash, m.Settings.TokenizerHash);
        Assert.Equal("bf16", m.Settings.DType);
        Assert.Equal(2, m.Settings.K);
        Assert.Equal(new TaskSource("addition", 2, "train", 1, 10), m.Settings.Source);
        Assert.Contains("\"dtype\": \"bf16\"", File.ReadAllText(Path.Combine(Dir("a"), "manifest.json")));
        Assert.Empty(Directory.GetFiles(Dir("a"), "latents-*.jsonl"));

        var store = LatentStore.Open(Dir("a"), model, fmt.Tokenizer);
        using var set = LatentExtraction.Samples(model, fmt.Tokenizer, fmt, problems, o);
        var all = store.Samples(verifiedOnly: false);
        Assert.Equal(set.Samples.Count, all.Count);
        for (int i = 0; i < all.Count; i++)
        {
            var (a, b) = (set.Samples[i], all[i]);
            Assert.Equal(a.Index, b.Index);
            Assert.Equal(a.TraceIds, b.TraceIds);
            Assert.Equal((a.PrePosition, a.PostPosition, a.FirstAnswerPosition, a.TeacherAnswer, a.Verified),
                (b.PrePosition, b.PostPosition, b.FirstAnswerPosition, b.TeacherAnswer, b.Verified));
            Assert.Equal(a.Problem.Prompt, b.Problem.Prompt);
            Assert.Equal(a.Problem.Steps, b.Problem.Steps);
            Assert.Equal(a.Problem.Intermediates.Select(d => d.OrderBy(kv => kv.Key).ToList()), b.Problem.Intermediates.Select(d => d.OrderBy(kv => kv.Key).ToList()));
        }
        using var pre = store.Pre(verifiedOnly: false);
        using var post = store.Post(verifiedOnly: false);
        Assert.Equal(ScalarType.BFloat16, pre.dtype);
        AssertSame(set.Pre, pre);
        AssertSame(set.Post, post);

        // Verified-only views select the same rows from samples and tensors.
        var verified = store.Samples();
        using var vpre = store.Pre();
        Assert.Equal(verified.Count, (int)vpre.shape[0]);
        Assert.Equal(all.Count(s => s.Verified), verified.Count);
        using var loaded = store.Load(verifiedOnly: false, dtype: ScalarType.Float32);
        Assert.Equal(ScalarType.Float32, loaded.Post.dtype);
    }

    [Fact]
    public void KilledRunResumesKeepingFinishedFiles()
    {
        var (model, fmt) = RandomTeacher();
        using var _ = model;
        var problems = Problems(12);
        var o = Reference() with { RowsPerFile = 4 };
        using var cancel = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() => LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o, Dir("r"),
            p => { if (p.Stage == "written") cancel.Cancel(); }, cancel.Token));
        var first = Path.Combine(Dir("r"), "latents-0000000-0000004.safetensors");
        Assert.True(File.Exists(first));
        Assert.False(File.Exists(Path.Combine(Dir("r"), "latents-0000004-0000008.safetensors")));
        var e = Assert.Throws<InvalidDataException>(() => LatentStore.Open(Dir("r")));
        Assert.Contains("not finished", e.Message);
        // A torn file from some other crash is redone, not trusted.
        File.WriteAllText(Path.Combine(Dir("r"), "latents-0000008-0000012.safetensors"), "garbage");
        File.WriteAllText(Path.Combine(Dir("r"), "latents-0000008-0000012.jsonl"), "garbage");
        var stamp = File.GetLastWriteTimeUtc(first);

        var stages = new List<string>();
        var m = LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o, Dir("r"), p => stages.Add(p.Stage));
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(first));
        Assert.Equal(12, m.Rows);
        LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o, Dir("whole"));
        using var resumed = LatentStore.Open(Dir("r")).Load(verifiedOnly: false);
        using var whole = LatentStore.Open(Dir("whole")).Load(verifiedOnly: false);
        AssertSame(whole.Pre, resumed.Pre);
        AssertSame(whole.Post, resumed.Post);
        Assert.Equal(whole.Samples.Select(s => s.TraceIds), resumed.Samples.Select(s => s.TraceIds));

        // Running a finished job again does nothing; other settings in the same folder are refused.
        stages.Clear();
        LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o, Dir("r"), p => stages.Add(p.Stage));
        Assert.Equal(["already complete"], stages);
        var diff = Assert.Throws<InvalidDataException>(() => LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o with { K = 2 }, Dir("r")));
        Assert.Contains("k: 1 vs 2", diff.Message);
    }

    /// <summary>
    /// A flipped bit in a shard (or in its rows of samples.jsonl) is caught when the store is opened, named with its
    /// problem and row range, and running the extraction again redoes that file alone, back to the original bytes.
    /// </summary>
    [Fact]
    public void DamagedShardIsNamedAndReExtractedAlone()
    {
        var (model, fmt) = RandomTeacher();
        using var _ = model;
        var problems = Problems(12);
        var o = Reference() with { RowsPerFile = 4 };
        var dir = Dir("d");
        var m = LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o, dir);
        Assert.True(m.Checksummed);
        Assert.Equal(Integrity.Intact, LatentStore.Open(dir).Integrity);
        var names = m.Files.Select(f => Path.Combine(dir, f.Name)).ToArray();
        var good = File.ReadAllBytes(names[1]);
        var stamps = names.Select(File.GetLastWriteTimeUtc).ToArray();

        DamageKit.FlipBit(names[1], -3);
        var e = Assert.Throws<InvalidDataException>(() => LatentStore.Open(dir));
        int firstRow = m.Files[0].Rows;
        Assert.Contains($"latents-0000004-0000008.safetensors (problems 4–7, store rows {firstRow}–{firstRow + m.Files[1].Rows - 1}) is damaged", e.Message);

        var notes = new List<string>();
        LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o, dir, p => { if (p.Note is not null) notes.Add(p.Note); });
        Assert.Single(notes);
        Assert.Contains("latents-0000004-0000008.safetensors", notes[0]);
        Assert.Equal(good, File.ReadAllBytes(names[1]));
        Assert.Equal(stamps[0], File.GetLastWriteTimeUtc(names[0]));
        Assert.Equal(stamps[2], File.GetLastWriteTimeUtc(names[2]));
        Assert.Empty(Directory.GetFiles(dir, "latents-*.jsonl"));
        using (var back = LatentStore.Open(dir).Load(verifiedOnly: false))
            Assert.Equal(12, back.Samples.Count + m.Skipped.Count);

        // Damage to one file's rows in samples.jsonl points at that file too, and is repaired the same way.
        var samples = Path.Combine(dir, LatentStore.SamplesFile);
        var before = File.ReadAllBytes(samples);
        int lastLine = Array.LastIndexOf(before, (byte)'\n', before.Length - 2) + 1;
        DamageKit.FlipBit(samples, Array.FindIndex(before, lastLine, b => b is >= (byte)'2' and <= (byte)'9'));
        Assert.Contains("latents-0000008-0000012.safetensors", Assert.Throws<InvalidDataException>(() => LatentStore.Open(dir)).Message);
        LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o, dir);
        Assert.Equal(before, File.ReadAllBytes(samples));
        Assert.Equal(stamps[0], File.GetLastWriteTimeUtc(names[0]));

        // A store written before checksums opens as before, marked unverified.
        var manifest = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, LatentManifest.FileName)))!.AsObject();
        manifest.Remove("self_checksum");
        foreach (var f in manifest["files"]!.AsArray()) { f!.AsObject().Remove("checksum"); f.AsObject().Remove("samples_checksum"); }
        File.WriteAllText(Path.Combine(dir, LatentManifest.FileName), manifest.ToJsonString());
        Assert.Equal(Integrity.Unverified, LatentStore.Open(dir).Integrity);
    }

    [Fact]
    public void ShardsMergeIntoTheWholeStore()
    {
        var (model, fmt) = RandomTeacher();
        using var _ = model;
        var problems = Problems(9);
        var o = Reference() with { RowsPerFile = 2 };
        LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o, Dir("whole"));
        LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o with { Shard = ShardSpec.Parse("1/2") }, Dir("s1"));
        LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o with { Shard = ShardSpec.Parse("0/2") }, Dir("s0"));
        Assert.Equal(4, LatentStore.Open(Dir("s0")).Count);
        Assert.Equal(5, LatentStore.Open(Dir("s1")).Count);

        var m = LatentStore.Merge(Dir("merged"), [Dir("s1"), Dir("s0")]);
        Assert.Equal(["1/2", "0/2"], m.Shards);
        using var merged = LatentStore.Open(Dir("merged"), model, fmt.Tokenizer).Load(verifiedOnly: false);
        using var whole = LatentStore.Open(Dir("whole")).Load(verifiedOnly: false);
        Assert.Equal(Enumerable.Range(0, 9), merged.Samples.Select(s => s.Index));
        AssertSame(whole.Pre, merged.Pre);
        AssertSame(whole.Post, merged.Post);

        Assert.Throws<InvalidDataException>(() => LatentStore.Merge(Dir("twice"), [Dir("s0"), Dir("s0")]));
        Assert.Throws<ArgumentException>(() => LatentStore.Merge(Dir("merged"), [Dir("s0")]));
        LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o with { K = 2, Shard = ShardSpec.Parse("1/2") }, Dir("k2"));
        var e = Assert.Throws<InvalidDataException>(() => LatentStore.Merge(Dir("mixed"), [Dir("s0"), Dir("k2")]));
        Assert.Contains("other settings", e.Message);
        Assert.Throws<ArgumentException>(() => ShardSpec.Parse("2/2"));
    }

    [Fact]
    public void MismatchedModelOrTokenizerIsAnError()
    {
        var (model, fmt) = RandomTeacher(seed: 0);
        using var _ = model;
        LatentExtraction.Run(model, fmt.Tokenizer, fmt, Problems(3), Reference(), Dir("m"));
        LatentStore.Open(Dir("m"), model, fmt.Tokenizer);

        var (other, _) = RandomTeacher(seed: 1);
        using (other)
            Assert.Contains("other weights", Assert.Throws<InvalidDataException>(() => LatentStore.Open(Dir("m"), other)).Message);
        var (wider, _) = RandomTeacher(hidden: 48);
        using (wider)
            Assert.Contains("hidden size is 48", Assert.Throws<InvalidDataException>(() => LatentStore.Open(Dir("m"), wider)).Message);
        var deeper = new Models.DecoderLM(TeacherModel.DefaultConfig(fmt.Tokenizer, 32, layers: 3, heads: 2));
        using (deeper)
            Assert.Contains("config hash", Assert.Throws<InvalidDataException>(() => LatentStore.Open(Dir("m"), deeper)).Message);
        var otherTok = CharTokenizer.Create("0123456789+=;xyz");
        Assert.Contains("tokenizer", Assert.Throws<InvalidDataException>(() => LatentStore.Open(Dir("m"), tok: otherTok)).Message);
    }
}
