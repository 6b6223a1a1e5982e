using TorchSharp;
using static TorchSharp.torch;

namespace LatentLab.IO;

/// <summary>The safetensors dtypes LatentLab reads and writes (names as they appear in the header).</summary>
public enum SafeDType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL }

/// <summary>
/// One header entry. <see cref="Begin"/> and <see cref="End"/> are byte offsets relative to the
/// start of the data section (after the 8-byte length and the JSON header), as in the format.
/// </summary>
public sealed record SafeTensorInfo(string Name, SafeDType DType, long[] Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;

    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    public ScalarType ScalarType => DType.ToScalarType();

    public override string ToString() => $"{Name}: {DType}[{string.Join(", ", Shape)}]";
}

public static class SafeDTypes
{
    /// <summary>Bytes per element; BOOL is one byte per element, as in the format and in torch.</summary>
    public static int Size(this SafeDType d) => d switch
    {
        SafeDType.F64 or SafeDType.I64 => 8,
        SafeDType.F32 or SafeDType.I32 => 4,
        SafeDType.F16 or SafeDType.BF16 or SafeDType.I16 => 2,
        SafeDType.I8 or SafeDType.U8 or SafeDType.BOOL => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(d), d, null),
    };

    public static ScalarType ToScalarType(this SafeDType d) => d switch
    {
        SafeDType.F64 => ScalarType.Float64,
        SafeDType.F32 => ScalarType.Float32,
        SafeDType.F16 => ScalarType.Float16,
        SafeDType.BF16 => ScalarType.BFloat16,
        SafeDType.I64 => ScalarType.Int64,
        SafeDType.I32 => ScalarType.Int32,
        SafeDType.I16 => ScalarType.Int16,
        SafeDType.I8 => ScalarType.Int8,
        SafeDType.U8 => ScalarType.Byte,
        SafeDType.BOOL => ScalarType.Bool,
        _ => throw new ArgumentOutOfRangeException(nameof(d), d, null),
    };

    /// <summary>The safetensors dtype for a torch dtype, or null when the format (as LatentLab supports it) has none.</summary>
    public static SafeDType? FromScalarType(ScalarType t) => t switch
    {
        ScalarType.Float64 => SafeDType.F64,
        ScalarType.Float32 => SafeDType.F32,
        ScalarType.Float16 => SafeDType.F16,
        ScalarType.BFloat16 => SafeDType.BF16,
        ScalarType.Int64 => SafeDType.I64,
        ScalarType.Int32 => SafeDType.I32,
        ScalarType.Int16 => SafeDType.I16,
        ScalarType.Int8 => SafeDType.I8,
        ScalarType.Byte => SafeDType.U8,
        ScalarType.Bool => SafeDType.BOOL,
        _ => null,
    };

    /// <summary>Parses a header dtype string exactly (the format is case-sensitive).</summary>
    public static bool TryParse(string s, out SafeDType d)
    {
        foreach (var v in Enum.GetValues<SafeDType>())
        {
            if (v.ToString() == s) { d = v; return true; }
        }
        d = default;
        return false;
    }

    public static string Supported => string.Join(", ", Enum.GetValues<SafeDType>());
}
