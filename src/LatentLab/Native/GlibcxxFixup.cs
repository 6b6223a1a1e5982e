// This one file serves twice: the library compiles it (LATENTLAB_LIBRARY is defined there) for the
// first-start check, and build/TorchSharpNative.targets compiles it as an inline MSBuild task so the
// fix-up happens inside `dotnet build`, before anything runs. Keep it free of other project types.
#nullable enable
using System;
using System.IO;
using System.Text;

namespace LatentLab.Native
{
    /// <summary>
    /// TorchSharp-cpu 0.107.0's libLibTorchSharp.so was linked against GCC 13's libstdc++ and lists
    /// GLIBCXX_3.4.32 as a needed version for exactly one symbol (std::ios_base_library_init, a bare
    /// reference that iostream emits; the library has no relocation against it). Debian 12's libstdc++
    /// stops at 3.4.30, so the loader refuses the whole library. Marking that version requirement weak
    /// (VER_FLG_WEAK in the Vernaux entry) lets the loader accept it; nothing else changes.
    /// </summary>
    public static class GlibcxxFixup
    {
        public const string LibraryName = "libLibTorchSharp.so";
        public const string MissingVersion = "GLIBCXX_3.4.32";
        const ushort VerFlgWeak = 0x2;
        const uint ShtGnuVerneed = 0x6ffffffe;

        static readonly string[] LibStdCxxCandidates =
        {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib64/libstdc++.so.6",
            "/usr/lib/libstdc++.so.6",
            "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
        };

        /// <summary>Path of the system libstdc++, or null when none of the usual places has one.</summary>
        public static string? FindSystemLibStdCxx()
        {
            foreach (var p in LibStdCxxCandidates)
                if (File.Exists(p)) return p;
            return null;
        }

        /// <summary>True when the system libstdc++ defines <paramref name="version"/> (or there is none to check).</summary>
        public static bool SystemHasVersion(string version = MissingVersion)
        {
            var lib = FindSystemLibStdCxx();
            if (lib == null) return true;
            var needle = Encoding.ASCII.GetBytes(version + "\0");
            return IndexOf(File.ReadAllBytes(lib), needle) >= 0;
        }

        /// <summary>
        /// Marks the <paramref name="version"/> requirement of an ELF64 little-endian shared library weak.
        /// Returns "patched", "already" (idempotent no-op) or "absent" (the library does not ask for it).
        /// Throws InvalidDataException when the file is not an ELF64 LE object.
        /// </summary>
        public static string MarkVersionWeak(string path, string version = MissingVersion)
        {
            var bytes = File.ReadAllBytes(path);
            var offsets = FindVernauxFlagOffsets(bytes, version, path);
            if (offsets.Count == 0) return "absent";
            bool changed = false;
            foreach (var off in offsets)
            {
                ushort flags = BitConverter.ToUInt16(bytes, off);
                if ((flags & VerFlgWeak) != 0) continue;
                flags |= VerFlgWeak;
                bytes[off] = (byte)(flags & 0xff);
                bytes[off + 1] = (byte)(flags >> 8);
                changed = true;
            }
            if (!changed) return "already";
            // Write beside, then copy over: the original is never truncated before the new bytes exist.
            // (The inline-task compiler targets netstandard, which lacks File.Move(overwrite).)
            var tmp = path + ".fixup.tmp";
            File.WriteAllBytes(tmp, bytes);
            File.Copy(tmp, path, true);
            File.Delete(tmp);
            return "patched";
        }

        /// <summary>True when every requirement of <paramref name="version"/> in the file is weak (or absent).</summary>
        public static bool IsWeak(string path, string version = MissingVersion)
        {
            var bytes = File.ReadAllBytes(path);
            foreach (var off in FindVernauxFlagOffsets(bytes, version, path))
                if ((BitConverter.ToUInt16(bytes, off) & VerFlgWeak) == 0) return false;
            return true;
        }

        /// <summary>Patches the library in <paramref name="directory"/> when the system needs it; returns what happened.</summary>
        public static string EnsureLoadable(string directory)
        {
            var lib = Path.Combine(directory, LibraryName);
            if (!File.Exists(lib)) return "no " + LibraryName + " in " + directory;
            if (SystemHasVersion()) return "system libstdc++ has " + MissingVersion + "; nothing to do";
            return MarkVersionWeak(lib);
        }

        static System.Collections.Generic.List<int> FindVernauxFlagOffsets(byte[] b, string version, string path)
        {
            if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F')
                throw new InvalidDataException(path + ": not an ELF file");
            if (b[4] != 2 || b[5] != 1)
                throw new InvalidDataException(path + ": only 64-bit little-endian ELF is supported");
            long shoff = BitConverter.ToInt64(b, 0x28);
            int shentsize = BitConverter.ToUInt16(b, 0x3A);
            int shnum = BitConverter.ToUInt16(b, 0x3C);
            var result = new System.Collections.Generic.List<int>();
            for (int i = 0; i < shnum; i++)
            {
                long sh = shoff + (long)i * shentsize;
                if (sh + 64 > b.Length) throw new InvalidDataException(path + ": section header outside the file");
                uint type = BitConverter.ToUInt32(b, (int)sh + 4);
                if (type != ShtGnuVerneed) continue;
                long off = BitConverter.ToInt64(b, (int)sh + 0x18);
                uint link = BitConverter.ToUInt32(b, (int)sh + 0x28);
                uint count = BitConverter.ToUInt32(b, (int)sh + 0x2C);
                long strSh = shoff + (long)link * shentsize;
                long strOff = BitConverter.ToInt64(b, (int)strSh + 0x18);
                long vn = off;
                for (uint n = 0; n < count; n++)
                {
                    int cnt = BitConverter.ToUInt16(b, (int)vn + 2);
                    uint aux = BitConverter.ToUInt32(b, (int)vn + 8);
                    uint next = BitConverter.ToUInt32(b, (int)vn + 12);
                    long va = vn + aux;
                    for (int a = 0; a < cnt; a++)
                    {
                        uint name = BitConverter.ToUInt32(b, (int)va + 8);
                        uint anext = BitConverter.ToUInt32(b, (int)va + 12);
                        if (ReadCString(b, strOff + name) == version) result.Add((int)va + 4);
                        if (anext == 0) break;
                        va += anext;
                    }
                    if (next == 0) break;
                    vn += next;
                }
            }
            return result;
        }

        static string ReadCString(byte[] b, long at)
        {
            long end = at;
            while (end < b.Length && b[end] != 0) end++;
            return Encoding.ASCII.GetString(b, (int)at, (int)(end - at));
        }

        static int IndexOf(byte[] hay, byte[] needle)
        {
            for (int i = 0; i + needle.Length <= hay.Length; i++)
            {
                int j = 0;
                while (j < needle.Length && hay[i + j] == needle[j]) j++;
                if (j == needle.Length) return i;
            }
            return -1;
        }
    }
}

#if !LATENTLAB_LIBRARY
namespace LatentLab.Build
{
    /// <summary>MSBuild face of <see cref="LatentLab.Native.GlibcxxFixup"/>: patches the copies in an output folder.</summary>
    public sealed class PatchTorchSharpNative : Microsoft.Build.Utilities.Task
    {
        [Microsoft.Build.Framework.Required]
        public string OutputDirectory { get; set; } = "";

        public override bool Execute()
        {
            if (!System.Runtime.InteropServices.RuntimeInformation.IsOSPlatform(System.Runtime.InteropServices.OSPlatform.Linux)) return true;
            if (LatentLab.Native.GlibcxxFixup.SystemHasVersion()) return true;
            foreach (var lib in Directory.EnumerateFiles(OutputDirectory, LatentLab.Native.GlibcxxFixup.LibraryName, SearchOption.AllDirectories))
            {
                var what = LatentLab.Native.GlibcxxFixup.MarkVersionWeak(lib);
                if (what == "patched")
                    Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High,
                        "LatentLab: marked " + LatentLab.Native.GlibcxxFixup.MissingVersion + " weak in " + lib);
            }
            return true;
        }
    }
}
#endif
