using System.Text.Json.Nodes;
using LatentLab.Text;

namespace LatentLab.Tests;

[Collection(RealTokenizerCollection.Name)]
public sealed class ChatFormatTests(RealTokenizers tokenizers) : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-chat").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // Rendered from the chat templates in Fixtures/tokenizers/*/tokenizer_config.json.gz with @huggingface/jinja 0.5.11.
    const string QwenGenerationPrompt = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
    const string QwenNoThinkingPrompt = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
    const string QwenTraceWithReasoning = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nLet me add.\n</think>\n\n4<|im_end|>\n";
    const string QwenTraceWithoutReasoning = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>\n";
    const string GemmaGenerationPrompt = "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n";
    const string GemmaTrace = "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n";

    [Fact]
    public void Qwen3MatchesItsChatTemplate()
    {
        var f = ChatFormat.For(ChatFamily.Qwen3);
        Assert.Equal(QwenGenerationPrompt, f.Prompt("What is 2+2?", thinking: true));
        Assert.Equal(QwenNoThinkingPrompt, f.Prompt("What is 2+2?", thinking: false));
        // The template ends each turn with "\n" after <|im_end|>; a trace stops at <|im_end|>, where generation stops.
        Assert.Equal(QwenTraceWithReasoning, f.Trace("What is 2+2?", "\n\nLet me add.\n\n", "\n4") + "\n");
        Assert.Equal(QwenTraceWithoutReasoning, f.Trace("What is 2+2?", null, "4") + "\n");
        Assert.Equal(QwenTraceWithoutReasoning, f.Trace("What is 2+2?", "", "4") + "\n");
    }

    [Fact]
    public void Qwen3TraceTokensAndThinkEnd()
    {
        var f = ChatFormat.For(ChatFamily.Qwen3);
        var q = tokenizers.Qwen3;
        var trace = f.Trace("What is 2+2?", "Let me add.", "4");
        var reference = ReferenceIds.For("qwen3").Single(c => c.Text == trace);   // the reference file holds this exact trace
        var ids = q.Encode(trace);
        Assert.Equal(reference.Ids, ids);
        Assert.Equal(1, ids.Count(i => i == 151668));
        int end = f.FindThinkEnd(ids, q);
        Assert.Equal(151668, ids[end]);
        Assert.Equal(21, end);
        Assert.Equal(151667, ids[15]);   // <think>

        // Without thinking the prompt already holds </think>; starting after the prompt finds none in the answer.
        var direct = q.Encode(f.Trace("What is 2+2?", null, "4"));
        int promptLength = q.Encode(f.Prompt("What is 2+2?", false)).Length;
        Assert.Equal(promptLength - 2, f.FindThinkEnd(direct, q));
        Assert.Equal(-1, f.FindThinkEnd(direct, q, start: promptLength));
        Assert.Equal(-1, f.FindThinkEnd(q.Encode("no marker here"), q));
    }

    [Fact]
    public void GemmaMatchesItsChatTemplate()
    {
        var f = ChatFormat.For(ChatFamily.Gemma);
        Assert.Equal(GemmaGenerationPrompt, f.Prompt("  What is 2+2? \n", thinking: false));   // the template trims content
        Assert.Equal(GemmaTrace, f.Trace("What is 2+2?", null, "4") + "\n");
        Assert.Equal(GemmaGenerationPrompt + "<think>\n", f.Prompt("What is 2+2?", thinking: true));
        Assert.Equal(GemmaGenerationPrompt + "<think>\nadd\n</think>\n\n4<end_of_turn>", f.Trace("What is 2+2?", "add", "4"));
    }

    [Fact]
    public void GemmaTraceTokensAndThinkEnd()
    {
        var f = ChatFormat.For(ChatFamily.Gemma);
        var g = tokenizers.Gemma3;
        // The reference holds the same turn without the leading <bos> text.
        var reference = ReferenceIds.For("gemma3").Single(c => c.Text == "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>");
        var direct = g.Encode(f.Trace("What is 2+2?", null, "4"));
        Assert.Equal([2, .. reference.Ids], direct);
        Assert.Equal(105, direct[1]);
        Assert.Equal(106, direct[^1]);
        Assert.Equal(-1, f.FindThinkEnd(direct, g));

        // Gemma has no </think> token: the marker is several tokens, and the index is the first of them.
        Assert.Null(g.TokenToId("</think>"));
        var ids = g.Encode(f.Trace("What is 17*3?", "17*3 = 51", "51"));
        int end = f.FindThinkEnd(ids, g);
        Assert.True(end > 0);
        Assert.StartsWith("</think>", g.Decode(ids.Skip(end)));
        Assert.DoesNotContain("</think>", g.Decode(ids.Take(end + 1)));
        Assert.EndsWith("\n", g.Decode(ids.Take(end)));
    }

    [Fact]
    public void PlainFormatWithCharTokenizer()
    {
        var f = ChatFormat.For(ChatFamily.Plain);
        var tok = CharTokenizer.Create("0123456789+*= ");
        Assert.Equal("12+3=<think>", f.Prompt("12+3=", thinking: true));
        Assert.Equal("12+3=<direct>", f.Prompt("12+3=", thinking: false));
        var trace = f.Trace("12+3=", "2+3=5 1", "15");
        Assert.Equal("12+3=<think>2+3=5 1</think>15<eos>", trace);
        Assert.Equal("12+3=<direct>15<eos>", f.Trace("12+3=", null, "15"));

        var ids = tok.Encode(trace);
        int end = f.FindThinkEnd(ids, tok);
        Assert.Equal(tok.TokenToId("</think>"), ids[end]);
        Assert.Equal("12+3=<think>2+3=5 1".Length - "<think>".Length + 1, end);
        Assert.Equal(tok.EosId, ids[^1]);
        Assert.Equal(-1, f.FindThinkEnd(tok.Encode(f.Trace("12+3=", null, "15")), tok));
    }

    [Theory]
    [InlineData(ChatFamily.Plain)]
    [InlineData(ChatFamily.Qwen3)]
    [InlineData(ChatFamily.Gemma)]
    public void PromptIsAPrefixOfTheTrace(ChatFamily family)
    {
        var f = ChatFormat.For(family);
        Assert.StartsWith(f.Prompt("7*6=", thinking: true), f.Trace("7*6=", "7*6 = 42", "42"));
        Assert.StartsWith(f.Prompt("7*6=", thinking: false), f.Trace("7*6=", null, "42"));
        Assert.EndsWith(f.EndOfTurn, f.Trace("7*6=", null, "42"));
    }

    [Theory]
    [InlineData(ChatFamily.Qwen3, "qwen3")]
    [InlineData(ChatFamily.Gemma, "gemma3")]
    public void PromptTokensArePrefixOfTraceTokens(ChatFamily family, string model)
    {
        // So that the trace's tokens after the prompt are exactly what the model is trained to generate.
        var f = ChatFormat.For(family);
        var tok = tokenizers.For(model);
        foreach (var thinking in new[] { true, false })
        {
            var prompt = tok.Encode(f.Prompt("What is 12345 + 678?", thinking));
            var trace = tok.Encode(f.Trace("What is 12345 + 678?", thinking ? "12345 + 678 = 13023." : null, "13023"));
            Assert.Equal(prompt, trace.Take(prompt.Length));
        }
    }

    string ModelDir(string name, string? modelType)
    {
        var dir = Directory.CreateDirectory(Path.Combine(_dir, name)).FullName;
        if (modelType is not null)
            File.WriteAllText(Path.Combine(dir, "config.json"), new JsonObject { ["model_type"] = modelType }.ToJsonString());
        return dir;
    }

    [Fact]
    public void DetectsFamilyFromModelFolder()
    {
        Assert.Equal(ChatFamily.Qwen3, ChatFormat.Detect(ModelDir("q", "qwen3")).Family);
        Assert.Equal(ChatFamily.Gemma, ChatFormat.Detect(ModelDir("g", "gemma3_text")).Family);
        Assert.Equal(ChatFamily.Gemma, ChatFormat.Detect(ModelDir("g2", "gemma2")).Family);

        // A ChatML model of another type is told by its chat template (here Qwen3's own, gzip-compressed).
        var chatml = ModelDir("chatml", "qwen2");
        File.Copy(Path.Combine(RealTokenizers.Dir, "qwen3", "tokenizer_config.json.gz"), Path.Combine(chatml, "tokenizer_config.json.gz"));
        Assert.Equal(ChatFamily.Qwen3, ChatFormat.Detect(chatml).Family);

        // Our own char-level models: by the tokenizer's contents.
        var plain = ModelDir("plain", "llama");
        CharTokenizer.Create("0123456789+").Save(plain);
        Assert.Equal(ChatFamily.Plain, ChatFormat.Detect(plain).Family);

        var unknown = ModelDir("unknown", "mistral");
        var e = Assert.Throws<InvalidDataException>(() => ChatFormat.Detect(unknown));
        Assert.Contains(unknown, e.Message);
        Assert.Contains("mistral", e.Message);
        Assert.Throws<DirectoryNotFoundException>(() => ChatFormat.Detect(Path.Combine(_dir, "missing")));
    }
}
