using System.Diagnostics;
using LatentLab.IO;

namespace LatentLab.Tests;

/// <summary>The command line as a user runs it: a child process, its exit code, stdout and stderr.</summary>
public sealed class CliTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ll-cli").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    internal static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "LatentLab.Cli.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["CI"] = "true";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException(string.Join(" ", args)); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Fact]
    public void ModelCommandsWorkOnATinyModelFolder()
    {
        var model = Path.Combine(_dir, "tiny");
        var init = Cli("init-tiny", "--arch", "Qwen3ForCausalLM", "--out", model);
        Assert.True(init.Code == 0, init.Err);

        var inspect = Cli("inspect", model);
        Assert.Equal(0, inspect.Code);
        Assert.Contains("Qwen3ForCausalLM", inspect.Out);
        Assert.Contains("QK-norm", inspect.Out);
        Assert.Contains("intact (4 files checked)", inspect.Out);

        var tok = Cli("tokenize", model, "--text", "ab 1");
        Assert.Equal(0, tok.Code);
        var ids = System.Text.Json.JsonSerializer.Deserialize<int[]>(tok.Out)!;
        Assert.Equal(4, ids.Length);
        var back = Cli("tokenize", model, "--decode", string.Join(",", ids));
        Assert.Equal("ab 1", back.Out.TrimEnd('\n'));

        var gen = Cli("generate", model, "--prompt", "ab", "--max-new-tokens", "5", "--seed", "1", "--temperature", "0.7");
        Assert.True(gen.Code == 0, gen.Err);
        Assert.Contains("finish:", gen.Err);

        var states = Path.Combine(_dir, "states.safetensors");
        var hidden = Cli("hidden", model, "--tokens", "1,7,9,12", "--points", "blocks.-2.resid_post,logits", "--out", states);
        Assert.True(hidden.Code == 0, hidden.Err);
        using var st = SafetensorsFile.Open(states);
        Assert.Equal(new long[] { 4, 32 }, st.Info("blocks.-2.resid_post").Shape);
        Assert.Equal(SafeDType.F32, st.Info("logits").DType);
        Assert.Equal("[1,7,9,12]", st.Metadata["tokens"]);

        // One flipped bit in the weights: inspect names the file and fails, and loading refuses the folder.
        DamageKit.FlipBit(Path.Combine(model, "model.safetensors"), -3);
        var damaged = Cli("inspect", model);
        Assert.Equal(1, damaged.Code);
        Assert.Contains("damaged: model.safetensors is damaged", damaged.Out);
        var refused = Cli("generate", model, "--prompt", "ab", "--max-new-tokens", "2");
        Assert.NotEqual(0, refused.Code);
        Assert.Contains("model.safetensors is damaged", refused.Err);
    }

    [Fact]
    public void UserErrorsAreOneLineWithoutAStackTrace()
    {
        var missing = Cli("inspect", Path.Combine(_dir, "nope"));
        Assert.Equal(2, missing.Code);
        Assert.StartsWith("error:", missing.Err.Trim());
        Assert.Single(missing.Err.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", missing.Err);

        var model = Path.Combine(_dir, "tiny");
        Assert.Equal(0, Cli("init-tiny", "--arch", "LlamaForCausalLM", "--out", model).Code);
        File.Delete(Path.Combine(model, "tokenizer.json"));
        // A file removed on purpose is not damage: the rest still checks out (the table may wrap the line).
        var inspectNoTok = Cli("inspect", model);
        Assert.Equal(0, inspectNoTok.Code);
        Assert.Contains("listed but absent:", inspectNoTok.Out);
        var noTok = Cli("hidden", model, "--prompt", "hi", "--points", "embed", "--out", Path.Combine(_dir, "x.safetensors"));
        Assert.Equal(2, noTok.Code);
        Assert.Contains("no tokenizer.json", noTok.Err);
        // Raw ids still work without a tokenizer.
        Assert.Equal(0, Cli("hidden", model, "--tokens", "1,2", "--points", "embed", "--out", Path.Combine(_dir, "x.safetensors")).Code);

        var badPoint = Cli("hidden", model, "--tokens", "1,2", "--points", "blocks.7.resid_post", "--out", Path.Combine(_dir, "y.safetensors"));
        Assert.Equal(2, badPoint.Code);
        Assert.Contains("outside a model with 2 layers", badPoint.Err);

        var badTask = Cli("tasks", "sample", "--task", "nosuchtask");
        Assert.Equal(2, badTask.Code);
        Assert.Contains("addition", badTask.Err); // the error lists the known families

        // Both CFG sweeps check their rates before training anything.
        foreach (var experiment in new[] { "cfg-noise", "cfg-slips" })
        {
            var noZero = Cli("reasoner", "experiment", experiment, "--rates", "0.1,0.2", "--out", Path.Combine(_dir, experiment));
            Assert.Equal(2, noZero.Code);
            Assert.Contains("--rates must start with 0", noZero.Err);
            var bad = Cli("reasoner", "experiment", experiment, "--rates", "0,x", "--out", Path.Combine(_dir, experiment));
            Assert.Equal(2, bad.Code);
            Assert.Contains("'x' is not a rate", bad.Err);
            Assert.False(Directory.Exists(Path.Combine(_dir, experiment, "pretrain")));
        }
    }

    [Fact]
    public void TaskAndDataCommands()
    {
        var list = Cli("tasks", "list");
        Assert.Equal(0, list.Code);
        foreach (var f in new[] { "addition", "modchain", "dfa", "reach", "sort", "tree", "cfg" }) Assert.Contains(f, list.Out);

        var sample = Cli("tasks", "sample", "--task", "addition", "--n", "3", "--seed", "1", "--format", "jsonl");
        Assert.Equal(0, sample.Code);
        Assert.Equal(3, sample.Out.Trim().Split('\n').Length);
        Assert.Equal(sample.Out, Cli("tasks", "sample", "--task", "addition", "--n", "3", "--seed", "1", "--format", "jsonl").Out);

        var edit = Cli("tasks", "sample", "--task", "sort", "--n", "2", "--edit", "counterfactual");
        Assert.Equal(0, edit.Code);
        Assert.Contains("edited", edit.Out, StringComparison.OrdinalIgnoreCase);

        var fixture = Path.Combine(AppContext.BaseDirectory, "Fixtures", "data", "gsm8k_test_excerpt.jsonl");
        var check = Cli("data", "check", fixture, "--format", "gsm8k");
        Assert.True(check.Code == 0, check.Out + check.Err);
        Assert.Contains("40", check.Out);
    }
}
