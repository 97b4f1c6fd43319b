// The `cohort` command-line tool: wires the subcommands (one file each, see
// cli/command.h), parses argv and runs the chosen one. Main thread only.
#include <string>
#include <vector>

#include "cli/command.h"

int main(int argc, char** argv) {
  using cohort::cli::Command;
  using cohort::cli::Passthrough;

  // Everything after the first "--" bypasses CLI11 (see Passthrough).
  std::vector<std::string> args(argv, argv + argc);
  Passthrough passthrough;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--") {
      passthrough.emplace(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      args.resize(i);
      break;
    }
  }

  CLI::App app{"cohort: data-parallel training on CPU and GPU machines", "cohort"};
  app.require_subcommand(1);
  std::vector<Command> commands = {
      cohort::cli::AddLaunchCommand(app),
      cohort::cli::AddStorageCommand(app),
      cohort::cli::AddVersionCommand(app),
#ifndef COHORT_DATA_PLANE_ONLY  // -DCOHORT_CONTROL_PLANE=OFF: launch, storage, version
      cohort::cli::AddJobCommand(app),
      cohort::cli::AddStatusCommand(app),
      cohort::cli::AddStartCommand(app),
      cohort::cli::AddStopCommand(app),
      cohort::cli::AddRunCommand(app),
      cohort::cli::AddOperatorCommand(app),
#endif
  };
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend() - 1);  // CLI11 wants argv[1:] reversed
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help (code 0) or the error and a hint
    return code == 0 ? 0 : cohort::cli::kExitUsage;
  }
  for (const Command& command : commands) {
    if (command.app->parsed()) return command.run(passthrough);
  }
  return cohort::cli::kExitUsage;  // unreachable: require_subcommand(1)
}
