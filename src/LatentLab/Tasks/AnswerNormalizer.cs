using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace LatentLab.Tasks;

/// <summary>A reference or model answer after normalisation: <see cref="Value"/> when it reads as a number,
/// otherwise <see cref="Text"/> is a cleaned string (LaTeX wrappers and white space removed, lower case).</summary>
public sealed record NormalizedAnswer(string Raw, string Text, double? Value)
{
    public bool IsNumeric => Value.HasValue;
}

/// <summary>
/// One answer normaliser and verifier for GSM8K, MATH, Big-Math and model output.
/// Reads: integers with thousands commas (1,000), decimals, negative numbers, a/b, \frac{a}{b} / \dfrac / \tfrac /
/// \frac12, mixed numbers (2\frac{1}{2}), \boxed{...} and \fbox{...} (nested braces; the last one wins), $ and \( \)
/// delimiters, \text{...} wrappers, degree signs, a leading "x =", trailing units or words ("18 dollars", "5 cm"),
/// and a trailing percent sign, which is dropped without scaling (50% reads as 50, the GSM8K convention).
/// Numbers are equal when |a - b| &lt;= 1e-6 * max(|a|, |b|) (<see cref="RelativeTolerance"/>); anything else is
/// compared as normalised text.
/// </summary>
public static partial class AnswerNormalizer
{
    public const double RelativeTolerance = 1e-6;

    public static NormalizedAnswer Normalize(string raw)
    {
        ArgumentNullException.ThrowIfNull(raw);
        string s = raw.Trim();
        if (LastBoxed(s) is { } boxed) s = boxed;
        s = s.Replace("\\$", "").Replace("$", "").Replace("\\(", "").Replace("\\)", "").Replace("\\[", "").Replace("\\]", "");
        s = TextWrapper().Replace(s, "$1");
        foreach (var junk in new[] { "\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "^{\\circ}", "^\\circ", "\\circ", "°" })
            s = s.Replace(junk, junk == "\\ " ? " " : "");
        s = s.Replace("\\%", "%").Replace("\\dfrac", "\\frac").Replace("\\tfrac", "\\frac");
        // "x = 5" or "k=3": the value is the right-hand side.
        int eq = s.LastIndexOf('=');
        if (eq >= 0 && eq < s.Length - 1 && !s.Contains("==") && !s.Contains("\\le") && !s.Contains("\\ge")) s = s[(eq + 1)..];
        s = Spaces().Replace(s, " ").Trim().TrimEnd('.').Trim();

        if (TryParseNumber(s, out double v))
            return new NormalizedAnswer(raw, FormatNumber(v), v);
        return new NormalizedAnswer(raw, s.Replace(" ", "").ToLowerInvariant(), null);
    }

    /// <summary>Parses the numeric forms listed on the class (after the LaTeX clean-up <see cref="Normalize"/> does).</summary>
    public static bool TryParseNumber(string text, out double value)
    {
        value = 0;
        string s = text.Trim();
        if (s.EndsWith('%')) s = s[..^1].TrimEnd();
        if (s.Length == 0) return false;
        if (TryPlain(s, out value)) return true;

        var frac = Frac().Match(s);
        if (frac.Success && TryPlain(frac.Groups["a"].Value, out double a) && TryPlain(frac.Groups["b"].Value, out double b) && b != 0)
        {
            double f = a / b;
            string whole = frac.Groups["whole"].Value;
            if (whole.Length > 0)
            {
                if (!TryPlain(whole, out double w)) return false;
                f = w < 0 || whole.StartsWith('-') ? w - f : w + f;
            }
            value = frac.Groups["sign"].Value == "-" ? -f : f;
            return true;
        }
        var slash = Slash().Match(s);
        if (slash.Success && TryPlain(slash.Groups[1].Value, out double n) && TryPlain(slash.Groups[2].Value, out double d) && d != 0)
        {
            value = n / d;
            return true;
        }
        // A number followed only by a unit or words: "18 dollars", "5 cm", "3 hours.".
        var unit = NumberThenWords().Match(s);
        return unit.Success && TryPlain(unit.Groups[1].Value, out value);
    }

    private static bool TryPlain(string s, out double value)
    {
        value = 0;
        s = s.Trim();
        if (!PlainNumber().IsMatch(s)) return false;
        return double.TryParse(s.Replace(",", ""), NumberStyles.Float, CultureInfo.InvariantCulture, out value);
    }

    private static string FormatNumber(double v)
    {
        double r = Math.Round(v);
        if (Math.Abs(v - r) <= 1e-9 * Math.Max(1, Math.Abs(v)) && Math.Abs(r) < 1e15)
            return ((long)r).ToString(CultureInfo.InvariantCulture);
        return v.ToString("R", CultureInfo.InvariantCulture);
    }

    public static bool NumbersClose(double a, double b, double relativeTolerance = RelativeTolerance) =>
        // A run of digits too long for a double parses to infinity, and infinity is within any relative tolerance of
        // anything: non-finite numbers never match.
        double.IsFinite(a) && double.IsFinite(b) && (a == b || Math.Abs(a - b) <= relativeTolerance * Math.Max(Math.Abs(a), Math.Abs(b)));

    /// <summary>Two answers (reference or model) mean the same: numerically within tolerance, or equal normalised text.</summary>
    public static bool Equivalent(string a, string b, double relativeTolerance = RelativeTolerance)
    {
        var na = Normalize(a);
        var nb = Normalize(b);
        if (na.Value is double x && nb.Value is double y) return NumbersClose(x, y, relativeTolerance);
        return na.Text.Length > 0 && na.Text == nb.Text;
    }

    /// <summary>
    /// The final answer in free model output: the text after the last <c>####</c> (to the end of its line), else the
    /// last <c>\boxed{}</c>, else what follows the last "answer is" / "answer:" (to the end of its line), else the last
    /// number. Null when there is none.
    /// </summary>
    public static string? ExtractFinalAnswer(string output)
    {
        ArgumentNullException.ThrowIfNull(output);
        int hash = output.LastIndexOf("####", StringComparison.Ordinal);
        if (hash >= 0)
        {
            string tail = FirstLine(output[(hash + 4)..]);
            if (tail.Length > 0) return tail;
        }
        if (LastBoxed(output) is { } boxed) return boxed;
        var said = AnswerIs().Matches(output);
        if (said.Count > 0)
        {
            string tail = FirstLine(said[^1].Groups[1].Value).TrimEnd('.').Trim();
            if (tail.Length > 0) return tail;
        }
        var numbers = AnyNumber().Matches(output);
        return numbers.Count > 0 ? numbers[^1].Value.TrimEnd(',') : null;
    }

    /// <summary>Extracts the final answer of <paramref name="output"/> and compares it with <paramref name="reference"/>.</summary>
    public static bool IsCorrect(string output, string reference, double relativeTolerance = RelativeTolerance) =>
        ExtractFinalAnswer(output) is { } answer && Equivalent(answer, reference, relativeTolerance);

    private static string FirstLine(string s)
    {
        int nl = s.IndexOf('\n');
        return (nl >= 0 ? s[..nl] : s).Trim();
    }

    /// <summary>Content of the last <c>\boxed{...}</c> or <c>\fbox{...}</c> (nested braces), or of <c>\boxed x</c>;
    /// null when there is none or its braces do not close.</summary>
    public static string? LastBoxed(string text)
    {
        int at = Math.Max(text.LastIndexOf("\\boxed", StringComparison.Ordinal), text.LastIndexOf("\\fbox", StringComparison.Ordinal));
        if (at < 0) return null;
        int i = at + (text.AsSpan(at).StartsWith("\\boxed") ? 6 : 5);
        while (i < text.Length && text[i] == ' ') i++;
        if (i >= text.Length) return null;
        if (text[i] != '{')
        {
            int end = i;
            while (end < text.Length && !char.IsWhiteSpace(text[end]) && text[end] != '$') end++;
            return end > i ? text[i..end] : null;
        }
        int depth = 0;
        var sb = new StringBuilder();
        for (int k = i; k < text.Length; k++)
        {
            char c = text[k];
            if (c == '{' && depth++ == 0) continue;
            if (c == '}' && --depth == 0) return sb.ToString().Trim();
            sb.Append(c);
        }
        return null;
    }

    [GeneratedRegex(@"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")]
    private static partial Regex TextWrapper();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Spaces();

    [GeneratedRegex(@"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$|^[-+]?\.\d+$")]
    private static partial Regex PlainNumber();

    [GeneratedRegex(@"^(?<sign>[-+]?)\s*(?<whole>[-+]?\d+)?\s*\\frac\s*(?:\{\s*(?<a>[-+]?[\d.,]+)\s*\}|(?<a>\d))\s*(?:\{\s*(?<b>[-+]?[\d.,]+)\s*\}|(?<b>\d))$")]
    private static partial Regex Frac();

    [GeneratedRegex(@"^([-+]?[\d.,]+)\s*/\s*([\d.,]+)$")]
    private static partial Regex Slash();

    [GeneratedRegex(@"^([-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*[a-zA-Z][a-zA-Z .\-/^2³²]*$")]
    private static partial Regex NumberThenWords();

    [GeneratedRegex(@"answer\s*(?:is|:)\s*:?\s*(.+)", RegexOptions.IgnoreCase)]
    private static partial Regex AnswerIs();

    [GeneratedRegex(@"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")]
    private static partial Regex AnyNumber();
}
