using LatentLab.Tasks;

namespace LatentLab.Latents;

/// <summary>
/// One problem as the teacher actually solved it, with the positions a latent store reads:
/// h_pre at the end of the prompt, h_post at the end-of-thinking marker.
/// Positions index <see cref="TraceIds"/> (prompt followed by the teacher's own greedy continuation).
/// Invariant (the leak rule): every target position is strictly before <see cref="FirstAnswerPosition"/>.
/// </summary>
public sealed record TraceSample(
    int Index,
    TaskProblem Problem,
    int[] PromptIds,
    int[] TraceIds,
    /// <summary>Last prompt token (the opening of the thinking block): where h_pre is read.</summary>
    int PrePosition,
    /// <summary>The end-of-thinking marker token (e.g. &lt;/think&gt;): where h_post is read.</summary>
    int PostPosition,
    /// <summary>First token of the answer text after the marker (and any template whitespace).</summary>
    int FirstAnswerPosition,
    string? TeacherAnswer,
    bool Verified);
