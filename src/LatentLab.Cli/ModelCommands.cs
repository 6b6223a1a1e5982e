using System.CommandLine;
using System.Text.Json;
using LatentLab.Generation;
using LatentLab.Hooks;
using LatentLab.IO;
using LatentLab.Models;
using LatentLab.Tensors;
using LatentLab.Text;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.Cli;

/// <summary>`inspect`, `tokenize`, `generate`, `hidden`: the commands that work on any model folder.</summary>
public static class ModelCommands
{
    public static IEnumerable<Command> Create() => new[] { Inspect(), Tokenize(), Generate(), Hidden() };

    static Argument<string> DirArgument() => new("dir") { Description = "a Hugging Face model folder (config.json + *.safetensors [+ tokenizer.json])" };

    static ITokenizer RequireTokenizer(string dir, string why) =>
        TokenizerLoader.TryLoadFromDirectory(dir)
        ?? throw new UserError($"{dir} has no tokenizer.json, so {why}; pass --tokens with raw ids instead");

    static Command Inspect()
    {
        var dir = DirArgument();
        var hookList = new Option<bool>("--hooks") { Description = "also list every hook point, in LatentLab's and TransformerLens's spelling" };
        var cmd = new Command("inspect", "Show a model folder's architecture, parameter count, weight dtypes, tokenizer and whether its files are intact") { dir, hookList };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var path = pr.GetValue(dir)!;
            // First, so that a damaged file is named even when the damage makes the weights unreadable.
            var integrity = ChecksumManifest.Verify(path);
            if (integrity.State == Integrity.Damaged) AnsiConsole.MarkupLine(Markup.Escape($"integrity: {integrity.Describe()}"));
            var cfg = TransformerConfig.FromHuggingFace(path);
            using var weights = SafetensorsCheckpoint.Open(path);
            var dtypes = weights.Names.GroupBy(n => weights.Info(n).DType).Select(g => $"{g.Key}×{g.Count()}");
            long stored = weights.Names.Sum(n => weights.Info(n).ElementCount);
            var table = new Table().AddColumns("field", "value").HideHeaders();
            void Row(string k, object? v) => table.AddRow(Markup.Escape(k), Markup.Escape(v?.ToString() ?? "-"));
            Row("architecture", cfg.Architecture);
            Row("layers × hidden", $"{cfg.NumLayers} × {cfg.HiddenSize}");
            Row("heads / kv heads / head_dim", $"{cfg.NumHeads} / {cfg.NumKvHeads} / {cfg.HeadDim}");
            Row("ffn", $"{cfg.IntermediateSize} ({cfg.Activation})");
            Row("norm", $"{cfg.Norm}{(cfg.SandwichNorm ? " (sandwich)" : "")}{(cfg.QkNorm ? " + QK-norm" : "")}, eps {cfg.NormEps}");
            Row("rope", $"theta {cfg.RopeTheta}{(cfg.RopeLocalTheta is { } l ? $", local {l}" : "")}, scaling {cfg.RopeScaling.Kind}{(cfg.RopeScaling.Kind != RopeScalingKind.None ? $" ×{cfg.RopeScaling.Factor}" : "")}");
            Row("sliding window", cfg.SlidingWindow is { } w ? $"{w} on {cfg.SlidingLayers!.Count(s => s)} of {cfg.NumLayers} layers" : "none");
            Row("soft-capping", cfg.AttnSoftcap is null && cfg.FinalSoftcap is null ? "none" : $"attention {cfg.AttnSoftcap}, final {cfg.FinalSoftcap}");
            Row("embeddings", $"vocab {cfg.VocabSize}, {(cfg.TieEmbeddings ? "tied" : "separate lm_head")}{(cfg.ScaleEmbeddings ? ", ×sqrt(d)" : "")}");
            Row("parameters (stored)", $"{stored:N0} in {weights.Names.Count} tensors");
            Row("weight dtypes", string.Join(", ", dtypes));
            Row("weight files", string.Join(", ", weights.Files.Select(Path.GetFileName)));
            Row("integrity", integrity.Describe());
            Row("config hash", cfg.Hash());
            var tok = TokenizerLoader.TryLoadFromDirectory(path);
            Row("tokenizer", tok is null ? "none (commands that need text will say so)" : $"{tok.VocabSize} ids, bos {tok.BosId}, eos {tok.EosId}, pad {tok.PadId}, hash {tok.Hash[..16]}");
            Row("chat format", tok is null ? "-" : ChatFormat.Detect(path).Family.ToString());
            AnsiConsole.Write(table);
            if (pr.GetValue(hookList))
            {
                var hooks = new Table().AddColumns("hook point", "TransformerLens");
                foreach (var (p, tl) in LatentLab.Hooks.HookPoint.All(cfg.NumLayers)) hooks.AddRow(Markup.Escape(p.ToString()), Markup.Escape(tl));
                AnsiConsole.Write(hooks);
            }
            return integrity.State == Integrity.Damaged ? 1 : 0;
        }));
        return cmd;
    }

    static Command Tokenize()
    {
        var dir = DirArgument();
        var text = new Option<string?>("--text") { Description = "text to encode" };
        var decode = new Option<string?>("--decode") { Description = "comma-separated ids to decode back to text" };
        var special = new Option<bool>("--add-special") { Description = "apply the tokenizer's post-processor (e.g. Gemma's <bos>)" };
        var cmd = new Command("tokenize", "Encode text to ids (JSON array) or decode ids to text") { dir, text, decode, special };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var path = pr.GetValue(dir)!;
            var tok = RequireTokenizer(path, "it cannot tokenize");
            if (pr.GetValue(decode) is { } ids) Console.WriteLine(tok.Decode(CliSupport.ParseIds(ids)));
            else if (pr.GetValue(text) is { } t) Console.WriteLine(JsonSerializer.Serialize(tok.Encode(t, pr.GetValue(special))));
            else throw new UserError("give --text to encode or --decode to decode");
            return 0;
        }));
        return cmd;
    }

    static Command Generate()
    {
        var dir = DirArgument();
        var prompt = new Option<string>("--prompt") { Description = "prompt text", Required = true };
        var chat = new Option<bool>("--chat") { Description = "wrap the prompt in the model's chat template" };
        var thinking = new Option<bool>("--thinking") { Description = "with --chat: open a thinking block" };
        var maxNew = new Option<int>("--max-new-tokens") { DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.0 };
        var topK = new Option<int>("--top-k") { DefaultValueFactory = _ => 0 };
        var topP = new Option<double>("--top-p") { DefaultValueFactory = _ => 1.0 };
        var rep = new Option<double>("--repetition-penalty") { DefaultValueFactory = _ => 1.0 };
        var seed = new Option<long?>("--seed");
        var stop = new Option<string[]>("--stop") { Description = "stop string (repeatable)", AllowMultipleArgumentsPerToken = false };
        var device = CliSupport.DeviceOption();
        var dtype = CliSupport.DTypeOption();
        var cmd = new Command("generate", "Generate a continuation of a prompt")
            { dir, prompt, chat, thinking, maxNew, temperature, topK, topP, rep, seed, stop, device, dtype };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var path = pr.GetValue(dir)!;
            var tok = RequireTokenizer(path, "it cannot encode a prompt");
            using var model = Checkpoints.Load(path, TorchRuntime.ParseDType(pr.GetValue(dtype)!), TorchRuntime.ParseDevice(pr.GetValue(device)!));
            var text = pr.GetValue(prompt)!;
            if (pr.GetValue(chat)) text = ChatFormat.Detect(path).Prompt(text, pr.GetValue(thinking));
            var ids = tok.Encode(text, addSpecialTokens: true);
            var stops = model.Config.EosTokenIds.Concat(tok.EosId is { } e ? new[] { e } : Array.Empty<int>()).Distinct().ToList();
            var cfg = new GenerationConfig(pr.GetValue(maxNew), pr.GetValue(temperature), pr.GetValue(topK), pr.GetValue(topP),
                pr.GetValue(rep), stops, pr.GetValue(stop), pr.GetValue(seed));
            var result = new TextGenerator(model).Generate(new[] { ids }, cfg, x => tok.Decode(x));
            Console.WriteLine(tok.Decode(result.Tokens[0]));
            Console.Error.WriteLine($"[{result.Tokens[0].Length} tokens, finish: {result.Finish[0]}]");
            return 0;
        }));
        return cmd;
    }

    static Command Hidden()
    {
        var dir = DirArgument();
        var prompt = new Option<string?>("--prompt") { Description = "text to run (uses the folder's tokenizer)" };
        var tokens = new Option<string?>("--tokens") { Description = "raw comma-separated token ids (skips the tokenizer)" };
        var points = new Option<string>("--points") { Description = "hook points, comma-separated (e.g. blocks.-2.resid_post,logits)", Required = true };
        var positions = new Option<string>("--positions") { Description = "all, last, N, A:B or token=ID", DefaultValueFactory = _ => "all" };
        var output = new Option<string>("--out") { Description = "safetensors file to write", Required = true };
        var saveDtype = new Option<string>("--save-dtype") { Description = "dtype of the saved states", DefaultValueFactory = _ => "f32" };
        var special = new Option<bool>("--add-special") { Description = "apply the tokenizer's post-processor to --prompt" };
        var device = CliSupport.DeviceOption();
        var dtype = CliSupport.DTypeOption();
        var cmd = new Command("hidden", "Capture residual-stream states at named hook points and write them to safetensors")
            { dir, prompt, tokens, points, positions, output, saveDtype, special, device, dtype };
        cmd.SetAction(pr => CliSupport.Run(() =>
        {
            var path = pr.GetValue(dir)!;
            int[] ids = (pr.GetValue(prompt), pr.GetValue(tokens)) switch
            {
                (not null, not null) => throw new UserError("give --prompt or --tokens, not both"),
                (null, { } t) => CliSupport.ParseIds(t),
                ({ } p, null) => RequireTokenizer(path, "it cannot encode --prompt").Encode(p, pr.GetValue(special)),
                _ => throw new UserError("give --prompt or --tokens"),
            };
            var save = TorchRuntime.ParseDType(pr.GetValue(saveDtype)!);
            var at = Positions.Parse(pr.GetValue(positions)!);
            var names = pr.GetValue(points)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            foreach (var n in names) HookPoint.Parse(n);
            using var model = Checkpoints.Load(path, TorchRuntime.ParseDType(pr.GetValue(dtype)!), TorchRuntime.ParseDevice(pr.GetValue(device)!));
            if (ids.Any(i => i >= model.Config.VocabSize)) throw new UserError($"token id out of range for vocab size {model.Config.VocabSize}");
            var hooks = new HookSet(names.Select(n => HookSpec.Capture(n, at)));
            using var scope = NewDisposeScope();
            using var input = tensor(ids.Select(i => (long)i).ToArray(), device: model.Device).unsqueeze(0);
            using var _ = no_grad();
            using var outp = model.Forward(input, hooks: hooks, logits: names.Any(n => n == "logits") ? LogitsMode.All : LogitsMode.None);
            var tensors = names.Select(n => new KeyValuePair<string, Tensor>(n, outp.Capture(n).squeeze(0).to(save).cpu())).ToList();
            var meta = new Dictionary<string, string>
            {
                ["model"] = Path.GetFullPath(path),
                ["config_hash"] = model.Config.Hash(),
                ["tokens"] = JsonSerializer.Serialize(ids),
                ["positions"] = at.ToString(),
            };
            SafetensorsWriter.Write(pr.GetValue(output)!, tensors, meta);
            foreach (var (k, v) in tensors) Console.WriteLine($"{k}: [{string.Join(", ", v.shape)}] {TorchRuntime.DTypeName(v.dtype)}");
            Console.WriteLine($"wrote {pr.GetValue(output)}");
            return 0;
        }));
        return cmd;
    }
}
