// What a job left in its local results directory, for the head: listed by
// the agent after each worker exit when COHORT_RESULTS_DIR is a directory on
// this node (a job without a results_uri), so `cohort job results ID` can
// say which node holds what. The walk is bounded (entries visited, files
// reported) and never follows symbolic links: a job may leave anything there.
#pragma once

#include <cstddef>
#include <string>

#include "cohort.pb.h"

namespace cohort::agent {

struct ResultsListingLimits {
  size_t max_files = 64;         // reported by path; the rest only counted
  size_t max_path_bytes = 1024;  // longer relative paths are counted, not reported
  size_t max_entries = 20000;    // visited before the walk stops (truncated)
};

// Empty `dir` or one that is not an absolute path: nothing (has no files and
// file_count 0). A directory that does not exist lists as empty.
rpc::LocalResults ListLocalResults(const std::string& dir, const ResultsListingLimits& limits = {});

}  // namespace cohort::agent
