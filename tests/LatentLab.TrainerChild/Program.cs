using System.Globalization;
using System.Text.Json.Nodes;
using LatentLab.Models;
using LatentLab.Tensors;
using LatentLab.Training;
using TorchSharp;
using static TorchSharp.torch;

// Usage: LatentLab.TrainerChild <outDir> [steps] [checkpointEvery] [stepDelayMs] [accumulation]
// Trains a tiny Llama-style DecoderLM on a deterministic synthetic task (next token of an arithmetic
// progression mod V), with EMA weights and random input corruption drawn from torch's global RNG, so
// an exact resume needs the weights, the optimiser, the EMA, the RNG state and the data position.
if (args.Length < 1)
{
    Console.Error.WriteLine("usage: LatentLab.TrainerChild <outDir> [steps] [checkpointEvery] [stepDelayMs] [accumulation]");
    return 2;
}
string outDir = args[0];
long steps = args.Length > 1 ? long.Parse(args[1], CultureInfo.InvariantCulture) : 30;
long ckptEvery = args.Length > 2 ? long.Parse(args[2], CultureInfo.InvariantCulture) : 5;
int delayMs = args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : 0;
int accum = args.Length > 4 ? int.Parse(args[4], CultureInfo.InvariantCulture) : 2;

// One thread: libtorch's CPU kernels then reduce in one fixed order, run after run.
TorchRuntime.Initialize(threads: 1);
const long Seed = 1234;
TorchRuntime.Seed(Seed);
var modelConfig = TinyModels.Config("LlamaForCausalLM");
using var model = new DecoderLM(modelConfig);
using var ema = new Ema(model);
var emaSchedule = new EmaSchedule(0.9, 0.99);
int vocab = modelConfig.VocabSize;
const int Batch = 4, Length = 16;

Tensor Sequences(long seed)
{
    // Pure function of the seed: start and stride drawn from a private generator.
    using var g = new Generator((ulong)seed);
    var start = randint(3, vocab, [Batch, 1], generator: g);
    var stride = randint(1, 5, [Batch, 1], generator: g);
    var pos = arange(Length, dtype: ScalarType.Int64).unsqueeze(0);
    return (start + stride * pos).remainder(vocab - 3) + 3;
}

TrainLoss Loss(long step, int micro)
{
    var seq = Sequences(Seeds.For(Seed, step, micro));
    var input = seq.narrow(1, 0, Length - 1);
    // Corrupt ~10% of the inputs with the global RNG: a resumed run must restore that RNG to match.
    var noise = rand(input.shape) < 0.1;
    input = where(noise, randint(3, vocab, input.shape), input);
    var target = seq.narrow(1, 1, Length - 1);
    var logits = model.Forward(input).Logits!;
    var loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), target.reshape(-1));
    return new TrainLoss(loss, input.numel());
}

var trainerConfig = new TrainerConfig
{
    Steps = steps, LearningRate = 3e-3, MinLrRatio = 0.1, WarmupSteps = 5, WeightDecay = 0.1,
    ClipNorm = 1.0, AccumulationSteps = accum, EvalEvery = 10, LogEvery = 5, CheckpointEvery = ckptEvery,
    KeepCheckpoints = 2, Seed = Seed, OutDir = outDir,
    // Left automatic: the tests redirect stdout, so they also check that the bar turns itself off.
    ProgressBar = null,
};
var trainable = new Trainable(model, Loss,
    afterStep: step =>
    {
        ema.Update(model, emaSchedule.At(step, steps));
        if (delayMs > 0) Thread.Sleep(delayMs);
    },
    extraState: () => ema.State());
var trainer = new Trainer(trainerConfig, new JsonObject { ["model"] = "tiny-llama", ["batch"] = Batch, ["length"] = Length })
{
    Evaluate = _ =>
    {
        var seq = Sequences(42);
        var logits = model.Forward(seq.narrow(1, 0, Length - 1)).Logits!;
        var acc = logits.argmax(-1).eq(seq.narrow(1, 1, Length - 1)).to(ScalarType.Float32).mean().item<float>();
        return new Dictionary<string, double> { ["accuracy"] = acc };
    },
};
var result = trainer.Run(trainable);
Console.WriteLine($"done step {result.Steps} loss {result.FinalLoss.ToString("R", CultureInfo.InvariantCulture)}");
return 0;
