using static TorchSharp.torch;
using LatentLab.Tasks;
using LatentLab.Text;

namespace LatentLab.Teacher;

/// <summary>
/// Where a trace's states are read. <see cref="Pre"/>: the last prompt token, before any thinking.
/// <see cref="Post"/>: the token that completes the end-of-thinking marker (the marker itself when it is one token).
/// <see cref="FirstAnswer"/>: the first token after the marker whose text is not template whitespace (the trace's
/// length when the trace stops before any answer). Always Pre &lt; Post &lt; FirstAnswer.
/// </summary>
public readonly record struct TracePositions(int Pre, int Post, int FirstAnswer);

/// <summary>
/// A task family's problems laid out in one chat format (Plain for the char-level teacher, Qwen3 or Gemma for a
/// Hugging Face checkpoint) with one tokenizer: prompt ids, reference traces, where thinking ends, where the
/// answer begins and what the answer is. Traces are always the prompt's ids followed by the continuation's
/// ids, so a generated trace and a reference trace agree token for token on the prompt.
/// </summary>
public sealed class TraceFormat
{
    public ITaskFamily Family { get; }
    public ITokenizer Tokenizer { get; }
    public ChatFormat Chat { get; }

    /// <summary>Joins the reference steps inside the think block: ';' for the char teacher (its training format),
    /// a newline for chat models, whose thinking is line-oriented text.</summary>
    public string StepSeparator { get; }

    public TraceFormat(ITaskFamily family, ITokenizer tokenizer, ChatFormat chat, int slots = 0)
    {
        Family = family ?? throw new ArgumentNullException(nameof(family));
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        Chat = chat ?? throw new ArgumentNullException(nameof(chat));
        StepSeparator = chat.Family == ChatFamily.Plain ? TeacherFormat.StepSeparator : "\n";
        if (chat.Family == ChatFamily.Plain && tokenizer.BosId is null)
            throw new ArgumentException("the Plain trace format needs a tokenizer with <bos> (a CharTokenizer)");
        ArgumentOutOfRangeException.ThrowIfNegative(slots);
        Slots = slots;
        if (slots > 0)
        {
            if (chat.Family != ChatFamily.Plain)
                throw new NotSupportedException($"bottleneck traces are defined for the char teacher's Plain format, not {chat.Family}");
            SlotId = tokenizer.TokenToId(SlotToken) ?? throw new ArgumentException($"a bottleneck format needs the token {SlotToken} in the tokenizer");
            ThinkEndId = tokenizer.TokenToId(Chat.ThinkEnd) ?? throw new ArgumentException($"the tokenizer has no single {Chat.ThinkEnd} token");
        }
    }

    /// <summary>The token repeated <see cref="Slots"/> times between a bottleneck trace's thought and its end marker.</summary>
    public const string SlotToken = "<slot>";

    /// <summary>The file in a model folder that names its bottleneck slot count (absent: a model without bottleneck traces).</summary>
    public const string FormatFile = "trace_format.json";

    /// <summary>
    /// Latent slots of the bottleneck trace (0: the model has none). A bottleneck trace is
    /// `prompt&lt;think&gt;thought&lt;slot&gt;×k&lt;/think&gt;answer&lt;eos&gt;`: the slots see the thought; the end marker
    /// (which reads the first answer token off the slots) and the answer see the prompt and the slots only, and take
    /// positions as if the thought were absent (<see cref="Layout"/>). So whatever the answer needs crosses the
    /// slots' states: their keys and values at every layer are a complete post-thinking state by construction.
    /// The slots come before the marker, not after it, so that the token predicting the first answer digit is itself
    /// behind the bottleneck.
    /// </summary>
    public int Slots { get; }
    public int? SlotId { get; }
    int? ThinkEndId { get; }

    /// <summary>The format of a model folder: its tokenizer, the chat family <see cref="ChatFormat.Detect"/> finds and its bottleneck slots.</summary>
    public static TraceFormat ForModel(string modelDir, ITaskFamily family)
    {
        var tok = TokenizerLoader.TryLoadFromDirectory(modelDir)
            ?? throw new FileNotFoundException($"{modelDir}: no tokenizer.json in the model folder", Path.Combine(modelDir, "tokenizer.json"));
        return new TraceFormat(family, tok, ChatFormat.Detect(modelDir), BottleneckSlots(modelDir));
    }

    /// <summary>The slot count recorded in a model folder's <see cref="FormatFile"/> (0 when there is none).</summary>
    public static int BottleneckSlots(string modelDir)
    {
        var path = Path.Combine(modelDir, FormatFile);
        if (!File.Exists(path)) return 0;
        var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))
            ?? throw new InvalidDataException($"{path} is empty");
        return node["bottleneck_slots"]?.GetValue<int>() ?? throw new InvalidDataException($"{path} has no bottleneck_slots");
    }

    /// <summary>Writes <see cref="FormatFile"/> into a model folder (nothing when the format has no slots).</summary>
    public void SaveTo(string modelDir)
    {
        if (Slots == 0) return;
        IO.AtomicFile.WriteAllText(Path.Combine(modelDir, FormatFile), $"{{\n  \"bottleneck_slots\": {Slots}\n}}\n");
    }

    /// <summary>The reference bottleneck trace (thought, k slots, marker, answer) and its prompt length.</summary>
    public (int[] Ids, int PromptLength) BottleneckSequence(TaskProblem p)
    {
        if (Slots == 0) throw new InvalidOperationException($"{this} has no bottleneck slots");
        var prompt = Chat.Prompt(p.Prompt, true);
        var trace = Chat.Trace(p.Prompt, Thinking(p) + string.Concat(Enumerable.Repeat(SlotToken, Slots)), p.Answer);
        var promptIds = Tokenizer.Encode(prompt, AddSpecial);
        return ([.. promptIds, .. Tokenizer.Encode(trace[prompt.Length..], addSpecialTokens: false)], promptIds.Length);
    }

    /// <summary>
    /// The attention layout of a thinking trace: for a bottleneck trace (slots after the thought) the thought
    /// [promptLength, first slot) is hidden from the token after the last slot on, and the slots and everything
    /// after them take positions promptLength, promptLength+1, … as if the thought were absent; null for a trace
    /// without slots (plain causal text).
    /// </summary>
    public Models.SequenceLayout? Layout(IReadOnlyList<int> ids, int promptLength)
    {
        if (SlotId is not int slot) return null;
        int first = -1;
        for (int i = promptLength; i < ids.Count; i++) if (ids[i] == slot) { first = i; break; }
        if (first < 0) return null;
        int end = first;
        while (end < ids.Count && ids[end] == slot) end++;
        var layout = Models.SequenceLayout.Plain(ids.Count);
        for (int i = first; i < ids.Count; i++) layout.Positions[i] = promptLength + (i - first);
        for (int i = promptLength; i < first; i++) layout.Expiry[i] = end;
        return layout;
    }

    /// <summary>The slots and end marker that follow a bottleneck thought (what a shortcut puts after the prompt).</summary>
    public int[] SlotsAndEnd() => Slots == 0
        ? throw new InvalidOperationException($"{this} has no bottleneck slots")
        : [.. Enumerable.Repeat(SlotId!.Value, Slots), ThinkEndId!.Value];

    // The char teacher's strings carry no <bos>; its tokenizer adds it. Chat strings are complete (ChatFormat's contract).
    bool AddSpecial => Chat.Family == ChatFamily.Plain;

    public string Thinking(TaskProblem p) => string.Join(StepSeparator, p.Steps);

    /// <summary>Ids of the text the model is given (with its &lt;bos&gt;), thinking or direct-answer mode.</summary>
    public int[] PromptIds(TaskProblem p, bool thinking = true) => Tokenizer.Encode(Chat.Prompt(p.Prompt, thinking), AddSpecial);

    /// <summary>The reference trace (prompt, the task's own steps, answer, end of turn) and its prompt length.</summary>
    public (int[] Ids, int PromptLength) Sequence(TaskProblem p, bool thinking = true)
    {
        var prompt = Chat.Prompt(p.Prompt, thinking);
        var trace = Chat.Trace(p.Prompt, thinking ? Thinking(p) : null, p.Answer);
        if (!trace.StartsWith(prompt, StringComparison.Ordinal))
            throw new InvalidOperationException($"{Chat}: the trace of '{p.Prompt}' does not start with its prompt");
        var promptIds = Tokenizer.Encode(prompt, AddSpecial);
        var rest = Tokenizer.Encode(trace[prompt.Length..], addSpecialTokens: false);
        return ([.. promptIds, .. rest], promptIds.Length);
    }

    /// <summary>Tokens that end a turn: the end-of-turn marker when it is a single token, and the tokenizer's eos.</summary>
    public IReadOnlyList<int> StopTokens
    {
        get
        {
            var stops = new List<int>();
            if (Tokenizer.TokenToId(Chat.EndOfTurn) is int id && Tokenizer.Encode(Chat.EndOfTurn) is [var only] && only == id) stops.Add(id);
            if (Tokenizer.EosId is int eos && !stops.Contains(eos)) stops.Add(eos);
            if (stops.Count == 0) throw new InvalidOperationException($"{Chat}: the tokenizer has neither '{Chat.EndOfTurn}' as one token nor an eos token");
            return stops;
        }
    }

    /// <summary>The answer in a generated continuation (prompt excluded), or null when thinking was never closed.</summary>
    public string? ParseAnswer(IReadOnlyList<int> generated, bool thinking = true)
    {
        var text = Tokenizer.Decode(generated);
        if (thinking)
        {
            int end = text.IndexOf(Chat.ThinkEnd, StringComparison.Ordinal);
            if (end < 0) return null;
            text = text[(end + Chat.ThinkEnd.Length)..];
        }
        int eot = text.IndexOf(Chat.EndOfTurn, StringComparison.Ordinal);
        return (eot >= 0 ? text[..eot] : text).Trim();
    }

    /// <summary>
    /// The pre / post / first-answer positions of a thinking trace whose prompt is its first
    /// <paramref name="promptLength"/> ids; null when the thinking block is never closed after the prompt.
    /// A marker split over several tokens gives Post = the token completing it, unless that token already holds
    /// answer text: then the token before it, so Post always stays before the first answer token (and null when
    /// that would leave no token after the prompt).
    /// </summary>
    public TracePositions? Locate(IReadOnlyList<int> traceIds, int promptLength)
    {
        ArgumentNullException.ThrowIfNull(traceIds);
        if (promptLength < 1 || promptLength > traceIds.Count)
            throw new ArgumentOutOfRangeException(nameof(promptLength), $"prompt length {promptLength} is outside the trace (length {traceIds.Count})");
        if (ThinkEndSpan(traceIds, promptLength) is not { } span) return null;
        var (start, end) = span;

        string Text(int from, int toInclusive) => Tokenizer.Decode(traceIds.Skip(from).Take(toInclusive - from + 1));

        int firstAnswer = traceIds.Count;
        for (int j = end; j < traceIds.Count; j++)
        {
            var text = Text(start, j);
            var after = text[(text.IndexOf(Chat.ThinkEnd, StringComparison.Ordinal) + Chat.ThinkEnd.Length)..];
            if (!string.IsNullOrWhiteSpace(after)) { firstAnswer = j; break; }
        }
        int pre = promptLength - 1;
        int post = Math.Min(end, firstAnswer - 1);
        // A bottleneck trace's targets are its slots: post is the last slot, before the marker that reads them.
        if (SlotId is int slot && start - 1 > pre && traceIds[start - 1] == slot) post = start - 1;
        return post > pre ? new TracePositions(pre, post, firstAnswer) : null;
    }

    /// <summary>
    /// The tokens of the first end-of-thinking marker after the prompt: from the token where its text begins
    /// (<see cref="ChatFormat.FindThinkEnd"/>) to the token that completes it, both inclusive; null when the thinking
    /// block is never closed after the prompt. A multi-token marker's tokens may carry neighbouring text too.
    /// </summary>
    public (int Start, int End)? ThinkEndSpan(IReadOnlyList<int> traceIds, int promptLength)
    {
        ArgumentNullException.ThrowIfNull(traceIds);
        int start = Chat.FindThinkEnd(traceIds, Tokenizer, promptLength);
        if (start < 0) return null;
        int end = start;
        while (!Tokenizer.Decode(traceIds.Skip(start).Take(end - start + 1)).Contains(Chat.ThinkEnd, StringComparison.Ordinal)) end++;
        return (start, end);
    }

    /// <summary>A generation budget for a thinking trace of <paramref name="p"/>: its reference continuation plus slack,
    /// so a model that rambles is cut, not waited on.</summary>
    public int MaxNewTokens(TaskProblem p, int slack = 16)
    {
        var (ids, promptLength) = Sequence(p, thinking: true);
        return ids.Length - promptLength + slack;
    }

    public override string ToString() => $"TraceFormat({Family.Name}, {Chat.Family}{(Slots > 0 ? $", {Slots} bottleneck slots" : "")})";

    /// <summary>Right-padded training batch with the prompt unscored; see <see cref="Training.LmBatch.Build"/>.</summary>
    public (Tensor Ids, Tensor Targets, Tensor Mask, long LossTokens) Batch(IReadOnlyList<(int[] Ids, int PromptLength)> seqs) =>
        Training.LmBatch.Build(seqs, Tokenizer.PadId ?? 0);
}
