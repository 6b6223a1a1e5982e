using System.CommandLine;
using LatentLab.Models;
using LatentLab.Tensors;
using LatentLab.Text;

namespace LatentLab.Cli;

/// <summary>`init-tiny`: a random tiny model folder of any supported family, to try every command without downloads.</summary>
public static class ToolCommands
{
    public static IEnumerable<Command> Create() => new[] { InitTiny() };

    static Command InitTiny()
    {
        var arch = new Option<string>("--arch")
        {
            Description = "LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM or Gemma3ForCausalLM",
            DefaultValueFactory = _ => "Qwen3ForCausalLM",
        };
        var output = new Option<string>("--out") { Description = "folder to create", Required = true };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0 };
        var cmd = new Command("init-tiny", "Write a tiny random model (HF layout, character tokenizer) for plumbing checks") { arch, output, seed };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var dir = pr.GetValue(output)!;
            var tok = CharTokenizer.Create("abcdefghijklmnopqrstuvwxyz0123456789 +-*/=.,:;?!()'\n");
            TorchRuntime.Seed(pr.GetValue(seed));
            var cfg = TinyModels.Config(pr.GetValue(arch)!, tok.VocabSize) with
            {
                BosTokenId = tok.BosId, EosTokenIds = new[] { tok.EosId!.Value }, PadTokenId = tok.PadId,
            };
            using var model = new DecoderLM(cfg);
            Checkpoints.Save(model, dir);
            tok.Save(dir);
            Checkpoints.Seal(dir);
            Console.WriteLine($"wrote a random {cfg.Architecture} ({model.ParameterCount():N0} parameters) to {dir}");
            return 0;
        }));
        return cmd;
    }
}
