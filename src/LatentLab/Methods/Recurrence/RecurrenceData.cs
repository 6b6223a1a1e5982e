using LatentLab.Tasks;
using LatentLab.Teacher;
using static TorchSharp.torch;

namespace LatentLab.Methods.Recurrence;

/// <summary>
/// One problem split the way latent recurrence reads it: the question in thinking mode (what the latent phase
/// encodes), the end-of-thinking marker (given to the decoder after the bridge, never scored) and the answer with
/// its end of turn (the only tokens the loss sees). All three come from the format's own reference trace, so a chat
/// model gets its template and the char teacher its `&lt;think&gt;…&lt;/think&gt;` layout.
/// </summary>
public sealed record RecurrenceExample(TaskProblem Problem, int[] Prompt, int[] Marker, int[] Answer);

/// <summary>A padded batch: prompts left-padded (positions follow the mask), answers right-padded.</summary>
public sealed record RecurrenceBatch(Tensor PromptIds, Tensor PromptMask, int[] Marker, Tensor AnswerIn, Tensor AnswerTargets, long AnswerTokens)
{
    public long Batch => PromptIds.shape[0];
}

public static class RecurrenceData
{
    public static RecurrenceExample Example(TraceFormat fmt, TaskProblem p)
    {
        var (ids, promptLength) = fmt.Sequence(p, thinking: true);
        var at = fmt.Locate(ids, promptLength)
                 ?? throw new InvalidOperationException($"{fmt}: the reference trace of '{p.Prompt}' has no end-of-thinking marker");
        int markerTokens = fmt.Tokenizer.Encode(fmt.Chat.ThinkEnd, addSpecialTokens: false).Length;
        int markerStart = Math.Max(promptLength, at.Post - markerTokens + 1);
        return new RecurrenceExample(p, ids[..promptLength], ids[markerStart..at.FirstAnswer], ids[at.FirstAnswer..]);
    }

    /// <summary>The longest reference thought among <paramref name="problems"/>, in tokens (between the prompt and the marker).</summary>
    public static int ThoughtLength(TraceFormat fmt, IReadOnlyList<TaskProblem> problems) =>
        problems.Max(p =>
        {
            var x = Example(fmt, p);
            return fmt.Sequence(p, thinking: true).Ids.Length - x.Prompt.Length - x.Marker.Length - x.Answer.Length;
        });

    public static RecurrenceBatch Batch(IReadOnlyList<RecurrenceExample> xs, int pad, Device device)
    {
        var marker = xs[0].Marker;
        if (xs.Any(x => !x.Marker.SequenceEqual(marker)))
            throw new InvalidOperationException("recurrence: the examples of one batch tokenise the end-of-thinking marker differently");
        int b = xs.Count, t = xs.Max(x => x.Prompt.Length), a = xs.Max(x => x.Answer.Length);
        var ids = new long[b * t];
        var mask = new long[b * t];
        // Teacher forcing: the decoder is fed a_0 … a_{n-2} after the marker; the marker's last position predicts a_0.
        var ain = new long[b * Math.Max(0, a - 1)];
        var tgt = new long[b * a];
        long scored = 0;
        for (int i = 0; i < b; i++)
        {
            var x = xs[i];
            int off = t - x.Prompt.Length;
            for (int j = 0; j < t; j++)
            {
                ids[i * t + j] = j >= off ? x.Prompt[j - off] : pad;
                mask[i * t + j] = j >= off ? 1 : 0;
            }
            for (int j = 0; j < a - 1; j++) ain[i * (a - 1) + j] = j < x.Answer.Length ? x.Answer[j] : pad;
            for (int j = 0; j < a; j++) tgt[i * a + j] = j < x.Answer.Length ? x.Answer[j] : -100;
            scored += x.Answer.Length;
        }
        return new RecurrenceBatch(tensor(ids).view(b, t).to(device), tensor(mask).view(b, t).to(device), marker,
            tensor(ain).view(b, a - 1).to(device), tensor(tgt).view(b, a).to(device), scored);
    }
}
