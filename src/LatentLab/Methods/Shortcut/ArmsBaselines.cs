using LatentLab.Latents;
using LatentLab.Generation;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Training;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>How long a trained arm trains: the same budget for distillation, projection and LoRA, so none is favoured.</summary>
public sealed record ArmTraining(int Steps = 300, int BatchSize = 64, double LearningRate = 1e-3, long Seed = 0)
{
    public TrainerConfig Trainer(string outDir) => new()
    {
        Steps = Steps,
        LearningRate = LearningRate,
        WarmupSteps = Math.Min(30, Steps / 10),
        MinLrRatio = 0.1,
        WeightDecay = 0.0,
        ClipNorm = 1.0,
        LogEvery = Math.Max(1, Steps / 5),
        CheckpointEvery = 0,
        Seed = Seed,
        OutDir = outDir,
        ProgressBar = false,
    };

    /// <summary>A batch of training indices for an update, a pure function of (seed, step), all with one prompt length.</summary>
    public int[] BatchIndices(IReadOnlyList<int[]> groups, long step)
    {
        var rng = new Random(unchecked((int)Seeds.For(Seed, step)));
        // Groups are drawn in proportion to their size, rows uniformly inside the group.
        int total = groups.Sum(g => g.Length), pick = rng.Next(total);
        var g = groups.First(x => (pick -= x.Length) < 0);
        return Enumerable.Range(0, Math.Min(BatchSize, g.Length)).Select(_ => g[rng.Next(g.Length)]).ToArray();
    }

    /// <summary>Approximate training compute: forward + backward ≈ 3 forwards per token.</summary>
    public double Flops(TransformerConfig c, double seqLen) => 3.0 * Steps * BatchSize * ArmsCommon.AnswerFlops(c, seqLen);

    /// <summary>Trains an arm's parameters on this budget through the one trainer; the arm keeps the trained module.</summary>
    public TrainResult Run(string arm, ITrainable trainable, string outDir, TextWriter? log) =>
        new TrainingPhase(arm, Trainer(outDir)).Run(trainable, save: null, modelDir: null, log ?? TextWriter.Null).Train;
}

/// <summary>
/// What a trained arm learns from: the training samples whose teacher answer was verified, as the arm's prompt ++
/// that answer, grouped by prompt length so that a batch needs no padding inside the prompt.
/// </summary>
public sealed record ArmExamples(IReadOnlyList<int> Samples, IReadOnlyList<(int[] Ids, int PromptLength)> Sequences, IReadOnlyList<int[]> Groups)
{
    public static ArmExamples Of(string arm, TraceFormat fmt, IReadOnlyList<TraceSample> train, Func<TaskProblem, int[]> prompt)
    {
        var usable = Enumerable.Range(0, train.Count).Where(i => train[i].Verified && train[i].TeacherAnswer is not null).ToList();
        if (usable.Count == 0) throw new ArgumentException($"{arm}: no verified teacher answer among the training samples");
        var seqs = usable.Select(i =>
        {
            var p = prompt(train[i].Problem);
            return (p.Concat(ArmsCommon.AnswerIds(fmt, train[i].TeacherAnswer!)).ToArray(), p.Length);
        }).ToList();
        var groups = Enumerable.Range(0, seqs.Count).GroupBy(j => seqs[j].Length).Select(g => g.ToArray()).ToList();
        return new(usable, seqs, groups);
    }

    /// <summary>The rows of update <paramref name="step"/> (indices into <see cref="Sequences"/>, one prompt length).</summary>
    public int[] Draw(ArmTraining budget, long step) => budget.BatchIndices(Groups, step);

    /// <summary>The teacher-forced batch of those rows (targets on the answer only).</summary>
    public (Tensor Ids, Tensor Targets, Tensor Mask, long LossTokens) Batch(TraceFormat fmt, int[] rows) => fmt.Batch(rows.Select(j => Sequences[j]).ToList());

    /// <summary>Where those rows came from in the training samples (to pick their states).</summary>
    public List<int> SampleIndices(int[] rows) => rows.Select(j => Samples[j]).ToList();
}

/// <summary>Arm 1: the teacher's own explicit thinking (prompt, full trace, answer).</summary>
public static class ThinkingArm
{
    public static ArmAnswers Answer(DecoderLM teacher, TraceFormat fmt, IReadOnlyList<TaskProblem> problems, int batchSize = 128) =>
        PromptArm.Answer(teacher, fmt, problems, p => fmt.PromptIds(p, true), thinking: true, batchSize);
}

/// <summary>Arm 2: the teacher asked for the answer directly (&lt;direct&gt; mode), no thinking.</summary>
public static class DirectArm
{
    public static ArmAnswers Answer(DecoderLM model, TraceFormat fmt, IReadOnlyList<TaskProblem> problems, int batchSize = 128) =>
        PromptArm.Answer(model, fmt, problems, p => fmt.PromptIds(p, false), thinking: false, batchSize);
}

/// <summary>Greedy answers from token prompts; token-steps = prompt + every sampled token (the stop token included).</summary>
public static class PromptArm
{
    public static ArmAnswers Answer(DecoderLM model, TraceFormat fmt, IReadOnlyList<TaskProblem> problems, Func<TaskProblem, int[]> prompt,
        bool thinking, int batchSize = 128)
    {
        // Direct answers get the answer's own budget; thinking, the teacher's (reference trace + slack).
        var graded = TeacherEval.Grade(model, fmt, problems, thinking, batchSize, prompt,
            thinking ? null : chunk => ArmsCommon.MaxAnswerTokens(fmt, chunk));
        return new ArmAnswers(graded.Select(g => g.Answer).ToArray(), graded.Select(g => g.Correct).ToArray(),
            graded.Select(g => (double)(g.PromptTokens + g.Sampled)).ToArray());
    }
}

/// <summary>
/// Arm 3, the seed's key control: a student of the teacher's size (a copy of it) fine-tuned to answer directly,
/// on `prompt&lt;direct&gt;answer&lt;eos&gt;` with the teacher's own verified answers to the training problems. If a
/// latent shortcut cannot beat this, it compresses nothing that plain answer distillation does not.
/// </summary>
public static class DistillationBaseline
{
    public static DecoderLM Train(DecoderLM teacher, TraceFormat fmt, IReadOnlyList<TraceSample> train, ArmTraining budget,
        string outDir, TextWriter? log = null)
    {
        var examples = ArmExamples.Of("distillation", fmt, train, p => fmt.PromptIds(p, false));
        var student = ArmsCommon.CopyOf(teacher);
        student.train();
        var trainable = new Trainable(student, (step, micro) =>
        {
            var (ids, targets, mask, lossTokens) = examples.Batch(fmt, examples.Draw(budget, step));
            var dev = student.Device;
            using var output = student.Forward(ids.to(dev), attentionMask: mask.to(dev));
            var loss = nn.functional.cross_entropy(output.Logits!.view(-1, student.Config.VocabSize), targets.to(dev).view(-1), ignore_index: -100);
            return new TrainLoss(loss, lossTokens);
        });
        budget.Run("distillation", trainable, outDir, log);
        student.eval();
        return student;
    }
}
