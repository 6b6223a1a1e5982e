using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentLab.Training;

/// <summary>One micro-batch's mean loss (a scalar with a graph) and how many tokens it covered (for tokens/s).</summary>
public readonly record struct TrainLoss(Tensor Loss, long Tokens);

/// <summary>
/// What the trainer trains. The loop is the same for every method; a method supplies its module and a loss.
/// <see cref="Loss"/> must choose its data as a pure function of (seed, step, micro) — e.g. through
/// <see cref="Seeds.For"/> — so that a resumed run sees exactly the batches an uninterrupted one would.
/// </summary>
public interface ITrainable
{
    /// <summary>The module whose parameters (all of them, by their HF-style names) go into checkpoints.</summary>
    nn.Module Module { get; }

    /// <summary>The mean loss of micro-batch <paramref name="micro"/> of optimiser update <paramref name="step"/> (0-based).</summary>
    TrainLoss Loss(long step, int micro);

    /// <summary>What the optimiser updates; by default every parameter of <see cref="Module"/> that requires a gradient.</summary>
    IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() =>
        Module.named_parameters().Where(p => p.parameter.requires_grad);

    /// <summary>Runs after every optimiser update with its 0-based index (an EMA target update goes here).</summary>
    void AfterStep(long step) { }

    /// <summary>
    /// Extra tensors a resumed run needs besides the module's parameters and the optimiser (an EMA shadow, say).
    /// They are saved by name and restored in place (copy_), so return the live tensors.
    /// </summary>
    IEnumerable<(string Name, Tensor Tensor)> ExtraState() => [];

    /// <summary>
    /// Method-specific numbers for the row logged after update <paramref name="step"/> (0-based), called after
    /// <see cref="AfterStep"/>: a schedule's current value, per-component gradient norms. Logged to metrics.jsonl
    /// and TensorBoard beside loss and lr.
    /// </summary>
    IEnumerable<KeyValuePair<string, object>> StepMetrics(long step) => [];
}

/// <summary>An <see cref="ITrainable"/> from a module and a loss function, for callers that need no more.</summary>
public sealed class Trainable(nn.Module module, Func<long, int, TrainLoss> loss, Action<long>? afterStep = null,
    Func<IEnumerable<(string, Tensor)>>? extraState = null) : ITrainable
{
    public nn.Module Module => module;
    public TrainLoss Loss(long step, int micro) => loss(step, micro);
    public void AfterStep(long step) => afterStep?.Invoke(step);
    public IEnumerable<(string Name, Tensor Tensor)> ExtraState() => extraState?.Invoke() ?? [];
}
