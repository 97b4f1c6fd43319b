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

#include "cohort/common/status.h"

namespace cohort::cli {

// Exit code for a bad command line (as getopt-based tools use).
inline constexpr int kExitUsage = 2;

// The API token of a command that talks to the head, from its flags and the
// environment: --token, else the first line of --token-file, else
// $COHORT_TOKEN, else the first line of the file $COHORT_TOKEN_FILE names;
// "" when none is set (the job client then reads <state-dir>/token).
// InvalidArgument when both flags are given, or when the token file cannot
// be read or its first line is empty. Defined in cluster_command.cc.
Result<std::string> ResolveTokenFlags(const std::string& token, const std::string& token_file);

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
