// The `cohort` CLI's subcommands: each lives in its own file and registers
// itself on the root CLI11 App through an Add*Command function.
//
// main.cc calls every Add*Command before parsing, then runs the one command
// whose subcommand was parsed. Main thread only.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace cohort::cli {

// Exit code for a bad command line (as getopt-based tools use).
inline constexpr int kExitUsage = 2;

// The words after the first "--" on the command line. main.cc splits them off
// before CLI11 parses the rest (CLI11 cannot hand a subcommand a raw command
// tail); nullopt when there was no "--".
using Passthrough = std::optional<std::vector<std::string>>;

// A registered subcommand: its CLI11 App (parsed() tells whether it was
// chosen) and what to run after parsing; run returns the process exit code.
struct Command {
  CLI::App* app = nullptr;
  std::function<int(const Passthrough&)> run;
};

// `cohort launch -n N [--master-addr A] [--master-port P] -- PROGRAM ARGS...`
Command AddLaunchCommand(CLI::App& root);
// `cohort storage cp|ls|rm|cat ...` (storage_command.cc)
Command AddStorageCommand(CLI::App& root);
// `cohort version`
Command AddVersionCommand(CLI::App& root);
// `cohort job submit|logs|status|stop|list|delete|metrics ...`
Command AddJobCommand(CLI::App& root);
// `cohort status`
Command AddStatusCommand(CLI::App& root);
Command AddStartCommand(CLI::App& root);
Command AddStopCommand(CLI::App& root);
Command AddRunCommand(CLI::App& root);
Command AddOperatorCommand(CLI::App& root);  // `cohort operator` (operator_command.cc)

}  // namespace cohort::cli
