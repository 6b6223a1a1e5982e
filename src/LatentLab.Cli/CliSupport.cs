using System.CommandLine;
using LatentLab.IO;
using Spectre.Console;

namespace LatentLab.Cli;

/// <summary>An error the user can fix; printed as one line, no stack trace.</summary>
public sealed class UserError(string message) : Exception(message);

/// <summary>Shared option builders and the error policy of every command.</summary>
public static class CliSupport
{
    public static Option<string> DeviceOption() => new("--device")
    {
        Description = "cpu or cuda[:N]",
        DefaultValueFactory = _ => "cpu",
    };

    public static Option<string> DTypeOption(string dflt = "f32") => new("--dtype")
    {
        Description = "compute dtype: f32, bf16 or f16",
        DefaultValueFactory = _ => dflt,
    };

    /// <summary>`--compute`: the activation dtype, by default measured on this machine (LatentLab.Tensors.ComputePolicy).</summary>
    public static Option<string> ComputeOption() => new("--compute")
    {
        Description = "activation dtype: auto (bf16 only where a short probe measures it ≥ 1.2× faster than f32 on this device), f32 or bf16",
        DefaultValueFactory = _ => "auto",
    };

    public static Option<int?> ThreadsOption() => new("--threads")
    {
        Description = "CPU threads for TorchSharp (default: all cores)",
    };

    /// <summary>
    /// Runs a command body: user mistakes (bad paths, malformed files, invalid arguments) become one red
    /// line on stderr and exit code 2; anything else is a bug and keeps its stack trace when LATENTLAB_DEBUG=1.
    /// </summary>
    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (IsUserError(e))
        {
            WriteError(e.Message);
            return 2;
        }
        catch (OperationCanceledException)
        {
            WriteError("cancelled");
            return 130;
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("LATENTLAB_DEBUG") != "1")
        {
            WriteError($"{e.GetType().Name}: {e.Message} (unexpected; set LATENTLAB_DEBUG=1 for the stack trace)");
            return 1;
        }
    }

    static bool IsUserError(Exception e) => e is UserError or ArgumentException or FileNotFoundException
        or DirectoryNotFoundException or InvalidDataException or SafetensorsFormatException or FormatException
        or KeyNotFoundException or NotSupportedException;

    public static void WriteError(string message)
    {
        var err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        err.MarkupLine($"[red]error:[/] {Markup.Escape(message)}");
    }

    /// <summary>A run folder that holds a `model/` (a teacher run) means that model; any other path is taken as the model folder.</summary>
    public static string ModelDir(string path) =>
        Directory.Exists(Path.Combine(path, "model")) ? Path.Combine(path, "model") : path;

    /// <summary>Parses "12,7,99" (spaces allowed) into token ids.</summary>
    public static int[] ParseIds(string text)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw new UserError("no token ids given");
        return parts.Select(p => int.TryParse(p, out var v) && v >= 0 ? v : throw new UserError($"'{p}' is not a token id")).ToArray();
    }
}
