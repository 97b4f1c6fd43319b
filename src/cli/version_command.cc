// `cohort version`: prints the version of this build. Main thread only.
#include <cstdio>

#include "cli/command.h"

#ifndef COHORT_VERSION
#define COHORT_VERSION "0.1.0"
#endif

namespace cohort::cli {

Command AddVersionCommand(CLI::App& root) {
  CLI::App* sub = root.add_subcommand("version", "Print the version of cohort");
  return Command{sub, [](const Passthrough& passthrough) {
                   if (passthrough) {
                     std::fprintf(stderr, "cohort version: unexpected arguments after --\n");
                     return kExitUsage;
                   }
#if defined(__clang__)
                   const char* compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
                   const char* compiler = "gcc " __VERSION__;
#else
                   const char* compiler = "unknown compiler";
#endif
                   std::printf("cohort %s (C++%ld, %s)\n", COHORT_VERSION,
                               static_cast<long>(__cplusplus / 100 % 100), compiler);
                   return 0;
                 }};
}

}  // namespace cohort::cli
