using LatentLab.Generation;
using LatentLab.Hooks;
using LatentLab.Latents;
using LatentLab.Methods.Shortcut;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Text;
using static TorchSharp.torch;

namespace LatentLab.Tests;

/// <summary>
/// The shortcut's injection arms where the end-of-thinking marker is several tokens: a tiny random Gemma 3 folder with
/// the real Gemma 3 tokenizer, which has no &lt;/think&gt; token ("&lt;/", "think", "&gt;" in a trace).
/// </summary>
[Collection(RealTokenizerCollection.Name)]
public sealed class ShortcutMultiTokenMarkerTests(RealTokenizers tokenizers) : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-gemma-arms").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    const string Point = "blocks.0.resid_post";

    [Fact]
    public void InjectionArmsSpliceEveryMarkerTokenAndActAtItsLast()
    {
        var modelDir = TinyCheckpoint.Gemma3(Path.Combine(_dir, "gemma3-tiny"), tokenizers.Gemma3, seed: 11);
        var family = TaskRegistry.Get("addition");
        var fmt = TraceFormat.ForModel(modelDir, family);
        Assert.Equal(ChatFamily.Gemma, fmt.Chat.Family);
        using var model = Checkpoints.Load(modelDir);
        var tok = fmt.Tokenizer;
        var trainP = TaskSplits.Generate(family, Split.Train, 6, 2, 1);
        var testP = TaskSplits.Generate(family, Split.Test, 4, 2, 2);

        // The marker as the traces tokenise it: several tokens, the last one where extraction reads h_post.
        var marker = ArmsCommon.ThinkEndIds(fmt, testP);
        Assert.True(marker.Length > 1, $"Gemma's marker should be several tokens, got [{string.Join(", ", marker)}]");
        Assert.Equal(fmt.Chat.ThinkEnd, tok.Decode(marker));
        using var tr = LatentExtraction.Samples(model, tok, fmt, trainP, LatentTestKit.Reference(point: Point));
        using var te = LatentExtraction.Samples(model, tok, fmt, testP, LatentTestKit.Reference(point: Point));
        Assert.Equal(testP.Count, te.Samples.Count);
        foreach (var s in te.Samples)
        {
            Assert.Equal(marker, s.TraceIds[(s.PostPosition - marker.Length + 1)..(s.PostPosition + 1)]);
            Assert.Equal([.. s.PromptIds, .. marker], ArmsCommon.ShortcutPrompt(fmt, s.Problem));
        }

        // One length batch, so the direct runs below see the arms' batch row for row.
        var prompts = testP.Select(p => ArmsCommon.ShortcutPrompt(fmt, p)).ToList();
        int len = prompts[0].Length, n = testP.Count, d = (int)model.Config.HiddenSize;
        Assert.All(prompts, x => Assert.Equal(len, x.Length));
        int eos = tok.EosId!.Value, maxNew = ArmsCommon.MaxAnswerTokens(fmt, testP);
        var gen = new TextGenerator(model);
        var cfg = new GenerationConfig(MaxNewTokens: maxNew, StopTokens: new[] { eos });
        (string?[] Answers, int[] Sampled) Direct(HookSet? hooks)
        {
            using var r = gen.Generate(prompts, cfg, hooks: hooks, hookPhases: HookPhases.Prefill);
            return (r.Tokens.Select(t => fmt.ParseAnswer(t, false)).ToArray(), r.Sampled.ToArray());
        }

        // Residual delta with the marker's own last-token state: h + α(h − h) = h, so the plain shortcut prompt's answers.
        var plain = Direct(null);
        using var idsT = tensor(prompts.SelectMany(x => x.Select(v => (long)v)).ToArray()).view(n, len);
        using var probe = model.Forward(idsT, hooks: new HookSet(new[] { HookSpec.Capture(Point, Positions.At(len - 1)) }), logits: LogitsMode.None);
        using var hOwn = probe.Capture(Point).to(ScalarType.Float32); // [N, 1, D]
        var same = ResidualDeltaInjection.Answer(model, fmt, Point, testP, hOwn, new[] { 0.5, 2.0 });
        foreach (var a in same)
        {
            Assert.Equal(plain.Answers, a.Answers);
            Assert.Equal(plain.Sampled.Select(s => (double)(len + s)), a.TokenSteps); // every marker token counted
        }

        // A large foreign state at α = 1 is a replacement at the marker's last token, and not at its first.
        manual_seed(4);
        using var foreign = randn(n, 1, d) * 50;
        var moved = ResidualDeltaInjection.Answer(model, fmt, Point, testP, foreign, new[] { 1.0 })[0];
        Assert.NotEqual(plain.Answers, moved.Answers);
        using var value = foreign.squeeze(1);
        var atLast = Direct(new HookSet(new[] { HookSpec.Replace(Point, value, Positions.At(len - 1)) }));
        var atFirst = Direct(new HookSet(new[] { HookSpec.Replace(Point, value, Positions.At(len - marker.Length)) }));
        Assert.Equal(atLast.Answers, moved.Answers);
        Assert.Equal(atLast.Sampled.Select(s => (double)(len + s)), moved.TokenSteps);
        Assert.NotEqual(atFirst.Answers, moved.Answers);

        var train = tr.Samples.Select(s => s with { TeacherAnswer = s.Problem.Answer, Verified = true }).ToList();
        var budget = new ArmTraining(Steps: 2, BatchSize: 4, Seed: 1);

        // Soft tokens: trained on prompt ++ K soft tokens ++ the whole marker, and must answer as that sequence of
        // embeddings does, counting every marker token.
        using var proj = SoftTokenInjection.Train(model, fmt, train, tr.Post, budget, Path.Combine(_dir, "soft"));
        var soft = SoftTokenInjection.Answer(model, fmt, proj, testP, te.Post);
        long k = te.Post.shape[1];
        int promptLen = len - marker.Length;
        using (no_grad())
        {
            using var e = model.Embed(idsT);
            using var tokens = proj.forward(te.Post);
            using var emb = cat(new[] { e.narrow(1, 0, promptLen), tokens.to(e.dtype), e.narrow(1, promptLen, marker.Length) }, 1);
            using var r = gen.GenerateFromEmbeddings(emb, null, cfg);
            Assert.Equal(r.Tokens.Select(t => fmt.ParseAnswer(t, false)), soft.Answers);
            Assert.Equal(r.Sampled.Select(s => (double)(promptLen + k + marker.Length + s)), soft.TokenSteps);
        }

        // LoRA student: trained to match h_post at the marker's last token, answering from the shortcut prompt.
        using var student = LoraStudent.Train(model, fmt, Point, train, tr.Post, budget, rank: 2, lambda: 1.0, Path.Combine(_dir, "lora"));
        var lora = LoraStudent.Answer(student, fmt, testP);
        Assert.Equal(n, lora.Answers.Count);
        Assert.All(lora.TokenSteps, t => Assert.InRange(t, len + 1, len + maxNew));
    }

    [Fact]
    public void MarkerIdsAreTheTracesOwnAndASingleTokenMarkerStaysOneId()
    {
        var family = TaskRegistry.Get("addition");
        var p = TaskSplits.Generate(family, Split.Test, 1, 2, 3)[0];
        var gemma = new TraceFormat(family, tokenizers.Gemma3, ChatFormat.For(ChatFamily.Gemma));
        var (ids, promptLength) = gemma.Sequence(p);
        var at = gemma.Locate(ids, promptLength)!.Value;
        var marker = ArmsCommon.ThinkEndIds(gemma, p);
        Assert.Equal(ids[(at.Post - marker.Length + 1)..(at.Post + 1)], marker);
        Assert.Equal("</think>", tokenizers.Gemma3.Decode(marker));

        var qwen = new TraceFormat(family, tokenizers.Qwen3, ChatFormat.For(ChatFamily.Qwen3));
        Assert.Equal(new[] { tokenizers.Qwen3.TokenToId("</think>")!.Value }, ArmsCommon.ThinkEndIds(qwen, p));
        Assert.Throws<ArgumentException>(() => ArmsCommon.ThinkEndIds(qwen, Array.Empty<TaskProblem>()));
    }
}
