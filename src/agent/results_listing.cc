// ListLocalResults; see results_listing.h.
#include "results_listing.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

namespace cohort::agent {

rpc::LocalResults ListLocalResults(const std::string& dir, const ResultsListingLimits& limits) {
  namespace fs = std::filesystem;
  rpc::LocalResults out;
  if (dir.empty() || dir[0] != '/') return out;
  out.set_dir(dir);
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) return out;  // missing or unreadable: nothing there to report
  std::vector<std::pair<std::string, uint64_t>> files;
  size_t visited = 0;
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      out.set_truncated(true);
      break;
    }
    if (++visited > limits.max_entries) {
      out.set_truncated(true);
      break;
    }
    // symlink_status: a link is never followed (and not counted as a file).
    const fs::file_status st = it->symlink_status(ec);
    if (ec || !fs::is_regular_file(st)) continue;
    const uint64_t size = it->file_size(ec);
    if (ec) continue;
    out.set_file_count(out.file_count() + 1);
    out.set_total_bytes(out.total_bytes() + size);
    std::string path = it->path().lexically_relative(dir).string();
    if (path.size() <= limits.max_path_bytes) files.emplace_back(std::move(path), size);
  }
  std::sort(files.begin(), files.end());
  if (files.size() > limits.max_files) files.resize(limits.max_files);
  for (auto& [path, size] : files) {
    rpc::ResultFile* f = out.add_files();
    f->set_path(std::move(path));
    f->set_size_bytes(size);
  }
  return out;
}

}  // namespace cohort::agent
