using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using LatentLab.IO;
using LatentLab.Tensors;
using LatentLab.Training;
using static TorchSharp.torch;

namespace LatentLab.Tests;

/// <summary>
/// The resume guarantee, end to end: a training process killed for real (SIGKILL of the whole tree) and
/// restarted with the same command, in place or from a copy of its folder at another path, ends with exactly the
/// weights, optimiser state and EMA of an uninterrupted run.
/// </summary>
public sealed class TrainerResumeTests : IDisposable
{
    const string Steps = "30", CheckpointEvery = "5", Accumulation = "2";
    readonly string _dir = Directory.CreateTempSubdirectory("ll-resume").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>The child's build output sits next to ours: tests/LatentLab.TrainerChild/bin/&lt;config&gt;/&lt;tfm&gt;/.</summary>
    static string ChildDll()
    {
        var self = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string tfm = self.Name, configuration = self.Parent!.Name;
        var testsDir = self.Parent!.Parent!.Parent!.Parent!.FullName;
        var dll = Path.Combine(testsDir, "LatentLab.TrainerChild", "bin", configuration, tfm, "LatentLab.TrainerChild.dll");
        if (!File.Exists(dll))
            throw new FileNotFoundException($"trainer child not built at {dll} (the test project references it, so `dotnet build` should have built it)", dll);
        return dll;
    }

    static ProcessStartInfo Start(string outDir, string delayMs)
    {
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { ChildDll(), outDir, Steps, CheckpointEvery, delayMs, Accumulation }) psi.ArgumentList.Add(a);
        return psi;
    }

    /// <summary>Starts the child with stderr collected in the background (a full pipe would stall it).</summary>
    static Process Launch(string outDir, string delayMs, StringBuilder stderr)
    {
        var p = Process.Start(Start(outDir, delayMs))!;
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        p.BeginErrorReadLine();
        return p;
    }

    static string RunToEnd(string outDir, string delayMs)
    {
        var stderr = new StringBuilder();
        using var p = Launch(outDir, delayMs, stderr);
        var stdout = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(60_000), "child did not finish within a minute");
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"child exited with {p.ExitCode}\n{stdout}\n{stderr}");
        return stdout;
    }

    [Fact]
    public void KilledRunResumesToTheSameFinalWeightsAsAnUninterruptedOne()
    {
        string straight = Path.Combine(_dir, "straight"), killed = Path.Combine(_dir, "killed");
        var straightLog = RunToEnd(straight, "0");
        Assert.Contains("done step 30", straightLog);

        // Slow the steps down (sleeping after each update changes no numbers) so the kill lands mid-run.
        const string Delay = "40";
        var stderr = new StringBuilder();
        using (var p = Launch(killed, Delay, stderr))
        {
            var seen = new List<string>();
            string? line;
            while ((line = p.StandardOutput.ReadLine()) is not null)
            {
                seen.Add(line);
                if (line == "checkpoint step-000010") break;
            }
            Assert.True(line is not null, $"child ended before its second checkpoint:\n{string.Join("\n", seen)}\n{stderr}");
            Thread.Sleep(60); // into the next steps, between checkpoints
            Assert.False(p.HasExited, "child finished before it could be killed");
            p.Kill(entireProcessTree: true);
            Assert.True(p.WaitForExit(10_000));
        }
        var ckpts = Path.Combine(killed, "checkpoints");
        var atKill = RunCheckpoints.FindLatest(ckpts);
        Assert.NotNull(atKill);
        Assert.InRange(atKill!.Step, 10, 25);
        Assert.False(Directory.Exists(Path.Combine(ckpts, "step-000030")), "the killed run should not have finished");

        // A copy of the killed run in another folder (as run folders get moved between machines) resumes there too.
        string moved = Path.Combine(_dir, "elsewhere", "moved");
        DamageKit.CopyTree(killed, moved);

        var resumedLog = RunToEnd(killed, Delay);
        Assert.Contains($"resumed from {atKill.Path} (step {atKill.Step})", resumedLog);
        Assert.Contains("done step 30", resumedLog);
        var movedLog = RunToEnd(moved, "0");
        Assert.Contains($"(step {atKill.Step})", movedLog);

        // Bit for bit: every final state file is byte-identical, and the weights compare to exactly zero difference.
        string final = Path.Combine("checkpoints", "step-000030");
        foreach (var file in new[] { RunCheckpoints.ModelFile, RunCheckpoints.OptimizerFile, RunCheckpoints.ExtraFile, RunCheckpoints.RngFile })
            foreach (var resumed in new[] { killed, moved })
                Assert.True(File.ReadAllBytes(Path.Combine(straight, final, file)).SequenceEqual(File.ReadAllBytes(Path.Combine(resumed, final, file))),
                    $"{file} differs between the uninterrupted and the resumed run in {resumed}");
        TorchRuntime.Initialize();
        using (var a = SafetensorsCheckpoint.Open(Path.Combine(straight, final, RunCheckpoints.ModelFile)))
        using (var b = SafetensorsCheckpoint.Open(Path.Combine(killed, final, RunCheckpoints.ModelFile)))
        {
            Assert.Equal(a.Names, b.Names);
            foreach (var name in a.Names)
            {
                using var scope = NewDisposeScope();
                Assert.Equal(0f, (a.Read(name) - b.Read(name)).abs().max().item<float>());
            }
        }

        // The resumed metrics.jsonl reads like the uninterrupted one: same steps, same losses, no duplicates.
        static List<(long, double, double)> Losses(string dir) =>
            Jsonl.ReadAll<JsonObject>(Path.Combine(dir, "metrics.jsonl")).Select(r => ((long)r["step"]!, (double)r["loss"]!, (double)r["grad_norm"]!)).ToList();
        Assert.Equal(Losses(straight), Losses(killed));
    }
}
