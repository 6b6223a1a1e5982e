using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>Maps pre-thinking states to predicted post-thinking states: [B, D] → [B, K, D].</summary>
public interface ILatentPredictor
{
    int K { get; }
    Tensor Predict(Tensor pre);
}
