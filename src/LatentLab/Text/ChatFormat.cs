using System.Text.Json;

namespace LatentLab.Text;

/// <summary>How prompts and reasoning traces are laid out as text.</summary>
public enum ChatFamily
{
    /// <summary>The character-level teacher format: "{prompt}&lt;think&gt;{steps}&lt;/think&gt;{answer}&lt;eos&gt;", or
    /// "{prompt}&lt;direct&gt;{answer}&lt;eos&gt;" in direct-answer mode.</summary>
    Plain,

    /// <summary>Qwen3's ChatML template with its native &lt;think&gt; block (single tokens 151667 / 151668).</summary>
    Qwen3,

    /// <summary>Gemma's turn template. Gemma has no thinking tokens, so the think block is the literal text
    /// "&lt;think&gt;\n…\n&lt;/think&gt;\n\n" at the start of the model turn, laid out as Qwen3 lays out its own.</summary>
    Gemma,
}

/// <summary>
/// Prompt and trace text for one family. The strings are complete, including any &lt;bos&gt; the model
/// expects, so encode them with <c>addSpecialTokens: false</c>. <see cref="Prompt"/> is always a prefix of the
/// matching <see cref="Trace"/>, so the trace's tokens after the prompt are what the model should generate.
/// </summary>
public sealed class ChatFormat
{
    ChatFormat(ChatFamily family, string thinkEnd, string endOfTurn)
    {
        Family = family;
        ThinkEnd = thinkEnd;
        EndOfTurn = endOfTurn;
    }

    public ChatFamily Family { get; }

    /// <summary>The text that closes the thinking block.</summary>
    public string ThinkEnd { get; }

    /// <summary>The text that opens it: in the prompt for Plain and Gemma, written by the model itself for Qwen3.</summary>
    public string ThinkStart => CharTokenizer.ThinkStart;

    /// <summary>The text a finished trace ends with (where generation should stop).</summary>
    public string EndOfTurn { get; }

    public static ChatFormat For(ChatFamily family) => family switch
    {
        ChatFamily.Plain => new ChatFormat(family, CharTokenizer.ThinkEnd, CharTokenizer.Eos),
        ChatFamily.Qwen3 => new ChatFormat(family, "</think>", "<|im_end|>"),
        ChatFamily.Gemma => new ChatFormat(family, "</think>", "<end_of_turn>"),
        _ => throw new ArgumentOutOfRangeException(nameof(family), family, "unknown chat family"),
    };

    /// <summary>
    /// The text up to where the model starts generating. Qwen3 with thinking: its template's generation prompt
    /// (the model opens &lt;think&gt; itself); without: the template's empty think block. Gemma with thinking: the
    /// model turn opened with "&lt;think&gt;\n"; without: the plain Gemma model turn. Plain: the question followed by
    /// &lt;think&gt; or &lt;direct&gt;.
    /// </summary>
    public string Prompt(string question, bool thinking)
    {
        ArgumentNullException.ThrowIfNull(question);
        return Family switch
        {
            ChatFamily.Plain => question + (thinking ? CharTokenizer.ThinkStart : CharTokenizer.Direct),
            ChatFamily.Qwen3 => QwenUser(question) + (thinking ? "" : "<think>\n\n</think>\n\n"),
            ChatFamily.Gemma => GemmaUser(question) + (thinking ? "<think>\n" : ""),
            _ => throw new InvalidOperationException(),
        };
    }

    /// <summary>
    /// A full trace: prompt, thinking, answer and the end-of-turn marker. <paramref name="thinking"/> = null means
    /// direct-answer mode (the continuation of <c>Prompt(question, thinking: false)</c>). Whitespace follows the
    /// real templates: Qwen3 strips newlines around the thinking and before the answer; Gemma trims the question.
    /// </summary>
    public string Trace(string question, string? thinking, string answer)
    {
        ArgumentNullException.ThrowIfNull(question);
        ArgumentNullException.ThrowIfNull(answer);
        return Family switch
        {
            ChatFamily.Plain => thinking is null
                ? Prompt(question, false) + answer + EndOfTurn
                : Prompt(question, true) + thinking + CharTokenizer.ThinkEnd + answer + EndOfTurn,
            // Qwen3's template renders a missing reasoning_content as the same empty block that disables thinking.
            ChatFamily.Qwen3 => QwenUser(question) + "<think>\n" + (thinking ?? "").Trim('\n') + "\n</think>\n\n"
                                + answer.TrimStart('\n') + EndOfTurn,
            ChatFamily.Gemma => thinking is null
                ? Prompt(question, false) + answer.TrimStart('\n') + EndOfTurn
                : Prompt(question, true) + thinking.Trim('\n') + "\n</think>\n\n" + answer.TrimStart('\n') + EndOfTurn,
            _ => throw new InvalidOperationException(),
        };
    }

    static string QwenUser(string question) => "<|im_start|>user\n" + question + "<|im_end|>\n<|im_start|>assistant\n";

    // Gemma's template trims message content and starts with bos_token.
    static string GemmaUser(string question) => "<bos><start_of_turn>user\n" + question.Trim() + "<end_of_turn>\n<start_of_turn>model\n";

    /// <summary>
    /// Index in <paramref name="ids"/> of the first end-of-thinking marker at or after <paramref name="start"/>:
    /// the &lt;/think&gt; token when the tokenizer has it as one token, else the first token of its text; -1 if absent.
    /// Pass the prompt length as <paramref name="start"/> to skip a marker inside the prompt (Qwen3 without thinking).
    /// </summary>
    public int FindThinkEnd(IReadOnlyList<int> ids, ITokenizer tok, int start = 0)
    {
        ArgumentNullException.ThrowIfNull(ids);
        ArgumentNullException.ThrowIfNull(tok);
        if (start < 0 || start > ids.Count) throw new ArgumentOutOfRangeException(nameof(start));

        if (tok.TokenToId(ThinkEnd) is int single && tok.Encode(ThinkEnd) is [var only] && only == single)
        {
            for (int i = start; i < ids.Count; i++) if (ids[i] == single) return i;
            return -1;
        }

        // Several tokens: find the shortest prefix whose text contains the marker (containment only grows with
        // the prefix, so binary search), then walk back to the token where the marker's text begins.
        string Text(int from, int to) => tok.Decode(Slice(ids, from, to));
        if (!Text(start, ids.Count).Contains(ThinkEnd, StringComparison.Ordinal)) return -1;
        int lo = start + 1, hi = ids.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) / 2;
            if (Text(start, mid).Contains(ThinkEnd, StringComparison.Ordinal)) hi = mid; else lo = mid + 1;
        }
        int first = lo - 1;
        while (first > start && !Text(first, lo).Contains(ThinkEnd, StringComparison.Ordinal)) first--;
        return first;
    }

    static IEnumerable<int> Slice(IReadOnlyList<int> ids, int from, int to)
    {
        for (int i = from; i < to; i++) yield return ids[i];
    }

    /// <summary>
    /// The family of a model folder: config.json's model_type (qwen3*, gemma*), else the chat template in
    /// tokenizer_config.json (ChatML → Qwen3, &lt;start_of_turn&gt; → Gemma), else the tokenizer's own tokens
    /// (a CharTokenizer's markers → Plain). Anything else is an error naming the folder.
    /// </summary>
    public static ChatFormat Detect(string modelDir)
    {
        ArgumentNullException.ThrowIfNull(modelDir);
        if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"{modelDir}: model folder not found.");

        string? modelType = null;
        var configPath = Path.Combine(modelDir, "config.json");
        if (File.Exists(configPath))
        {
            using var config = ReadJson(File.ReadAllBytes(configPath), configPath);
            if (config.RootElement.TryGetProperty("model_type", out var mt) && mt.ValueKind == JsonValueKind.String)
                modelType = mt.GetString();
            // Multimodal Gemma 3 keeps the language model's type in text_config.
            if (modelType is not null && !IsGemma(modelType) && !IsQwen3(modelType)
                && config.RootElement.TryGetProperty("text_config", out var tc) && tc.ValueKind == JsonValueKind.Object
                && tc.TryGetProperty("model_type", out var tmt) && tmt.ValueKind == JsonValueKind.String)
                modelType = IsGemma(tmt.GetString()!) ? tmt.GetString() : modelType;
        }
        if (modelType is not null && IsQwen3(modelType)) return For(ChatFamily.Qwen3);
        if (modelType is not null && IsGemma(modelType)) return For(ChatFamily.Gemma);

        var tcPath = new[] { "tokenizer_config.json", "tokenizer_config.json.gz" }.Select(n => Path.Combine(modelDir, n)).FirstOrDefault(File.Exists);
        if (tcPath is not null)
        {
            using var tc = ReadJson(TokenizerLoader.ReadMaybeGzip(tcPath), tcPath);
            if (tc.RootElement.TryGetProperty("chat_template", out var ct) && ct.ValueKind == JsonValueKind.String)
            {
                var template = ct.GetString()!;
                if (template.Contains("<|im_start|>", StringComparison.Ordinal)) return For(ChatFamily.Qwen3);
                if (template.Contains("<start_of_turn>", StringComparison.Ordinal)) return For(ChatFamily.Gemma);
            }
        }

        var tok = TokenizerLoader.TryLoadFromDirectory(modelDir);
        if (tok is not null)
        {
            if (tok.TokenToId("<|im_start|>") is not null && tok.TokenToId("</think>") is not null) return For(ChatFamily.Qwen3);
            if (tok.TokenToId("<start_of_turn>") is not null) return For(ChatFamily.Gemma);
            if (IsCharLevel(tok)) return For(ChatFamily.Plain);
        }
        throw new InvalidDataException(
            $"{modelDir}: cannot tell the chat format (model_type '{modelType ?? "none"}', tokenizer {(tok is null ? "missing" : "without known chat markers")}); "
            + "supported: qwen3, gemma, and CharTokenizer models.");
    }

    static bool IsQwen3(string modelType) => modelType.StartsWith("qwen3", StringComparison.Ordinal);
    static bool IsGemma(string modelType) => modelType.StartsWith("gemma", StringComparison.Ordinal);

    // A CharTokenizer's markers, and every other token a single character.
    static bool IsCharLevel(ITokenizer tok)
    {
        var markers = CharTokenizer.DefaultSpecials;
        if (markers.Any(m => tok.TokenToId(m) is null)) return false;
        for (int id = 0; id < tok.VocabSize; id++)
        {
            var t = tok.IdToToken(id);
            if (t is null || (t.Length != 1 && !(t.StartsWith('<') && t.EndsWith('>')))) return false;
        }
        return true;
    }

    static JsonDocument ReadJson(byte[] bytes, string path)
    {
        try { return JsonDocument.Parse(bytes); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e); }
    }

    public override string ToString() => $"ChatFormat({Family})";
}
