using System.Diagnostics;
using LatentLab.Latents;
using LatentLab.Evaluation;
using LatentLab.Models;
using LatentLab.Tasks;
using LatentLab.Teacher;
using static TorchSharp.torch;

namespace LatentLab.Methods.Shortcut;

/// <summary>
/// Phase 2 and 3 of the latent-shortcut study in one call: every arm on the same held-out problems (verified
/// accuracy, Wilson intervals, forward compute per answer), the injection-scale sweeps, the edit / intervention /
/// length tests, a shallow lexical baseline and the train-vs-inference separability of the states; writes
/// report.md, shortcut_eval.json and the plots into <c>outDir</c>.
/// </summary>
public static class ShortcutEvaluation
{
    public const string Thinking = "thinking", Direct = "direct", Distillation = "distillation", SoftTokens = "soft-tokens",
        ResidualDelta = "residual-delta", LoraArm = "lora-student", KvPrefix = "kv-prefix", KvPrefixPrompt = "kv-prefix-prompt",
        KvPrefixStudentArm = "kv-prefix-student";
    /// <summary>Suffixes of an arm's controls: the true latent injected (its ceiling) and the mean training latent (its floor).</summary>
    public const string Oracle = " oracle", Mean = " mean";

    /// <param name="preTrain">[N, D] h_pre of the training samples (in order).</param>
    /// <param name="postTrain">[N, K, D] (or [N, D]) h_post of the training samples.</param>
    public static ShortcutEvalReport Run(DecoderLM teacher, TraceFormat fmt, ILatentPredictor predictor,
        IReadOnlyList<TraceSample> train, Tensor preTrain, Tensor postTrain,
        IReadOnlyList<TraceSample> test, Tensor preTest, Tensor postTest,
        ShortcutEvalOptions o, string outDir, TextWriter? log = null, string? predictorName = null)
    {
        log ??= TextWriter.Null;
        Check(train, preTrain, postTrain, "train");
        Check(test, preTest, postTest, "test");
        Directory.CreateDirectory(outDir);
        // The trained arms start fresh every evaluation: the trainer would otherwise resume (or refuse) an old run there.
        foreach (var old in new[] { "train-distillation", "train-soft-tokens", "train-soft-tokens-oracle", "train-lora", "train-kv-prefix", "train-kv-prefix-prompt", "train-kv-prefix-student" }.Select(d => Path.Combine(outDir, d)))
            if (Directory.Exists(old)) Directory.Delete(old, true);
        var total = Stopwatch.StartNew();
        var c = teacher.Config;
        teacher.eval();
        postTrain = postTrain.dim() == 2 ? postTrain.unsqueeze(1) : postTrain;
        postTest = postTest.dim() == 2 ? postTest.unsqueeze(1) : postTest;
        string name = predictorName ?? predictor.GetType().Name;
        int k = predictor.K;
        var problems = test.Select(s => s.Problem).ToList();
        double predictorFlops = ArmsCommon.ModuleFlops(predictor);
        double projectionFlops = 2.0 * c.HiddenSize * c.HiddenSize * k;

        var hatTrain = ArmsCommon.PredictAll(predictor, preTrain);
        var hatTest = ArmsCommon.PredictAll(predictor, preTest);
        var budget = (double lr) => new ArmTraining(o.TrainSteps, o.TrainBatch, lr, o.Seed);
        int shortcutSeq = train[0].PromptIds.Length + ArmsCommon.ThinkEndIds(fmt, train[0].Problem).Length + (train[0].Problem.Answer.Length + 1);

        var arms = new List<Arm>();
        var sw = new Stopwatch();
        Arm Result(string arm, ArmRole role, string what, ArmAnswers a, double extraFlops, double trainFlops, string notes) =>
            Arm.Graded(arm, what, role, a.Correct, a.MeanTokenSteps, a.TokenSteps.Average(t => ArmsCommon.AnswerFlops(c, t)) + extraFlops,
                trainFlops, sw.Elapsed.TotalSeconds, notes);
        void Say(string s) => log.WriteLine($"[shortcut eval] {s} ({total.Elapsed.TotalSeconds:F0} s)");

        sw.Restart();
        var thinking = ThinkingArm.Answer(teacher, fmt, problems, o.EvalBatch);
        arms.Add(Result(Thinking, ArmRole.Reference, fmt.Slots > 0 ? $"teacher, thinking through its {fmt.Slots} bottleneck slots" : "teacher, explicit thinking trace",
            thinking, 0, 0, "the full trace: the compute to beat"));
        Say($"thinking {thinking.Accuracy}");

        sw.Restart();
        var direct = DirectArm.Answer(teacher, fmt, problems, o.EvalBatch);
        arms.Add(Result(Direct, ArmRole.Reference, "teacher, <direct> prompt", direct, 0, 0, "no thinking, no training"));
        Say($"direct {direct.Accuracy}");

        sw.Restart();
        using var student = DistillationBaseline.Train(teacher, fmt, train, budget(o.DistillLearningRate), Path.Combine(outDir, "train-distillation"), log);
        var distill = DirectArm.Answer(student, fmt, problems, o.EvalBatch);
        arms.Add(Result(Distillation, ArmRole.Reference, "teacher copy fine-tuned on prompt<direct>answer (teacher's verified answers)", distill, 0,
            budget(o.DistillLearningRate).Flops(c, shortcutSeq), $"{o.TrainSteps} steps × {o.TrainBatch}, full fine-tune"));
        Say($"distillation {distill.Accuracy}");

        bool kv = fmt.Slots > 0;
        using var hatMean = new MeanPredictor(postTrain).Predict(preTest);

        sw.Restart();
        var proj = SoftTokenInjection.Train(teacher, fmt, train, hatTrain, budget(o.ProjectionLearningRate), Path.Combine(outDir, "train-soft-tokens"), log);
        var softSweep = o.SoftScales.Select(s => (s, SoftTokenInjection.Answer(teacher, fmt, proj, problems, hatTest, s, o.EvalBatch))).ToList();
        var soft = softSweep.FirstOrDefault(x => x.s == 1.0).Item2 ?? SoftTokenInjection.Answer(teacher, fmt, proj, problems, hatTest, 1.0, o.EvalBatch);
        arms.Add(Result(SoftTokens, ArmRole.Method, $"prompt ++ proj(ĥ) ({k} soft token{(k > 1 ? "s" : "")}) ++ </think>, frozen teacher", soft,
            predictorFlops + projectionFlops, budget(o.ProjectionLearningRate).Flops(c, shortcutSeq + k),
            $"projection trained {o.TrainSteps} steps × {o.TrainBatch} (answer CE through the frozen teacher); scale 1"));
        Say($"soft tokens {soft.Accuracy}");

        // Controls of the soft-token arm: a projection trained on the true h_post, answering from the true h_post of the
        // test problems (its ceiling), and from the mean training h_post (its floor).
        sw.Restart();
        using var projOracle = SoftTokenInjection.Train(teacher, fmt, train, postTrain, budget(o.ProjectionLearningRate), Path.Combine(outDir, "train-soft-tokens-oracle"), log);
        var softOracle = SoftTokenInjection.Answer(teacher, fmt, projOracle, problems, postTest, 1.0, o.EvalBatch);
        arms.Add(Result(SoftTokens + Oracle, ArmRole.Reference, "soft tokens of the true h_post, projection trained on the true h_post", softOracle,
            projectionFlops, budget(o.ProjectionLearningRate).Flops(c, shortcutSeq + k), "the soft-token arm's ceiling: a perfect predictor"));
        sw.Restart();
        var softMean = SoftTokenInjection.Answer(teacher, fmt, projOracle, problems, hatMean, 1.0, o.EvalBatch);
        arms.Add(Result(SoftTokens + Mean, ArmRole.Reference, "soft tokens of the mean training h_post (the oracle's projection)", softMean,
            projectionFlops, 0, "the soft-token arm's floor: a predictor that ignores the problem"));
        Say($"soft tokens oracle {softOracle.Accuracy}, mean {softMean.Accuracy}");

        sw.Restart();
        var deltaSweep = ResidualDeltaInjection.Answer(teacher, fmt, o.Point, problems, hatTest, o.Alphas, o.EvalBatch);
        int one = Array.IndexOf(o.Alphas, 1.0);
        var delta = one >= 0 ? deltaSweep[one] : ResidualDeltaInjection.Answer(teacher, fmt, o.Point, problems, hatTest, new[] { 1.0 }, o.EvalBatch)[0];
        arms.Add(Result(ResidualDelta, ArmRole.Method, kv ? $"prompt ++ {k} slots ++ </think>, h ← h + α(ĥ − h) at {o.Point}, slot positions"
            : $"prompt ++ </think>, h ← h + α(ĥ − h) at {o.Point}, marker position", delta, predictorFlops, 0,
            "no training; α = 1 (replace)"));
        Say($"residual delta {delta.Accuracy}");

        // Controls of the delta arm on the same problems: the true h_post (its ceiling) and the mean training h_post (its floor).
        sw.Restart();
        var deltaOracle = ResidualDeltaInjection.Answer(teacher, fmt, o.Point, problems, postTest, new[] { 1.0 }, o.EvalBatch)[0];
        arms.Add(Result(ResidualDelta + Oracle, ArmRole.Reference, "residual delta with the true h_post (α = 1)", deltaOracle, 0, 0,
            "the delta arm's ceiling: a perfect predictor"));
        sw.Restart();
        var deltaMean = ResidualDeltaInjection.Answer(teacher, fmt, o.Point, problems, hatMean, new[] { 1.0 }, o.EvalBatch)[0];
        arms.Add(Result(ResidualDelta + Mean, ArmRole.Reference, "residual delta with the mean training h_post (α = 1)", deltaMean, 0, 0,
            "the delta arm's floor: a predictor that ignores the problem"));
        Say($"residual delta oracle {deltaOracle.Accuracy}, mean {deltaMean.Accuracy}");

        sw.Restart();
        using var lora = LoraStudent.Train(teacher, fmt, o.Point, train, postTrain, budget(o.LoraLearningRate), o.LoraRank, o.LoraLambda,
            Path.Combine(outDir, "train-lora"), log);
        var loraAnswers = LoraStudent.Answer(lora, fmt, problems, o.EvalBatch);
        arms.Add(Result(LoraArm, ArmRole.Reference, $"LoRA r={o.LoraRank} student on prompt ++ </think>, CE + {o.LoraLambda}·rel-MSE(h, h_post)", loraAnswers, 0,
            budget(o.LoraLearningRate).Flops(c, shortcutSeq), $"{o.TrainSteps} steps × {o.TrainBatch}; adapters merged, so no inference overhead; uses no predictor"));
        Say($"LoRA student {loraAnswers.Accuracy}");

        // The KV-prefix arm (bottleneck teachers): its oracle is the teacher's own slot cache, its floor the mean one.
        var controls = new Dictionary<string, (ArmAnswers Oracle, ArmAnswers Mean)>
        {
            [SoftTokens] = (softOracle, softMean), [ResidualDelta] = (deltaOracle, deltaMean),
        };
        var predicted = new Dictionary<string, ArmAnswers> { [SoftTokens] = soft, [ResidualDelta] = delta };
        // The predicted KV-prefix arms: from h_pre alone (the seed's q(h_pre)), from the prompt's states at every
        // position (the whole state before thinking), and from a LoRA copy of the teacher run over prompt ++ slots (a
        // predictor with the teacher's own layers). All share the oracle and mean controls.
        var kvPredictors = new Dictionary<string, Func<IReadOnlyList<TaskProblem>, ArmLatents, IReadOnlyList<(Tensor Keys, Tensor Values)>>>();
        var kvPredFlat = new Dictionary<string, Tensor>();
        var kvSweeps = new Dictionary<string, List<SweepPoint>>();
        Tensor? kvTestFlat = null;
        KvInput? promptTest = null; // the test prompts' states at every position (the prompt-reading arm's input, and Phase 3's)
        var kvModules = new List<IDisposable>(); // the trained KV predictors, disposed after Phase 3
        if (kv)
        {
            sw.Restart();
            var slotTest = KvPrefixInjection.SlotCache(teacher, fmt, test, o.EvalBatch);
            var kvOracle = KvPrefixInjection.Answer(teacher, fmt, problems, slotTest, o.EvalBatch);
            arms.Add(Result(KvPrefix + Oracle, ArmRole.Reference, $"prompt ++ the teacher's own cache at its {k} slots ++ </think>", kvOracle, 0, 0,
                "the KV-prefix arm's ceiling: the true slot keys/values at every layer, no thought tokens run"));
            sw.Restart();
            var slotTrain = KvPrefixInjection.SlotCache(teacher, fmt, train, o.EvalBatch);
            var meanSlots = KvPrefixInjection.Mean(slotTrain, problems.Count);
            var kvMean = KvPrefixInjection.Answer(teacher, fmt, problems, meanSlots, o.EvalBatch);
            arms.Add(Result(KvPrefix + Mean, ArmRole.Reference, "prompt ++ the mean training slot cache ++ </think>", kvMean, 0, 0,
                "the KV-prefix arm's floor: a prefix that ignores the problem"));
            Say($"kv-prefix oracle {kvOracle.Accuracy}, mean {kvMean.Accuracy}");
            kvTestFlat = KvPrefixPredictor.Flatten(slotTest);

            // One predicted KV arm on the test problems: its answers, its row, its scale sweep, its controls.
            void KvArm(string arm, string what, IReadOnlyList<(Tensor Keys, Tensor Values)> slotPred, double extraFlops, string notes,
                Func<IReadOnlyList<TaskProblem>, ArmLatents, IReadOnlyList<(Tensor Keys, Tensor Values)>> phase3)
            {
                var answers = KvPrefixInjection.Answer(teacher, fmt, problems, slotPred, o.EvalBatch);
                arms.Add(Result(arm, ArmRole.Method, $"prompt ++ {what}'s keys/values for the {k} slots at every layer ++ </think>", answers,
                    extraFlops, budget(o.KvLearningRate).Flops(c, shortcutSeq + k), notes));
                Say($"{arm} (predicted) {answers.Accuracy}");
                // Its scale sweep: the prediction's departure from the mean cache, scaled (1 = the prediction, 0 = the floor).
                var points = new List<SweepPoint>();
                foreach (var scale in o.SoftScales)
                {
                    if (scale == 1.0) { points.Add(new SweepPoint(scale, answers.Accuracy)); continue; }
                    var blend = KvPrefixInjection.Blend(meanSlots, slotPred, scale);
                    points.Add(new SweepPoint(scale, KvPrefixInjection.Answer(teacher, fmt, problems, blend, o.EvalBatch).Accuracy));
                    foreach (var (x, y) in blend) { x.Dispose(); y.Dispose(); }
                }
                kvSweeps[arm] = points;
                controls[arm] = (kvOracle, kvMean);
                predicted[arm] = answers;
                kvPredictors[arm] = phase3;
                kvPredFlat[arm] = KvPrefixPredictor.Flatten(slotPred);
                foreach (var (x, y) in slotPred) { x.Dispose(); y.Dispose(); }
            }

            using var promptTrain = KvInput.Prompts(teacher, train.Select(x => x.PromptIds).ToList(), o.Point, o.EvalBatch);
            promptTest = KvInput.Prompts(teacher, test.Select(x => x.PromptIds).ToList(), o.Point, o.EvalBatch);
            foreach (var (arm, input, testInput, what) in new[]
                     {
                         (KvPrefix, new KvInput(preTrain, null), new KvInput(preTest, null), "q(h_pre)"),
                         (KvPrefixPrompt, promptTrain, promptTest, "q(prompt states)"),
                     })
            {
                sw.Restart();
                var q = KvPrefixTraining.Train(teacher, fmt, train, input, slotTrain, budget(o.KvLearningRate), o.KvLambda,
                    Path.Combine(outDir, "train-" + arm), log);
                kvModules.Add(q);
                // Its input travels with the latents, so an intervention hands over the twin's prompt.
                KvArm(arm, what, q.Predict(testInput), ArmsCommon.ModuleFlops(q),
                    $"KV predictor ({(input.IsPrompt ? "slot queries attending over the prompt's states" : "MLP on h_pre")}) trained {o.TrainSteps} steps × {o.TrainBatch}: " +
                    $"answer CE through the frozen teacher + {o.KvLambda}·MSE to the true slot cache",
                    (ps, h) => q.Predict(q.ReadsPrompt ? h.Prompt! : new KvInput(h.Pre, null)));
            }

            sw.Restart();
            var kvStudent = KvPrefixStudent.Train(teacher, fmt, train, slotTrain, budget(o.LoraLearningRate), o.LoraRank, o.LoraLambda,
                Path.Combine(outDir, "train-" + KvPrefixStudentArm), log);
            kvModules.Add(kvStudent);
            KvArm(KvPrefixStudentArm, $"a LoRA r={o.LoraRank} copy of the teacher over prompt ++ slots", kvStudent.Predict(test.Select(x => x.PromptIds).ToList(), o.EvalBatch),
                test.Average(x => kvStudent.Flops(x.PromptIds.Length)),
                $"LoRA student of the teacher's layers trained {o.TrainSteps} steps × {o.TrainBatch}: answer CE through the frozen teacher + " +
                $"{o.LoraLambda}·rel-MSE to the true slot cache; the teacher answers from them unchanged",
                (ps, h) => kvStudent.Predict(h.PromptIds!, o.EvalBatch));
            foreach (var (x, y) in slotTest.Concat(slotTrain).Concat(meanSlots)) { x.Dispose(); y.Dispose(); }
        }
        else
            foreach (var arm in new[] { KvPrefix, KvPrefixPrompt, KvPrefixStudentArm })
                arms.Add(Arm.NotRun(arm, "predicted KV prefix", ArmRole.Method, "needs a teacher trained on bottleneck traces (teacher train --bottleneck k)"));
        var sweeps = new List<ScaleSweep>
        {
            new(ResidualDelta, "alpha", o.Alphas.Select((a, i) => new SweepPoint(a, deltaSweep[i].Accuracy)).ToList()),
            new(SoftTokens, "scale", softSweep.Select(x => new SweepPoint(x.s, x.Item2.Accuracy)).ToList()),
        };
        foreach (var (arm, points) in kvSweeps) sweeps.Add(new(arm, "scale of (prediction − mean cache)", points));

        // ---- Phase 3 ----
        var family = fmt.Family;
        int n3 = Math.Min(o.Phase3Problems, problems.Count);
        var idx3 = Enumerable.Range(0, n3).ToList();
        var orig = idx3.Select(i => problems[i]).ToList();
        var latOrig = new ArmLatents(ArmsCommon.Rows(preTest, idx3), ArmsCommon.Rows(hatTest, idx3), promptTest?.Rows(idx3),
            idx3.Select(i => test[i].PromptIds).ToList());
        var cfs = orig.Select((p, i) => family.Edit(p, EditKind.Counterfactual, o.Seed * 1_000_003 + i)).ToList();
        var nus = orig.Select((p, i) => family.Edit(p, EditKind.Nuisance, o.Seed * 1_000_003 + i)).ToList();
        // States of new problems (twins, longer ones) come through the latent store's one path and rule: h_pre at the
        // prompt for every problem (one forward gives it and the other prompt positions); h_post (for the oracle) from
        // the traces whose thinking closed, as Phase 0 reads them.
        ArmLatents LatentsFor(IReadOnlyList<TaskProblem> ps)
        {
            var ids = ps.Select(p => fmt.PromptIds(p, true)).ToList();
            var prompt = KvInput.Prompts(teacher, ids, o.Point, o.EvalBatch);
            var pre = prompt.LastStates();
            if (predictor is OraclePredictor oracle)
            {
                using var set = LatentExtraction.Samples(teacher, fmt.Tokenizer, fmt, ps,
                    new ExtractionOptions { Point = o.Point, K = k, BatchSize = o.EvalBatch });
                if (set.Samples.Count > 0) oracle.Register(set.Pre, set.Post);
            }
            return new ArmLatents(pre, ArmsCommon.PredictAll(predictor, pre), prompt, ids);
        }
        var latCf = LatentsFor(cfs.Select(e => e.Edited).ToList());
        var latNu = LatentsFor(nus.Select(e => e.Edited).ToList());

        var phase3Arms = new List<ShortcutArm>
        {
            new(Thinking, false, (ps, _) => ThinkingArm.Answer(teacher, fmt, ps, o.EvalBatch)),
            new(Direct, false, (ps, _) => DirectArm.Answer(teacher, fmt, ps, o.EvalBatch)),
            new(Distillation, false, (ps, _) => DirectArm.Answer(student, fmt, ps, o.EvalBatch)),
            new(SoftTokens, true, (ps, h) => SoftTokenInjection.Answer(teacher, fmt, proj, ps, h.Hat, 1.0, o.EvalBatch)),
            new(ResidualDelta, true, (ps, h) => ResidualDeltaInjection.Answer(teacher, fmt, o.Point, ps, h.Hat, new[] { 1.0 }, o.EvalBatch)[0]),
            new(LoraArm, false, (ps, _) => LoraStudent.Answer(lora, fmt, ps, o.EvalBatch)),
        };
        var mainAnswers = new Dictionary<string, ArmAnswers>
        {
            [Thinking] = thinking, [Direct] = direct, [Distillation] = distill, [SoftTokens] = soft, [ResidualDelta] = delta, [LoraArm] = loraAnswers,
        };
        foreach (var (arm, predict) in kvPredictors)
        {
            phase3Arms.Add(new(arm, true, (ps, h) =>
            {
                var slots = predict(ps, h);
                try { return KvPrefixInjection.Answer(teacher, fmt, ps, slots, o.EvalBatch); }
                finally { foreach (var (x, y) in slots) { x.Dispose(); y.Dispose(); } }
            }));
            mainAnswers[arm] = predicted[arm];
        }
        ArmAnswers Head(ArmAnswers a) => new(a.Answers.Take(n3).ToList(), a.Correct.Take(n3).ToList(), a.TokenSteps.Take(n3).ToList());

        var edits = phase3Arms.Select(a => CausalTests.Edits(a, orig, latOrig, Head(mainAnswers[a.Name]), cfs, latCf, nus, latNu)).ToList();
        var interventions = phase3Arms.Where(a => a.UsesLatent)
            .Select(a => CausalTests.Intervention(a, orig, Head(mainAnswers[a.Name]), cfs, latCf)).ToList();
        Say("edits and interventions done");

        var lengths = phase3Arms.Select(a => new LengthResult(a.Name, problems[0].Difficulty, 0, mainAnswers[a.Name].Accuracy)).ToList();
        int d0 = problems[0].Difficulty;
        for (int extra = 1; extra <= o.OodExtra && d0 + extra <= family.Difficulty.Max; extra++)
        {
            var longer = TaskSplits.Generate(family, Split.Test, n3, d0 + extra, o.Seed + 7919 * (d0 + extra));
            using var latLong = LatentsFor(longer);
            foreach (var a in phase3Arms) lengths.Add(new LengthResult(a.Name, d0 + extra, extra, a.Answer(longer, latLong).Accuracy));
        }
        Say("length sweep done");

        // The primary latent arm (the no-go table's): the most accurate predicted arm, ties going to the higher ceiling.
        string primary = o.PrimaryArm ?? predicted.Keys.OrderByDescending(a => predicted[a].Accuracy.Value)
            .ThenByDescending(a => controls[a].Oracle.Accuracy.Value).First();
        if (!predicted.ContainsKey(primary))
            throw new ArgumentException($"PrimaryArm must be one of {string.Join(", ", predicted.Keys.Select(x => $"'{x}'"))} (got '{primary}')");
        // The study's ceiling and floor are the primary arm's own controls: the true latent and the mean one through that arm.
        for (int i = 0; i < arms.Count; i++)
            if (arms[i].Name == primary + Oracle) arms[i] = arms[i] with { Role = ArmRole.Ceiling };
            else if (arms[i].Name == primary + Mean) arms[i] = arms[i] with { Role = ArmRole.Floor };

        var verifiedTrain = train.Where(s => s.Verified && s.TeacherAnswer is not null).ToList();
        var lexical = CausalTests.Lexical(verifiedTrain.Select(s => s.Problem).ToList(), verifiedTrain.Select(s => s.TeacherAnswer!).ToList(),
            problems, family.Verify, seed: o.Seed);
        // Separability of what the primary arm injects: the slot caches for the KV-prefix arm, the states otherwise.
        var separability = kvPredFlat.TryGetValue(primary, out var primaryFlat)
            ? CausalTests.Separability(kvTestFlat!, primaryFlat, seed: o.Seed)
            : CausalTests.Separability(postTest, hatTest, seed: o.Seed);
        Say($"lexical {lexical.Best}, separability {separability.HeldOutAccuracy:P1}");

        var pa = arms.First(a => a.Name == primary);
        var primarySweep = sweeps.First(s => s.Arm == primary);
        var noGo = new NoGoNumbers(primary, pa.Accuracy!.Value, distill.Accuracy, direct.Accuracy, thinking.Accuracy,
            Difference.Of(pa.Accuracy!.Value, distill.Accuracy), Difference.Of(pa.Accuracy!.Value, direct.Accuracy),
            edits.First(e => e.Arm == primary).CounterfactualSuccess, edits.First(e => e.Arm == primary).NuisanceStable,
            lexical.Best, separability.HeldOutAccuracy, interventions.First(i => i.Arm == primary).ToTwin,
            primarySweep.Fragility, pa.Flops, arms.First(a => a.Name == Thinking).Flops)
        {
            Ceiling = controls[primary].Oracle.Accuracy,
            CeilingArm = primary + Oracle,
            BestScaleAccuracy = primarySweep.Points.Max(p => p.Accuracy.Value),
            Floor = controls[primary].Mean.Accuracy,
        };

        foreach (var l in new[] { latOrig, latCf, latNu }) l.Dispose();
        promptTest?.Dispose();
        foreach (var q in kvModules) q.Dispose();
        foreach (var f in kvPredFlat.Values) f.Dispose();
        kvTestFlat?.Dispose();
        hatTrain.Dispose();
        hatTest.Dispose();
        proj.Dispose();
        var study = new Study($"shortcut ({name})", arms) { Sweeps = sweeps, Lengths = lengths };
        var report = new ShortcutEvalReport(name, o.Point, train.Count, test.Count, study, edits, interventions, lexical,
            separability, noGo, total.Elapsed.TotalSeconds, Array.Empty<string>());
        if (o.Plots)
            report = report with
            {
                Plots =
                [
                    StudyPlots.AccuracyVsCompute(study, Path.Combine(outDir, "accuracy_vs_flops.png"), $"Verified accuracy vs forward compute ({name})"),
                    StudyPlots.AccuracyVsKnob(study, Path.Combine(outDir, "accuracy_vs_scale.png"), "Accuracy vs injection scale",
                        "scale (α for the residual delta, multiplier for the soft tokens)"),
                    StudyPlots.AccuracyVsLength(study, Path.Combine(outDir, "accuracy_vs_length.png"), "Accuracy vs problem length (training length, then OOD)",
                        "difficulty (digits)"),
                ],
            };
        StudyFiles.Write(outDir, $"# Latent shortcut: injection arms and causal tests\n\n{report.ToMarkdown()}", report.ToJson(), "shortcut_eval.json");
        Say("report written");
        return report;
    }

    static void Check(IReadOnlyList<TraceSample> samples, Tensor pre, Tensor post, string what)
    {
        if (samples.Count == 0) throw new ArgumentException($"shortcut eval: no {what} samples");
        if (pre.dim() != 2 || pre.shape[0] != samples.Count)
            throw new ArgumentException($"shortcut eval: {what} pre states are [{string.Join(", ", pre.shape)}], expected [{samples.Count}, D]");
        if (post.shape[0] != samples.Count || post.dim() is not (2 or 3))
            throw new ArgumentException($"shortcut eval: {what} post states are [{string.Join(", ", post.shape)}], expected [{samples.Count}, K, D] or [{samples.Count}, D]");
    }
}
