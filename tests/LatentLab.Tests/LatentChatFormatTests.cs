using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Teacher;
using LatentLab.Text;
using static LatentLab.Tests.LatentTestKit;

namespace LatentLab.Tests;

/// <summary>The shortcut positions on Hugging Face chat formats, with the real Qwen3 and Gemma 3 tokenizers.</summary>
[Collection(RealTokenizerCollection.Name)]
public sealed class LatentChatFormatTests(RealTokenizers tokenizers) : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-latent-chat").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Qwen3PositionsAndAnswer()
    {
        var fmt = new TraceFormat(Addition, tokenizers.Qwen3, ChatFormat.For(ChatFamily.Qwen3));
        var p = Problems(1, digits: 3)[0];
        var (ids, promptLength) = fmt.Sequence(p);
        Assert.Equal(fmt.PromptIds(p), ids[..promptLength]);
        var pos = fmt.Locate(ids, promptLength)!.Value;
        Assert.Equal(151668, ids[pos.Post]);                                  // </think> is one token in Qwen3
        Assert.True(string.IsNullOrWhiteSpace(tokenizers.Qwen3.Decode(ids[(pos.Post + 1)..pos.FirstAnswer])));
        Assert.StartsWith(p.Answer[0].ToString(), tokenizers.Qwen3.Decode([ids[pos.FirstAnswer]]).TrimStart());
        Assert.Equal(p.Answer, fmt.ParseAnswer(ids[promptLength..]));
        Assert.Contains(tokenizers.Qwen3.TokenToId("<|im_end|>")!.Value, fmt.StopTokens);
        Assert.Contains(string.Join("\n", p.Steps), tokenizers.Qwen3.Decode(ids[promptLength..pos.Post]));
    }

    [Fact]
    public void GemmaMarkerOverSeveralTokensEndsAtItsLastToken()
    {
        var tok = tokenizers.Gemma3;
        var fmt = new TraceFormat(Addition, tok, ChatFormat.For(ChatFamily.Gemma));
        var p = Problems(1, digits: 3)[0];
        var (ids, promptLength) = fmt.Sequence(p);
        var pos = fmt.Locate(ids, promptLength)!.Value;
        // The state at Post has seen the whole marker, the one before it has not; no answer text before FirstAnswer.
        Assert.EndsWith("</think>", tok.Decode(ids[..(pos.Post + 1)]));
        Assert.DoesNotContain("</think>", tok.Decode(ids[..pos.Post]));
        Assert.True(string.IsNullOrWhiteSpace(tok.Decode(ids[(pos.Post + 1)..pos.FirstAnswer])));
        Assert.StartsWith(p.Answer[0].ToString(), tok.Decode([ids[pos.FirstAnswer]]).TrimStart());
        Assert.Equal(p.Answer, fmt.ParseAnswer(ids[promptLength..]));
    }

    /// <summary>A tiny random Qwen3 in a Hugging Face folder with the real tokenizer: the `--model DIR` path.</summary>
    [Fact]
    public void Qwen3CheckpointFolderExtractsReferenceTraces()
    {
        var tok = tokenizers.Qwen3;
        var modelDir = TinyCheckpoint.Qwen3(Path.Combine(_dir, "qwen3-tiny"), tok, seed: 3);
        var config = TransformerConfig.FromHuggingFace(modelDir);

        var fmt = TraceFormat.ForModel(modelDir, Addition);
        Assert.Equal(ChatFamily.Qwen3, fmt.Chat.Family);
        using var model = Checkpoints.Load(modelDir);
        var problems = Problems(3, digits: 2);
        var o = Reference(k: 2) with { Point = "blocks.0.resid_post" };
        var m = LatentExtraction.Run(model, fmt.Tokenizer, fmt, problems, o, Path.Combine(_dir, "store"));
        Assert.Equal(3, m.Rows);
        Assert.Equal("Qwen3", m.Settings.ChatFamily);
        var store = LatentStore.Open(Path.Combine(_dir, "store"), model, fmt.Tokenizer);
        Assert.All(store.Samples(verifiedOnly: false), s =>
        {
            Assert.Equal(151668, s.TraceIds[s.PostPosition]);
            Assert.Equal(fmt.PromptIds(s.Problem), s.PromptIds);
        });
        using var post = store.Post(verifiedOnly: false);
        Assert.Equal(new long[] { 3, 2, config.HiddenSize }, post.shape);
        Assert.Throws<InvalidDataException>(() => LatentStore.Open(Path.Combine(_dir, "store"), tok: tokenizers.Gemma3));
    }
}
