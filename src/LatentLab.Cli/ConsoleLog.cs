using System.Text;
using LatentLab.Training;
using Spectre.Console;

namespace LatentLab.Cli;

/// <summary>
/// The log every command hands the library: plain lines on stdout, and a Spectre progress bar for long loops when
/// stdout is a terminal outside CI (a redirected or CI log gets the plain lines instead). While a bar is live, lines
/// go through Spectre so they print above it.
/// </summary>
public sealed class ConsoleLog : TextWriter, IProgressLog
{
    public static ConsoleLog Instance { get; } = new();

    bool _live;

    ConsoleLog() { }

    /// <summary>A bar fits a terminal; in a file or a CI log it would be noise.</summary>
    public static bool CanShowBars => !Console.IsOutputRedirected && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI"));

    public override Encoding Encoding => Console.OutputEncoding;

    public override void Write(char value)
    {
        if (_live) AnsiConsole.Write(value.ToString());
        else Console.Out.Write(value);
    }

    public override void Write(string? value)
    {
        if (_live) AnsiConsole.Write(value ?? "");
        else Console.Out.Write(value);
    }

    public override void WriteLine(string? value)
    {
        if (_live) AnsiConsole.WriteLine(value ?? "");
        else Console.Out.WriteLine(value);
    }

    public override void Flush() => Console.Out.Flush();

    public T WithProgress<T>(string label, long total, long done, Func<Action<long, string>?, T> work)
    {
        if (!CanShowBars || _live) return work(null);
        _live = true;
        try
        {
            return AnsiConsole.Progress().AutoClear(false)
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                    new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask(Markup.Escape(label), maxValue: Math.Max(1, total));
                    task.Value = done;
                    return work((d, status) => { task.Value = d; task.Description = Markup.Escape(status); });
                });
        }
        finally { _live = false; }
    }
}
