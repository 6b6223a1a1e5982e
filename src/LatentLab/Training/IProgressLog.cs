namespace LatentLab.Training;

/// <summary>
/// A log that can also show live progress. The library writes plain lines to whatever <see cref="TextWriter"/> it is
/// given; a front end that can draw a progress bar passes a writer that also implements this interface, and long
/// loops (the <see cref="Trainer"/>) hand it their counter instead of printing a line every few steps. Whether a bar
/// fits where the output goes (a terminal, a CI log, a file) is the front end's decision, not the library's.
/// </summary>
public interface IProgressLog
{
    /// <summary>
    /// Runs <paramref name="work"/>, which reports (units done of <paramref name="total"/>, a short status) through the
    /// action it is given; that action is null when no live display can be shown now, and the work then logs lines.
    /// Lines written to the log meanwhile appear above the display.
    /// </summary>
    T WithProgress<T>(string label, long total, long done, Func<Action<long, string>?, T> work);
}
