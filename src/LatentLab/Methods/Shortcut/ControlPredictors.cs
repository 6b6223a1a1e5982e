using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>
/// The oracle arm's predictor: returns the true h_post of whichever known problem has this h_pre (nearest
/// neighbour in the registered pairs; exact for a registered state). Injecting the truth bounds what any
/// predictor can reach through an injection: if the oracle fails, a learned predictor will too.
/// </summary>
public sealed class OraclePredictor : ILatentPredictor
{
    readonly List<(Tensor Pre, Tensor Post)> _pairs = new();

    public OraclePredictor(Tensor pre, Tensor post) => Register(pre, post);

    public int K { get; private set; }

    /// <summary>Adds (pre [N, D], post [N, K, D] or [N, D]) pairs; copies are kept.</summary>
    public void Register(Tensor pre, Tensor post)
    {
        var p = post.dim() == 2 ? post.unsqueeze(1) : post;
        if (pre.shape[0] != p.shape[0]) throw new ArgumentException($"oracle: {pre.shape[0]} pre states but {p.shape[0]} post states");
        if (K != 0 && p.shape[1] != K) throw new ArgumentException($"oracle: post has K={p.shape[1]}, earlier pairs K={K}");
        K = (int)p.shape[1];
        _pairs.Add((pre.detach().to(ScalarType.Float32).cpu().clone().DetachFromDisposeScope(), p.detach().to(ScalarType.Float32).cpu().clone().DetachFromDisposeScope()));
    }

    public Tensor Predict(Tensor pre)
    {
        using var scope = NewDisposeScope();
        var q = pre.to(ScalarType.Float32).cpu();
        var allPre = cat(_pairs.Select(p => p.Pre).ToList(), 0);
        var allPost = cat(_pairs.Select(p => p.Post).ToList(), 0);
        var nearest = cdist(q, allPre).argmin(1);
        return allPost.index_select(0, nearest).to(pre.device).MoveToOuterDisposeScope();
    }
}

/// <summary>A predictor that ignores its input and returns the mean training h_post: the arm that must fail.</summary>
public sealed class MeanPredictor : ILatentPredictor
{
    readonly Tensor _mean; // [K, D]

    public MeanPredictor(Tensor postTrain)
    {
        var p = postTrain.dim() == 2 ? postTrain.unsqueeze(1) : postTrain;
        K = (int)p.shape[1];
        using var scope = NewDisposeScope();
        _mean = p.to(ScalarType.Float32).mean(new long[] { 0 }).cpu().DetachFromDisposeScope();
    }

    public int K { get; }

    public Tensor Predict(Tensor pre) => _mean.unsqueeze(0).expand(pre.shape[0], -1, -1).to(pre.device).clone();
}
