using System.CommandLine;

namespace LatentLab.Cli;

/// <summary>`latentlab shortcut ...`: the hidden-state JEPA shortcut study, one command per phase plus the whole study.</summary>
public static class ShortcutCommands
{
    public static Command Create() => new("shortcut", "Latent shortcut: predict the post-thinking state from the pre-thinking state, inject it, verify")
    {
        ShortcutExtractCommands.Extract(),
        ShortcutExtractCommands.Merge(),
        ShortcutTrainCommands.Train(),
        ShortcutEvalCommands.Eval(),
        ShortcutStudyCommands.Study(),
    };
}
