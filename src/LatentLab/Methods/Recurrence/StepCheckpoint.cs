using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Methods.Recurrence;

/// <summary>
/// Gradient checkpointing for one latent step, on TorchSharp's custom autograd function
/// (<c>torch.autograd.MultiTensorFunction</c>, which libtorch's C++ API has no equivalent of in TorchSharp's surface
/// otherwise). Call <c>apply(step, input₁, input₂, …)</c> with a pure function of the tensor inputs:
/// <list type="bullet">
/// <item>forward runs <c>step</c> without a graph, so none of the step's activations are kept; only its inputs are
/// saved (the mixed input and, in append mode, the past keys and values, which exist anyway);</item>
/// <item>backward re-runs <c>step</c> with gradients on detached copies of the inputs, back-propagates the incoming
/// output gradients through that fresh graph (a re-entrant backward, as PyTorch's reentrant checkpoint does), which
/// accumulates the parameters' gradients in place, and returns the inputs' gradients to the outer graph.</item>
/// </list>
/// The recomputation is the same arithmetic as the forward, so gradients equal those without checkpointing up to
/// the order in which float32 parameter gradients are summed. The step function must not draw random numbers
/// (latent steps use no dropout), or the recomputation would differ.
/// </summary>
public sealed class StepCheckpoint : autograd.MultiTensorFunction<StepCheckpoint>
{
    public override string Name => nameof(StepCheckpoint);

    public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var step = vars[0] as Func<Tensor[], Tensor[]> ?? throw new ArgumentException("StepCheckpoint.apply: the first argument must be the step function");
        var inputs = vars.Skip(1).Select(v => v as Tensor ?? throw new ArgumentException("StepCheckpoint.apply: every argument after the step function must be a tensor")).ToList();
        ctx.save_for_backward(inputs);
        ctx.save_data("step", step);
        return step(inputs.ToArray()).ToList();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> grads)
    {
        var step = (Func<Tensor[], Tensor[]>)ctx.get_data("step");
        var saved = ctx.get_saved_variables();
        var result = new List<Tensor> { null! }; // no gradient for the step function itself
        using (var scope = NewDisposeScope())
        using (enable_grad())
        {
            var leaves = saved.Select(t => t.detach().requires_grad_(true)).ToArray();
            var outs = step(leaves);
            // Seeding backward with the incoming gradients: the recomputed graph gets exactly ∂L/∂outputs.
            autograd.backward(outs, grads);
            foreach (var l in leaves)
                result.Add((l.grad is { } g ? g.clone() : zeros_like(l)).DetachFromDisposeScope());
        }
        return result;
    }
}
