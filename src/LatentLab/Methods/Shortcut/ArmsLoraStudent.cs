using LatentLab.Latents;
using LatentLab.Hooks;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using LatentLab.Training;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>
/// Arm 6: a LoRA student (a copy of the teacher with adapters on every projection) trained on prompt ++ &lt;/think&gt;
/// with loss = CE(answer) + λ·‖h − h_post‖² / mean(h_post²), where h is the student's state at the hook point at the
/// marker (its last token where the marker is several) and h_post the teacher's state there after real thinking
/// (relative MSE, so λ does not depend on the layer's norm). Adapters are merged after training; at test time it
/// answers from prompt ++ &lt;/think&gt; alone.
/// </summary>
public static class LoraStudent
{
    public static readonly string[] AllProjections = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" };

    public static DecoderLM Train(DecoderLM teacher, TraceFormat fmt, string point, IReadOnlyList<TraceSample> train, Tensor postTrain,
        ArmTraining budget, int rank, double lambda, string outDir, TextWriter? log = null)
    {
        var post = postTrain.dim() == 2 ? postTrain : postTrain.select(1, postTrain.shape[1] - 1);
        var examples = ArmExamples.Of("LoRA student", fmt, train, p => ArmsCommon.ShortcutPrompt(fmt, p));
        var student = ArmsCommon.CopyOf(teacher);
        Lora.Attach(student, new LoraConfig(rank, 2.0 * rank, TargetModules: AllProjections));
        student.train();
        var trainable = new Trainable(student, (step, micro) =>
        {
            var rows = examples.Draw(budget, step);
            var (ids, targets, mask, lossTokens) = examples.Batch(fmt, rows);
            var dev = student.Device;
            // The marker's last token, or on a bottleneck teacher the last slot (where the last post state is read).
            int pos = examples.Sequences[rows[0]].PromptLength - 1 - (fmt.Slots > 0 ? 1 : 0);
            var hooks = new HookSet(new[] { HookSpec.Capture(point, Positions.At(pos)) with { Detach = false } });
            using var output = student.Forward(ids.to(dev), attentionMask: mask.to(dev), hooks: hooks);
            var ce = nn.functional.cross_entropy(output.Logits!.view(-1, student.Config.VocabSize), targets.to(dev).view(-1), ignore_index: -100);
            var h = output.Capture(point).squeeze(1).to(ScalarType.Float32);
            var target = ArmsCommon.Rows(post, examples.SampleIndices(rows)).to(dev).to(ScalarType.Float32);
            var match = (h - target).square().mean() / (target.square().mean() + 1e-8);
            return new TrainLoss(ce + lambda * match, lossTokens);
        });
        budget.Run("LoRA student", trainable, outDir, log);
        Lora.Merge(student);
        student.eval();
        return student;
    }

    public static ArmAnswers Answer(DecoderLM student, TraceFormat fmt, IReadOnlyList<TaskProblem> problems, int batchSize = 128) =>
        PromptArm.Answer(student, fmt, problems, p => ArmsCommon.ShortcutPrompt(fmt, p), thinking: false, batchSize);
}
