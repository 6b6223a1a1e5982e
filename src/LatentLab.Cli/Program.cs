using System.CommandLine;
using LatentLab.Cli;

var root = new RootCommand("LatentLab: latent reasoning research on transformer language models");
foreach (var c in ModelCommands.Create()) root.Add(c);
foreach (var c in ToolCommands.Create()) root.Add(c);
foreach (var c in TaskCommands.Create()) root.Add(c);
foreach (var c in TeacherCommands.Create()) root.Add(c);
root.Add(ShortcutCommands.Create());
foreach (var c in ReasonerCommands.Create()) root.Add(c);
root.Add(RecurrenceCommands.Create());
root.Add(RJepaCommands.Create());
return root.Parse(args).Invoke();
