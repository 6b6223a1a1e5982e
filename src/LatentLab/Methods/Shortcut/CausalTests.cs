using LatentLab.Evaluation;
using LatentLab.Tasks;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>
/// The latents Phase 3 hands an arm for a problem list: h_pre [N, D] (what a predictor reads, the KV-prefix arm's
/// input), the Phase-1 predictor's ĥ_post [N, K, D] (what the soft-token and residual-delta arms inject) and the hook
/// point's states at every prompt position (the prompt-reading KV arm's input; null where no arm reads them) and the
/// prompts' token ids (the KV-prefix student's input). An intervention swaps them all for the twin's.
/// </summary>
public sealed record ArmLatents(Tensor Pre, Tensor Hat, KvInput? Prompt, IReadOnlyList<int[]>? PromptIds = null) : IDisposable
{
    public ArmLatents Rows(IReadOnlyList<int> idx) =>
        new(ArmsCommon.Rows(Pre, idx), ArmsCommon.Rows(Hat, idx), Prompt?.Rows(idx), PromptIds is null ? null : idx.Select(i => PromptIds[i]).ToList());

    public void Dispose()
    {
        Pre.Dispose();
        Hat.Dispose();
        Prompt?.Dispose();
    }
}

/// <summary>
/// An arm as Phase 3 sees it: answers a problem list, given the latents for those problems (ignored by arms that use none).
/// </summary>
public sealed record ShortcutArm(string Name, bool UsesLatent, Func<IReadOnlyList<TaskProblem>, ArmLatents, ArmAnswers> Answer);

/// <summary>Edit tests of one arm. Counterfactual success: the answer to the twin is the twin's (correct) answer and differs
/// from the arm's answer to the original. Nuisance stability: the answer to the twin equals the answer to the original.</summary>
public sealed record EditResult(string Arm, Proportion CounterfactualSuccess, Proportion CounterfactualChanged, Proportion NuisanceStable,
    Proportion NuisanceCorrect, int NuisanceUnsupported);

/// <summary>Latent intervention: the original prompt, with the latent predicted for its counterfactual twin.
/// ToTwin: the output is exactly the twin's answer; Moved: it differs from the arm's own answer to the original;
/// Closer: it agrees with the twin's answer on more (right-aligned) digits than with the original answer.</summary>
public sealed record InterventionResult(string Arm, Proportion ToTwin, Proportion Moved, Proportion Closer);

/// <summary>Shallow baselines on the prompt's surface: a linear classifier per answer digit over character features,
/// and nearest-neighbour answer lookup (Hamming distance on aligned characters).</summary>
public sealed record LexicalResult(Proportion LinearPerDigit, Proportion NearestNeighbour)
{
    public Proportion Best => LinearPerDigit.Value >= NearestNeighbour.Value ? LinearPerDigit : NearestNeighbour;
}

/// <summary>Held-out accuracy of a linear classifier (on states and their squares) telling true h_post from predicted ĥ_post (50% = indistinguishable).</summary>
public sealed record SeparabilityResult(double HeldOutAccuracy, int TrainRows, int TestRows);

public static class CausalTests
{
    public static EditResult Edits(ShortcutArm arm, IReadOnlyList<TaskProblem> originals, ArmLatents hatOriginals, ArmAnswers originalAnswers,
        IReadOnlyList<TaskEdit> counterfactuals, ArmLatents hatCounterfactuals, IReadOnlyList<TaskEdit> nuisances, ArmLatents hatNuisances)
    {
        var cf = arm.Answer(counterfactuals.Select(e => e.Edited).ToList(), hatCounterfactuals);
        int success = 0, changed = 0;
        for (int i = 0; i < counterfactuals.Count; i++)
        {
            bool diff = cf.Answers[i] != originalAnswers.Answers[i];
            if (diff) changed++;
            if (diff && cf.Correct[i]) success++;
        }
        var supported = Enumerable.Range(0, nuisances.Count).Where(i => nuisances[i].Supported).ToList();
        int stable = 0, correct = 0;
        if (supported.Count > 0)
        {
            var nu = arm.Answer(supported.Select(i => nuisances[i].Edited).ToList(), hatNuisances.Rows(supported));
            for (int j = 0; j < supported.Count; j++)
            {
                if (nu.Answers[j] == originalAnswers.Answers[supported[j]]) stable++;
                if (nu.Correct[j]) correct++;
            }
        }
        return new EditResult(arm.Name, Proportion.Wilson(success, counterfactuals.Count), Proportion.Wilson(changed, counterfactuals.Count),
            Proportion.Wilson(stable, supported.Count), Proportion.Wilson(correct, supported.Count), nuisances.Count - supported.Count);
    }

    public static InterventionResult Intervention(ShortcutArm arm, IReadOnlyList<TaskProblem> originals, ArmAnswers originalAnswers,
        IReadOnlyList<TaskEdit> counterfactuals, ArmLatents hatCounterfactuals)
    {
        if (!arm.UsesLatent) throw new ArgumentException($"arm {arm.Name} uses no latent to intervene on");
        var swapped = arm.Answer(originals, hatCounterfactuals);
        int toTwin = 0, moved = 0, closer = 0;
        for (int i = 0; i < originals.Count; i++)
        {
            var a = swapped.Answers[i];
            string twin = counterfactuals[i].Edited.Answer, orig = originals[i].Answer;
            if (a == twin) toTwin++;
            if (a != originalAnswers.Answers[i]) moved++;
            if (a is not null && Agreement(a, twin) > Agreement(a, orig)) closer++;
        }
        int n = originals.Count;
        return new InterventionResult(arm.Name, Proportion.Wilson(toTwin, n), Proportion.Wilson(moved, n), Proportion.Wilson(closer, n));
    }

    /// <summary>Characters equal at the same place counted from the right (answers are numbers, so aligned at the units).</summary>
    public static int Agreement(string a, string b)
    {
        int n = 0;
        for (int i = 1; i <= Math.Min(a.Length, b.Length); i++) if (a[^i] == b[^i]) n++;
        return n;
    }

    // ---- shallow lexical baseline ----

    /// <summary>
    /// Features of a prompt: one-hot of the character at each place counted from the right (so operands of one length
    /// line up), a bag of characters and a bag of character bigrams. Linear in these, a classifier sees surface form only.
    /// </summary>
    static float[] Features(string prompt, IReadOnlyList<char> alphabet, int places)
    {
        int a = alphabet.Count;
        var f = new float[places * a + a + a * a];
        var index = alphabet.Select((c, i) => (c, i)).ToDictionary(x => x.c, x => x.i);
        for (int p = 0; p < Math.Min(places, prompt.Length); p++)
            if (index.TryGetValue(prompt[^(p + 1)], out var ci)) f[p * a + ci] = 1;
        for (int i = 0; i < prompt.Length; i++)
        {
            if (!index.TryGetValue(prompt[i], out var ci)) continue;
            f[places * a + ci] += 1;
            if (i + 1 < prompt.Length && index.TryGetValue(prompt[i + 1], out var cj)) f[places * a + a + ci * a + cj] += 1;
        }
        return f;
    }

    public static LexicalResult Lexical(IReadOnlyList<TaskProblem> train, IReadOnlyList<string> trainAnswers, IReadOnlyList<TaskProblem> test,
        Func<TaskProblem, string, bool> verify, int steps = 300, long seed = 0)
    {
        var alphabet = train.Concat(test).SelectMany(p => p.Prompt).Distinct().OrderBy(c => c).ToList();
        int places = train.Concat(test).Max(p => p.Prompt.Length);
        int slots = trainAnswers.Max(a => a.Length) + 1;
        var symbols = trainAnswers.SelectMany(a => a).Distinct().OrderBy(c => c).ToList();
        int classes = symbols.Count + 1; // + "no character at this place"
        float[][] xs(IReadOnlyList<TaskProblem> ps) => ps.Select(p => Features(p.Prompt, alphabet, places)).ToArray();
        var xTrain = xs(train);
        var xTest = xs(test);

        // Nearest neighbour on the aligned one-hot part (Hamming distance = squared distance on one-hots).
        int nnCorrect = 0;
        int aligned = places * alphabet.Count;
        using (var scope = NewDisposeScope())
        {
            var a = tensor(xTrain.SelectMany(r => r.Take(aligned)).ToArray()).view(xTrain.Length, aligned);
            var b = tensor(xTest.SelectMany(r => r.Take(aligned)).ToArray()).view(xTest.Length, aligned);
            var nearest = cdist(b, a).argmin(1).data<long>().ToArray();
            for (int i = 0; i < test.Count; i++) if (verify(test[i], trainAnswers[(int)nearest[i]])) nnCorrect++;
        }

        // One softmax regression per answer place (from the right).
        var labels = new long[train.Count * slots];
        for (int i = 0; i < train.Count; i++)
            for (int s = 0; s < slots; s++)
                labels[i * slots + s] = s < trainAnswers[i].Length ? symbols.IndexOf(trainAnswers[i][^(s + 1)]) : symbols.Count;
        int linCorrect = 0;
        using (var scope = NewDisposeScope())
        {
            torch.manual_seed(seed);
            int d = xTrain[0].Length;
            var x = tensor(xTrain.SelectMany(r => r).ToArray()).view(train.Count, d);
            var mu = x.mean(new long[] { 0 });
            var sd = x.std(0) + 1e-3;
            x = (x - mu) / sd;
            var y = tensor(labels).view(train.Count, slots);
            var w = new TorchSharp.Modules.Parameter(randn(d, slots * classes) * 0.01);
            var bias = new TorchSharp.Modules.Parameter(zeros(slots * classes));
            using var opt = optim.Adam(new[] { w, bias }, 0.05);
            for (int step = 0; step < steps; step++)
            {
                using var s2 = NewDisposeScope();
                opt.zero_grad();
                var logits = (x.matmul(w) + bias).view(train.Count * slots, classes);
                var loss = nn.functional.cross_entropy(logits, y.view(-1)) + 1e-4 * w.square().sum();
                loss.backward();
                opt.step();
            }
            using var _ = no_grad();
            var xt = (tensor(xTest.SelectMany(r => r).ToArray()).view(test.Count, d) - mu) / sd;
            var pred = (xt.matmul(w) + bias).view(test.Count, slots, classes).argmax(-1).data<long>().ToArray();
            for (int i = 0; i < test.Count; i++)
            {
                var chars = new List<char>();
                for (int s = slots - 1; s >= 0; s--)
                {
                    long c = pred[i * slots + s];
                    if (c < symbols.Count) chars.Add(symbols[(int)c]);
                }
                if (verify(test[i], new string(chars.ToArray()))) linCorrect++;
            }
        }
        return new LexicalResult(Proportion.Wilson(linCorrect, test.Count), Proportion.Wilson(nnCorrect, test.Count));
    }

    // ---- train/inference separability ----

    /// <summary>
    /// Logistic regression on standardised states and their squares: true h_post (label 1) against predicted ĥ_post (label 0) of the same
    /// problems; trained on even-numbered problems, scored on odd ones, so no problem is on both sides.
    /// </summary>
    public static SeparabilityResult Separability(Tensor post, Tensor hat, int steps = 300, long seed = 0)
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(seed);
        long n = post.shape[0];
        if (n < 4) throw new ArgumentException("separability needs at least 4 problems");
        // States and their squares: a mean-like prediction sits inside the cloud of true states, where no hyperplane
        // finds it, but its spread is wrong, which the squares expose.
        Tensor Features(Tensor t) { var x = t.reshape(n, -1).to(ScalarType.Float32).cpu(); return cat(new[] { x, x * x }, 1); }
        var real = Features(post);
        var fake = Features(hat);
        var even = arange(0, n, 2, dtype: ScalarType.Int64);
        var odd = arange(1, n, 2, dtype: ScalarType.Int64);
        (Tensor X, Tensor Y) Side(Tensor idx) =>
            (cat(new[] { real.index_select(0, idx), fake.index_select(0, idx) }, 0),
             cat(new[] { ones(idx.shape[0]), zeros(idx.shape[0]) }, 0));
        var (xtr, ytr) = Side(even);
        var (xte, yte) = Side(odd);
        var mu = xtr.mean(new long[] { 0 });
        var sd = xtr.std(0) + 1e-6;
        xtr = (xtr - mu) / sd;
        xte = (xte - mu) / sd;
        var w = new TorchSharp.Modules.Parameter(zeros(xtr.shape[1]));
        var b = new TorchSharp.Modules.Parameter(zeros(1));
        using var opt = optim.Adam(new[] { w, b }, 0.01);
        for (int step = 0; step < steps; step++)
        {
            using var s2 = NewDisposeScope();
            opt.zero_grad();
            var loss = nn.functional.binary_cross_entropy_with_logits(xtr.matmul(w) + b, ytr) + 1e-3 * w.square().sum();
            loss.backward();
            opt.step();
        }
        using var _ = no_grad();
        var acc = ((xte.matmul(w) + b > 0).to(ScalarType.Float32) == yte).to(ScalarType.Float32).mean().item<float>();
        return new SeparabilityResult(acc, (int)xtr.shape[0], (int)xte.shape[0]);
    }
}
