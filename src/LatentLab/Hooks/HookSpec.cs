using System.Text.Json;
using System.Text.Json.Serialization;
using static TorchSharp.torch;

namespace LatentLab.Hooks;

public enum HookAction { Capture, Add, Replace, Scale }

public enum PositionKind
{
    /// <summary>Every position of the current input.</summary>
    All,
    /// <summary>One absolute position (counting the KV-cache prefix); negative counts from the end of the sequence so far.</summary>
    Index,
    /// <summary>The last real (non-padding) token of each row.</summary>
    Last,
    /// <summary>The position of the n-th occurrence (0-based) of a token id in each row.</summary>
    Token,
    /// <summary>Absolute positions [Start, End).</summary>
    Range,
}

/// <summary>Where along the sequence a hook acts. Plain data, so it serialises to JSON.</summary>
public sealed record Positions(PositionKind Kind, int Start = 0, int End = 0, int TokenId = -1, int Occurrence = 0)
{
    public static readonly Positions AllPositions = new(PositionKind.All);
    public static readonly Positions LastToken = new(PositionKind.Last);
    public static Positions At(int index) => new(PositionKind.Index, index);
    public static Positions Span(int start, int end) => new(PositionKind.Range, start, end);
    public static Positions OfToken(int tokenId, int occurrence = 0) => new(PositionKind.Token, TokenId: tokenId, Occurrence: occurrence);

    public override string ToString() => Kind switch
    {
        PositionKind.All => "all",
        PositionKind.Last => "last",
        PositionKind.Index => Start.ToString(),
        PositionKind.Range => $"{Start}:{End}",
        _ => $"token={TokenId}#{Occurrence}",
    };

    /// <summary>Parses `all`, `last`, `5`, `-1`, `3:7`, `token=151668` or `token=151668#1`.</summary>
    public static Positions Parse(string s)
    {
        var t = s.Trim();
        if (t == "all") return AllPositions;
        if (t == "last") return LastToken;
        if (t.StartsWith("token="))
        {
            var parts = t[6..].Split('#');
            return OfToken(int.Parse(parts[0]), parts.Length > 1 ? int.Parse(parts[1]) : 0);
        }
        if (t.Contains(':'))
        {
            var parts = t.Split(':');
            return Span(int.Parse(parts[0]), int.Parse(parts[1]));
        }
        if (int.TryParse(t, out var i)) return At(i);
        throw new ArgumentException($"cannot read positions '{s}': use all, last, N, A:B or token=ID[#k]");
    }
}

/// <summary>
/// One hook: a point, an action and the positions it acts on. Add/Replace take a tensor, broadcast against
/// [batch, positions, d]; in JSON the tensor is referred to by <see cref="ValueName"/> (a tensor name in a
/// safetensors file next to the hook file), so an intervention can be saved and replayed.
/// </summary>
public sealed record HookSpec
{
    public required string Point { get; init; }
    public HookAction Action { get; init; } = HookAction.Capture;
    public Positions At { get; init; } = Positions.AllPositions;
    public double Scale { get; init; } = 1.0;
    /// <summary>Key under which a capture is returned; defaults to the point name.</summary>
    public string? Name { get; init; }
    /// <summary>Cast captures to this dtype (f32, bf16, f16) to save memory; null keeps the compute dtype.</summary>
    public string? CaptureDType { get; init; }
    /// <summary>Detach captures from the graph (default). Set false to train through a captured value.</summary>
    public bool Detach { get; init; } = true;
    public string? ValueName { get; init; }
    [JsonIgnore] public Tensor? Value { get; init; }

    public string Key => Name ?? Point;

    public static HookSpec Capture(string point, Positions? at = null, string? dtype = null) =>
        new() { Point = point, At = at ?? Positions.AllPositions, CaptureDType = dtype };
    public static HookSpec Add(string point, Tensor delta, Positions? at = null, double scale = 1.0) =>
        new() { Point = point, Action = HookAction.Add, Value = delta, At = at ?? Positions.AllPositions, Scale = scale };
    public static HookSpec Replace(string point, Tensor value, Positions? at = null) =>
        new() { Point = point, Action = HookAction.Replace, Value = value, At = at ?? Positions.AllPositions };
}

/// <summary>A list of hooks applied in one forward. Serialises to JSON (tensors by name).</summary>
public sealed class HookSet
{
    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public List<HookSpec> Hooks { get; init; } = new();

    public HookSet() { }
    public HookSet(IEnumerable<HookSpec> hooks) => Hooks = hooks.ToList();

    public static HookSet Captures(params string[] points) => new(points.Select(p => HookSpec.Capture(p)));

    public string ToJson() => JsonSerializer.Serialize(Hooks, Json);

    /// <summary>Reads hooks from JSON; <paramref name="tensors"/> resolves ValueName for add/replace hooks.</summary>
    public static HookSet FromJson(string json, Func<string, Tensor>? tensors = null)
    {
        var hooks = JsonSerializer.Deserialize<List<HookSpec>>(json, Json) ?? throw new InvalidDataException("hook file is empty");
        var resolved = hooks.Select(h =>
        {
            HookPoint.Parse(h.Point);
            if (h.Action is HookAction.Add or HookAction.Replace)
            {
                if (h.ValueName is null) throw new InvalidDataException($"hook at {h.Point}: {h.Action} needs a valueName");
                if (tensors is null) throw new InvalidDataException($"hook at {h.Point} refers to tensor '{h.ValueName}' but no tensor file was given");
                return h with { Value = tensors(h.ValueName) };
            }
            return h;
        });
        return new HookSet(resolved);
    }
}
