// Working_dir packages: naming and safe extraction of the zips the head
// serves (Ray's `gcs://_ray_pkg_<hash>.zip`).
//
// Extraction refuses a whole archive when any entry would land outside the
// destination ("zip slip"): absolute names, any ".." component, symlinks
// whose target is absolute or leads out of the tree, and entries written
// through a symlink. Regular files and directories are extracted first and
// symlinks last, each parent directory checked with lstat, so no entry can be
// written through a link the archive itself created.
//
// Called from the agent's preparation thread; stateless, thread-compatible.
#pragma once

#include <set>
#include <string>
#include <string_view>

#include "cohort/common/status.h"

namespace cohort::agent {

// "gcs://_ray_pkg_abc.zip" -> "_ray_pkg_abc.zip". InvalidArgument unless the
// URI is gcs:// followed by a plain file name ([A-Za-z0-9_.-], not starting
// with '.').
Result<std::string> PackageFileName(std::string_view uri);

// InvalidArgument naming `name` when a zip entry of that name may not be
// extracted (empty, absolute, or containing a ".." component).
Status CheckZipEntryName(std::string_view name);

// InvalidArgument when a symlink entry `link_name` -> `target` would point
// outside the extraction root (absolute target, or ".." past the root), or
// when the target path goes through one of `other_links` (the archive's
// symlink entries, as "a/b/c"): a link pointing shallower than itself would
// make a lexically harmless ".." climb out of the tree.
Status CheckZipSymlink(std::string_view link_name, std::string_view target,
                       const std::set<std::string>& other_links = {});

// Extracts `zip_path` into `dest_dir`, which must not exist yet (it is
// created). On error `dest_dir` may hold a partial tree; the caller removes it.
Status ExtractZip(const std::string& zip_path, const std::string& dest_dir);

}  // namespace cohort::agent
