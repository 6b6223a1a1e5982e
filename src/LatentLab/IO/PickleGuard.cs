namespace LatentLab.IO;

/// <summary>Refuses pickle checkpoints with the reason and the way out, instead of a confusing parse error.</summary>
internal static class PickleGuard
{
    static readonly string[] Extensions = [".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"];

    public static bool IsPickleName(string path) =>
        Extensions.Contains(Path.GetExtension(path), StringComparer.OrdinalIgnoreCase);

    public static SafetensorsFormatException Refuse(string path, string what) => new(path, null,
        $"{what} is a PyTorch pickle checkpoint, which LatentLab does not load: unpickling can execute arbitrary code. " +
        "Convert it to safetensors in Python, e.g. `AutoModelForCausalLM.from_pretrained(src).save_pretrained(dst, safe_serialization=True)` " +
        "(transformers), or download the model's *.safetensors files instead.");

    public static void ThrowIfPickle(string path)
    {
        if (IsPickleName(path)) throw Refuse(path, "this file");
    }
}
