using LatentLab.Latents;
using LatentLab.Models;
using LatentLab.Teacher;
using LatentLab.Training;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>
/// A KV-prefix predictor built from the teacher's own layers: a LoRA copy of the teacher reads prompt ++ k slot tokens
/// (no thought) and its keys and values at the slots, at every layer, are the prediction. The frozen teacher then
/// answers from its own prompt cache ++ these slots ++ &lt;/think&gt;, so everything after the slots is the teacher's
/// unchanged computation: the student only has to write the compressed state the teacher reads.
/// The slots sit at positions promptLength … promptLength+k−1 in both (the bottleneck layout numbers them as if the
/// thought were absent), so the keys' RoPE phases match the teacher's. Trained on the arms' shared budget with
/// answer CE through the frozen teacher + λ·<see cref="RelativeError"/> to the true slot cache.
/// </summary>
public sealed class KvPrefixStudent : IDisposable
{
    public DecoderLM Model { get; }
    public int Slots { get; }
    readonly int slotId;

    KvPrefixStudent(DecoderLM model, int slots, int slotId) => (Model, Slots, this.slotId) = (model, slots, slotId);

    /// <summary>The student before training: an exact copy of the teacher, so its slots are the teacher's own on prompt ++ slots with no thought.</summary>
    public static KvPrefixStudent Untrained(DecoderLM teacher, TraceFormat fmt)
    {
        if (fmt.Slots == 0) throw new NotSupportedException($"{fmt}: the KV-prefix arm needs a teacher trained on bottleneck traces (teacher train --bottleneck k)");
        var model = ArmsCommon.CopyOf(teacher);
        model.eval();
        return new KvPrefixStudent(model, fmt.Slots, fmt.SlotId!.Value);
    }

    /// <summary>Forward FLOPs this predictor adds to an answer of a <paramref name="promptLength"/>-token prompt: the student's prompt ++ slots.</summary>
    public double Flops(double promptLength) => ArmsCommon.AnswerFlops(Model.Config, promptLength + Slots);

    /// <summary>Per-layer slot keys and values [N, kv_heads, k, head_dim] (float32, CPU, no gradient) for prompts (with their &lt;bos&gt;, thinking mode).</summary>
    public IReadOnlyList<(Tensor Keys, Tensor Values)> Predict(IReadOnlyList<int[]> prompts, int batchSize = 128)
    {
        int layers = Model.Config.NumLayers;
        return KvPrefixInjection.Gather(prompts.Count, ArmsCommon.LengthBatches(prompts, batchSize), idx =>
        {
            int p = prompts[idx[0]].Length;
            var ids = tensor(idx.SelectMany(i => prompts[i].Concat(Enumerable.Repeat(slotId, Slots)).Select(x => (long)x)).ToArray())
                .view(idx.Length, p + Slots).to(Model.Device);
            var cache = new KvCache(layers);
            Model.Forward(ids, cache: cache, logits: LogitsMode.None).Dispose();
            return (cache, p, Slots);
        }, ScalarType.Float32);
    }

    /// <param name="slotTrain">The teacher's own slot cache of the training samples (the MSE target), as <see cref="KvPrefixInjection.SlotCache"/> gives it.</param>
    public static KvPrefixStudent Train(DecoderLM teacher, TraceFormat fmt, IReadOnlyList<TraceSample> train,
        IReadOnlyList<(Tensor Keys, Tensor Values)> slotTrain, ArmTraining budget, int rank, double lambda, string outDir, TextWriter? log = null)
    {
        if (fmt.Slots == 0) throw new NotSupportedException($"{fmt}: the KV-prefix arm needs a teacher trained on bottleneck traces (teacher train --bottleneck k)");
        if (lambda < 0) throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "the cache-matching weight must be ≥ 0");
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, "the LoRA rank must be ≥ 1");
        int k = fmt.Slots, layers = teacher.Config.NumLayers;
        var examples = ArmExamples.Of("kv-prefix student", fmt, train, p => ArmsCommon.ShortcutPrompt(fmt, p));
        var model = ArmsCommon.CopyOf(teacher);
        Lora.Attach(model, new LoraConfig(rank, 2.0 * rank, TargetModules: LoraStudent.AllProjections));
        model.train();
        var restore = ArmsCommon.Freeze(teacher);
        try
        {
            var trainable = new Trainable(model, (step, micro) =>
            {
                var rows = examples.Draw(budget, step);
                var (ids, targets, mask, lossTokens) = examples.Batch(fmt, rows);
                var dev = teacher.Device;
                int p = examples.Sequences[rows[0]].PromptLength - k - 1;
                ids = ids.to(dev);
                // The student's cache over prompt ++ slots, graph kept: its slot entries are the prediction.
                using var studentCache = new KvCache(layers, keepGraph: true);
                model.Forward(ids.narrow(1, 0, p + k), cache: studentCache, logits: LogitsMode.None).Dispose();
                var slots = Enumerable.Range(0, layers)
                    .Select(l => (studentCache.Keys(l)!.narrow(2, p, k), studentCache.Values(l)!.narrow(2, p, k))).ToList();
                var sample = examples.SampleIndices(rows);
                var mse = RelativeError(slots, slotTrain.Select(x => (ArmsCommon.Rows(x.Keys, sample).to(dev), ArmsCommon.Rows(x.Values, sample).to(dev))).ToList());
                var ce = KvPrefixTraining.AnswerLoss(teacher, ids, targets.to(dev), mask.to(dev), p, slots);
                return new TrainLoss(ce + lambda * mse, lossTokens);
            });
            budget.Run("kv-prefix student", trainable, outDir, log);
        }
        finally { restore(); }
        Lora.Merge(model);
        model.eval();
        return new KvPrefixStudent(model, k, fmt.SlotId!.Value);
    }

    /// <summary>
    /// The cache-matching term: mean over layers and over keys/values of ‖pred − true‖² / ‖true‖² (a relative squared
    /// error per block, like the LoRA arm's, so no block weighs more for its norm, and slot entries that are nearly
    /// the same for every problem, such as the first layer's, do not blow up as a per-element standardisation makes them).
    /// </summary>
    public static Tensor RelativeError(IReadOnlyList<(Tensor Keys, Tensor Values)> predicted, IReadOnlyList<(Tensor Keys, Tensor Values)> truth)
    {
        if (predicted.Count != truth.Count) throw new ArgumentException($"kv-prefix student: {predicted.Count} predicted layers against {truth.Count} true ones");
        var parts = predicted.Zip(truth).SelectMany(x => new[] { (x.First.Keys, x.Second.Keys), (x.First.Values, x.Second.Values) })
            .Select(x =>
            {
                var t = x.Item2.to(ScalarType.Float32).to(x.Item1.device);
                return (x.Item1.to(ScalarType.Float32) - t).square().mean() / (t.square().mean() + 1e-8);
            }).ToList();
        return stack(parts).mean();
    }

    public void Dispose() => Model.Dispose();
}
