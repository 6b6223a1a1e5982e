namespace LatentLab.Training;

/// <summary>
/// Seeds derived from (run seed, step, micro-batch), so a data sampler that draws its batch from
/// <see cref="For"/> visits the same data in the same order whether or not the run was interrupted:
/// resuming needs nothing but the step number.
/// </summary>
public static class Seeds
{
    /// <summary>A well-mixed 63-bit seed for one micro-batch (SplitMix64 over the three inputs).</summary>
    public static long For(long seed, long step, int micro = 0)
    {
        ulong h = Mix((ulong)seed ^ 0x9E3779B97F4A7C15UL);
        h = Mix(h ^ (ulong)step);
        h = Mix(h ^ (ulong)(uint)micro);
        return (long)(h >> 1);
    }

    static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
