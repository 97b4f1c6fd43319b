// PackageStore: the working_dir packages (Ray's gcs://_ray_pkg_<hash>.zip)
// that clients upload and agents download, as files under
// <state_dir>/packages/.
//
// Thread-safe (the file system is its only state: an upload is written to a
// temporary file and renamed into place, so a reader never sees half a
// package). Put() checks the zip and writes it: slow for a large package, so
// the head runs it on its work pool, never on the HTTP loop or under the
// control lock.
#pragma once

#include <string>
#include <string_view>

#include "cohort/common/status.h"

namespace cohort::head {

// "_ray_pkg_<hash>.zip"-like: [A-Za-z0-9_.-], ends in .zip, no "..", <= 200.
bool ValidPackageName(std::string_view name);

// OK when `bytes` is a zip archive whose entries all stay inside the
// extraction directory: no absolute paths, no backslashes, no "..", no
// symbolic links (zip-slip). InvalidArgument saying which entry is wrong.
Status ValidatePackageZip(std::string_view bytes);

// "gcs://<name>" -> "<name>"; "" for other URIs.
std::string PackageNameOf(std::string_view uri);

class PackageStore {
 public:
  explicit PackageStore(std::string dir) : dir_(std::move(dir)) {}

  bool Exists(std::string_view name) const;
  // InvalidArgument for a bad name or zip; IoError when it cannot be stored.
  Status Put(std::string_view name, std::string_view bytes) const;
  // NotFound "Package gcs://<name> does not exist".
  Status Read(std::string_view name, std::string* bytes) const;

 private:
  std::string PathOf(std::string_view name) const { return dir_ + "/" + std::string(name); }
  const std::string dir_;
};

}  // namespace cohort::head
