// `cohort launch`: starts N ranks of a program on this machine (see
// cohort/launch/launcher.h) and exits with the launcher's exit code.
// Main thread only.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cohort/launch/launcher.h"

namespace cohort::cli {
namespace {

struct LaunchFlags {
  int nproc = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
};

int RunLaunch(CLI::App* sub, const LaunchFlags& flags, const Passthrough& passthrough) {
  // PROGRAM ARGS...: normally everything after "--"; without "--", CLI11
  // leaves everything from the first positional on unparsed (prefix_command),
  // and a later "--" belongs to the program.
  std::vector<std::string> argv = sub->remaining();
  if (passthrough) {
    if (!argv.empty()) argv.push_back("--");
    argv.insert(argv.end(), passthrough->begin(), passthrough->end());
  }
  if (flags.nproc < 1) {
    std::fprintf(stderr, "cohort launch: --nproc-per-node must be at least 1, got %d\n", flags.nproc);
    return kExitUsage;
  }
  if (argv.empty() || argv[0].empty()) {
    std::fprintf(stderr,
                 "cohort launch: no program given\nusage: cohort launch -n N -- PROGRAM ARGS...\n");
    return kExitUsage;
  }
  launch::LaunchOptions options;
  options.num_ranks = flags.nproc;
  options.argv = std::move(argv);
  options.master_addr = flags.master_addr;
  options.master_port = flags.master_port;
  std::fflush(stdout);  // nothing of ours may follow the ranks' output out of order
  Result<int> code = launch::Launch(options);
  if (!code.ok()) {
    std::fprintf(stderr, "cohort launch: %s\n", code.status().ToString().c_str());
    return code.status().code() == StatusCode::kInvalidArgument ? kExitUsage : 1;
  }
  return *code;
}

}  // namespace

Command AddLaunchCommand(CLI::App& root) {
  auto flags = std::make_shared<LaunchFlags>();
  CLI::App* sub = root.add_subcommand(
      "launch", "Start N ranks of PROGRAM on this machine (like torchrun --standalone)");
  sub->add_option("-n,--nproc-per-node,--nproc_per_node", flags->nproc,
                  "Number of ranks (processes) to start")
      ->required();
  sub->add_option("--master-addr,--master_addr", flags->master_addr,
                  "Address of rank 0's rendezvous store")
      ->capture_default_str();
  sub->add_option("--master-port,--master_port", flags->master_port,
                  "Port of the rendezvous store; 0 picks a free one")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  // The first positional (PROGRAM) ends option parsing: its own flags pass through.
  sub->prefix_command();
  sub->footer(
      "Usage: cohort launch -n N [--master-addr A] [--master-port P] -- PROGRAM ARGS...\n"
      "Every rank gets MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK and\n"
      "LOCAL_WORLD_SIZE; its output is prefixed with \"[rank R] \". The first rank to\n"
      "fail stops the others, and its exit code becomes cohort's.");
  return Command{sub, [sub, flags](const Passthrough& passthrough) {
                   return RunLaunch(sub, *flags, passthrough);
                 }};
}

}  // namespace cohort::cli
