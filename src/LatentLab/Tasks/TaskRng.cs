namespace LatentLab.Tasks;

/// <summary>
/// SplitMix64. Our own generator rather than System.Random so that a (family, seed, difficulty) triple gives the same
/// problem on every runtime and platform, and so seeds are 64-bit.
/// </summary>
public sealed class TaskRng
{
    private ulong _state;

    public TaskRng(ulong seed) => _state = seed;

    public ulong NextU64()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, n). The modulo bias is below 2^-50 for the small n used here.</summary>
    public int Next(int n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n), n, "range must be positive");
        return (int)(NextU64() % (ulong)n);
    }

    /// <summary>Uniform in [lo, hiExclusive).</summary>
    public int Next(int lo, int hiExclusive) => lo + Next(hiExclusive - lo);

    public double NextDouble() => (NextU64() >> 11) * (1.0 / (1UL << 53));

    public T Pick<T>(IReadOnlyList<T> items) => items[Next(items.Count)];

    public void Shuffle<T>(IList<T> list)
    {
        for (int i = list.Count - 1; i > 0; i--)
        {
            int j = Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
    }

    /// <summary>A shuffled copy that differs from <paramref name="items"/> (reversed when the shuffle kept the order): a paraphrase by reordering.</summary>
    public List<T> Reordered<T>(IReadOnlyList<T> items)
    {
        var copy = items.ToList();
        Shuffle(copy);
        if (copy.SequenceEqual(items)) copy.Reverse();
        return copy;
    }

    /// <summary>FNV-1a: string.GetHashCode is randomised per process, so it cannot seed anything reproducible.</summary>
    public static ulong Hash(string s)
    {
        ulong h = 14695981039346656037UL;
        foreach (char c in s)
        {
            h ^= c;
            h *= 1099511628211UL;
        }
        return h;
    }

    public static ulong Mix(params ulong[] parts)
    {
        var rng = new TaskRng(0x5DEECE66DUL);
        ulong h = 0;
        foreach (var p in parts)
        {
            rng._state ^= p;
            h = rng.NextU64();
        }
        return h;
    }

    public static TaskRng For(params ulong[] parts) => new(Mix(parts));
}
