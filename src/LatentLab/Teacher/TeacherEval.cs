using LatentLab.Evaluation;
using LatentLab.Generation;
using LatentLab.Models;
using LatentLab.Tasks;
using static TorchSharp.torch;

namespace LatentLab.Teacher;

/// <summary>One problem's outcome: what the model generated, the answer read from it, and whether it verified.
/// <see cref="Sampled"/> counts every token drawn, the stop token included (compute accounting).</summary>
public sealed record GradedAnswer(TaskProblem Problem, bool Thinking, string Generated, string? Answer, bool Correct, int GeneratedTokens,
    int PromptTokens = 0, int Sampled = 0);

/// <summary>Accuracy of one (test set, mode) cell, with its Wilson interval and compute spent.</summary>
public sealed record ModeAccuracy(string Set, int Difficulty, bool Thinking, Proportion Accuracy, double MeanGeneratedTokens, bool Bottleneck = false)
{
    public string Mode => !Thinking ? "direct" : Bottleneck ? "thinking, bottleneck" : "thinking";
}

/// <summary>Verified accuracy of a teacher: greedy decoding, answer parsed from its own output, exact verifier.</summary>
public static class TeacherEval
{
    /// <param name="prompt">The ids given to the model (default: the format's prompt in the chosen mode).</param>
    /// <param name="maxNewTokens">Generation budget of a batch (default: its longest reference continuation + 8).</param>
    /// <param name="bottleneck">For a model with bottleneck slots: think through the slots (the default) or in a full trace.</param>
    public static IReadOnlyList<GradedAnswer> Grade(DecoderLM model, TraceFormat fmt, IReadOnlyList<TaskProblem> problems,
        bool thinking, int batchSize = 128, Func<TaskProblem, int[]>? prompt = null, Func<IReadOnlyList<TaskProblem>, int>? maxNewTokens = null,
        bool bottleneck = true)
    {
        prompt ??= p => fmt.PromptIds(p, thinking);
        var gen = new TextGenerator(model);
        var results = new List<GradedAnswer>(problems.Count);
        int eos = fmt.Tokenizer.EosId ?? throw new InvalidOperationException("teacher tokenizer has no <eos>");
        using var _ = no_grad();
        for (int start = 0; start < problems.Count; start += batchSize)
        {
            var chunk = problems.Skip(start).Take(batchSize).ToList();
            // Room for the longest reference continuation plus slack, so a model that rambles is cut, not waited on.
            int maxNew = maxNewTokens?.Invoke(chunk)
                         ?? chunk.Max(p => { var (ids, promptLen) = fmt.Sequence(p, thinking); return ids.Length - promptLen; }) + 8;
            var prompts = chunk.Select(prompt).ToList();
            if (thinking && fmt.Slots > 0)
            {
                var outs = ThinkingGeneration.Generate(model, fmt, prompts, prompts.Select(p => p.Length).ToList(), bottleneck, maxNew,
                    chunk.Max(p => fmt.Tokenizer.Encode(p.Answer).Length) + 4);
                for (int i = 0; i < chunk.Count; i++)
                {
                    var answer = fmt.ParseAnswer(outs[i].Continuation, true);
                    bool ok = answer is not null && fmt.Family.Verify(chunk[i], answer);
                    var shown = outs[i].Continuation.Where(id => id != eos).ToArray();
                    results.Add(new GradedAnswer(chunk[i], thinking, fmt.Tokenizer.Decode(shown), answer, ok, shown.Length,
                        prompts[i].Length, outs[i].Steps - prompts[i].Length));
                }
                continue;
            }
            using var outcome = gen.Generate(prompts, new GenerationConfig(MaxNewTokens: maxNew, StopTokens: new[] { eos }));
            for (int i = 0; i < chunk.Count; i++)
            {
                var tokens = outcome.Tokens[i];
                var answer = fmt.ParseAnswer(tokens, thinking);
                bool ok = answer is not null && fmt.Family.Verify(chunk[i], answer);
                results.Add(new GradedAnswer(chunk[i], thinking, fmt.Tokenizer.Decode(tokens), answer, ok, tokens.Length,
                    prompts[i].Length, outcome.Sampled[i]));
            }
        }
        return results;
    }

    public static ModeAccuracy Summarise(string set, int difficulty, bool thinking, IReadOnlyList<GradedAnswer> graded, bool bottleneck = false) =>
        new(set, difficulty, thinking, Proportion.Wilson(graded.Count(g => g.Correct), graded.Count),
            graded.Count == 0 ? 0 : graded.Average(g => g.GeneratedTokens), bottleneck);
}
