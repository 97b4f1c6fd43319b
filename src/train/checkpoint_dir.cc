// Checkpoint directory management; see include/cohort/train/checkpoint_dir.h.
#include "cohort/train/checkpoint_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "cohort/common/atomic_file.h"
#include "cohort/common/logging.h"

namespace cohort::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFinalPrefix = "checkpoint_";
constexpr const char* kTempPrefix = ".tmp_checkpoint_";
// A checkpoint being replaced (only where RENAME_EXCHANGE is unsupported);
// FindLatestCheckpoint still takes it while its epoch has no final directory.
constexpr const char* kReplacedPrefix = ".replaced_checkpoint_";
// A checkpoint being deleted; never read, removed by RemoveOldCheckpoints.
constexpr const char* kDeletingPrefix = ".deleting_checkpoint_";

Status ErrnoStatus(const std::string& what, const std::string& path, int err) {
  std::string msg = what + " " + path + ": " + std::strerror(err);
  if (err == ENOENT) return Status::NotFound(msg);
  return Status::IoError(msg);
}

Status EcStatus(const std::string& what, const std::string& path, const std::error_code& ec) {
  return Status::IoError(what + " " + path + ": " + ec.message());
}

Status FsyncPath(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) return ErrnoStatus("cannot open for fsync", path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus("fsync failed for", path, err);
  return Status::Ok();
}

// Parses the all-digit `s` into *epoch.
bool ParseEpoch(const std::string& s, int64_t* epoch) {
  if (s.empty() || s.size() > 18) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *epoch = v;
  return true;
}

// "checkpoint_000012" -> 12.
bool ParseFinalName(const std::string& name, int64_t* epoch) {
  const std::string prefix = kFinalPrefix;
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  return ParseEpoch(name.substr(prefix.size()), epoch);
}

// ".replaced_checkpoint_12_4711" -> 12.
bool ParseReplacedName(const std::string& name, int64_t* epoch) {
  const std::string prefix = kReplacedPrefix;
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  std::string rest = name.substr(prefix.size());
  size_t us = rest.find('_');
  if (us == std::string::npos) return false;
  return ParseEpoch(rest.substr(0, us), epoch);
}

struct Entry {
  std::string path;
  int64_t epoch;
  bool replaced;  // a .replaced_ directory rather than a final one
};

// Final and replaced checkpoint directories under root (no root: none).
Result<std::vector<Entry>> ListCheckpointDirs(const std::string& root) {
  std::vector<Entry> out;
  std::error_code ec;
  if (!fs::exists(root, ec)) return out;
  fs::directory_iterator it(root, ec);
  if (ec) return EcStatus("cannot list checkpoint directory", root, ec);
  for (fs::directory_iterator end; it != end; it.increment(ec)) {
    if (ec) return EcStatus("cannot list checkpoint directory", root, ec);
    std::error_code type_ec;
    if (!it->is_directory(type_ec)) continue;
    std::string name = it->path().filename().string();
    Entry e{it->path().string(), 0, false};
    if (ParseFinalName(name, &e.epoch)) {
      out.push_back(e);
    } else if (ParseReplacedName(name, &e.epoch)) {
      e.replaced = true;
      out.push_back(e);
    }
  }
  if (ec) return EcStatus("cannot list checkpoint directory", root, ec);
  return out;
}

// The state.json of a complete checkpoint directory, or nullopt.
std::optional<std::string> ReadValidState(const std::string& dir) {
  Result<std::string> state = ReadFile(dir + "/" + kCheckpointStateFile);
  if (!state.ok()) return std::nullopt;
  if (!nlohmann::json::accept(*state)) return std::nullopt;
  return std::move(state).value();
}

// fsyncs every file and directory below dir, then dir.
Status FsyncTree(const std::string& dir) {
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, ec);
  if (ec) return EcStatus("cannot list", dir, ec);
  for (fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) return EcStatus("cannot list", dir, ec);
    std::error_code type_ec;
    auto status = it->symlink_status(type_ec);
    if (type_ec) return EcStatus("cannot stat", it->path().string(), type_ec);
    if (fs::is_regular_file(status)) {
      COHORT_RETURN_IF_ERROR(FsyncPath(it->path().string(), false));
    } else if (fs::is_directory(status)) {
      COHORT_RETURN_IF_ERROR(FsyncPath(it->path().string(), true));
    }
  }
  if (ec) return EcStatus("cannot list", dir, ec);
  return FsyncPath(dir, true);
}

Status RemoveTree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return EcStatus("cannot remove", path, ec);
  return Status::Ok();
}

// Hides `dir` under a .deleting_ name, then deletes it.
Status DeleteCheckpointDir(const std::string& root, const std::string& dir, int64_t epoch) {
  static std::atomic<uint64_t> counter{0};
  std::string hidden = root + "/" + kDeletingPrefix + std::to_string(epoch) + "_" +
                       std::to_string(::getpid()) + "_" + std::to_string(counter++);
  if (::rename(dir.c_str(), hidden.c_str()) != 0) {
    return ErrnoStatus("cannot rename " + dir + " to", hidden, errno);
  }
  return RemoveTree(hidden);
}

}  // namespace

std::string CheckpointDirName(int64_t epoch) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%s%06lld", kFinalPrefix, static_cast<long long>(epoch));
  return buf;
}

Status WriteFileAtomic(const std::string& path, const std::string& contents) {
  return WriteFileAtomically(path, contents);
}

Result<std::string> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open", path, errno);
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return ErrnoStatus("cannot read", path, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

Result<std::string> BeginCheckpoint(const std::string& root, int64_t epoch) {
  if (epoch < 0) {
    return Status::InvalidArgument("checkpoint epoch must be >= 0, got " + std::to_string(epoch));
  }
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return EcStatus("cannot create checkpoint directory", root, ec);
  std::string temp = root + "/" + kTempPrefix + std::to_string(epoch) + "_" +
                     std::to_string(::getpid());
  COHORT_RETURN_IF_ERROR(RemoveTree(temp));  // stale, from an earlier try
  if (!fs::create_directory(temp, ec) || ec) {
    return EcStatus("cannot create temporary checkpoint directory", temp, ec);
  }
  return temp;
}

Status CommitCheckpoint(const std::string& root, const std::string& temp_dir, int64_t epoch,
                        const std::string& state_json) {
  if (epoch < 0) {
    return Status::InvalidArgument("checkpoint epoch must be >= 0, got " + std::to_string(epoch));
  }
  if (!nlohmann::json::accept(state_json)) {
    return Status::InvalidArgument("checkpoint state for epoch " + std::to_string(epoch) +
                                   " is not valid JSON");
  }
  std::error_code ec;
  if (!fs::is_directory(temp_dir, ec)) {
    return Status::NotFound("temporary checkpoint directory " + temp_dir +
                            " does not exist (call BeginCheckpoint first)");
  }
  COHORT_RETURN_IF_ERROR(WriteFileAtomic(temp_dir + "/" + kCheckpointStateFile, state_json));
  COHORT_RETURN_IF_ERROR(FsyncTree(temp_dir));

  const std::string final_dir = root + "/" + CheckpointDirName(epoch);
  if (!fs::exists(final_dir, ec)) {
    if (::rename(temp_dir.c_str(), final_dir.c_str()) != 0) {
      return ErrnoStatus("cannot rename " + temp_dir + " to", final_dir, errno);
    }
    return FsyncPath(root, true);
  }

  // Replace: swap the two directories atomically, then delete the old one
  // (now at temp_dir's name, which readers ignore).
  if (::renameat2(AT_FDCWD, temp_dir.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) ==
      0) {
    COHORT_RETURN_IF_ERROR(FsyncPath(root, true));
    return RemoveTree(temp_dir);
  }
  if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
    return ErrnoStatus("cannot exchange " + temp_dir + " with", final_dir, errno);
  }
  // No RENAME_EXCHANGE here: move the old one aside under a name that
  // FindLatestCheckpoint still accepts, put the new one in place, then delete.
  std::string aside = root + "/" + kReplacedPrefix + std::to_string(epoch) + "_" +
                      std::to_string(::getpid());
  COHORT_RETURN_IF_ERROR(RemoveTree(aside));
  if (::rename(final_dir.c_str(), aside.c_str()) != 0) {
    return ErrnoStatus("cannot rename " + final_dir + " to", aside, errno);
  }
  if (::rename(temp_dir.c_str(), final_dir.c_str()) != 0) {
    int err = errno;
    ::rename(aside.c_str(), final_dir.c_str());  // put the old one back
    return ErrnoStatus("cannot rename " + temp_dir + " to", final_dir, err);
  }
  COHORT_RETURN_IF_ERROR(FsyncPath(root, true));
  return RemoveTree(aside);
}

Result<std::optional<CheckpointInfo>> FindLatestCheckpoint(const std::string& root) {
  COHORT_ASSIGN_OR_RETURN(std::vector<Entry> entries, ListCheckpointDirs(root));
  // Newest epoch first; within an epoch the final directory before a replaced one.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.epoch != b.epoch) return a.epoch > b.epoch;
    if (a.replaced != b.replaced) return !a.replaced;
    return a.path < b.path;
  });
  for (const Entry& e : entries) {
    std::optional<std::string> state = ReadValidState(e.path);
    if (!state) {
      COHORT_LOG(DEBUG) << "skipping incomplete checkpoint " << e.path;
      continue;
    }
    return std::optional<CheckpointInfo>(CheckpointInfo{e.path, e.epoch, std::move(*state)});
  }
  return std::optional<CheckpointInfo>();
}

Status RemoveOldCheckpoints(const std::string& root, int keep) {
  if (keep < 1) {
    return Status::InvalidArgument("number of checkpoints to keep must be >= 1, got " +
                                   std::to_string(keep));
  }
  COHORT_ASSIGN_OR_RETURN(std::vector<Entry> entries, ListCheckpointDirs(root));
  std::vector<Entry> complete;
  std::vector<Entry> incomplete;
  std::vector<Entry> replaced;
  for (const Entry& e : entries) {
    if (e.replaced) {
      replaced.push_back(e);
    } else if (ReadValidState(e.path)) {
      complete.push_back(e);
    } else {
      incomplete.push_back(e);
    }
  }
  std::sort(complete.begin(), complete.end(),
            [](const Entry& a, const Entry& b) { return a.epoch > b.epoch; });
  if (complete.empty()) return Status::Ok();  // nothing valid: delete nothing
  const size_t kept = std::min(complete.size(), static_cast<size_t>(keep));
  const int64_t oldest_kept = complete[kept - 1].epoch;
  std::vector<Entry> doomed(complete.begin() + static_cast<ptrdiff_t>(kept), complete.end());
  for (const Entry& e : incomplete) {
    if (e.epoch < oldest_kept) doomed.push_back(e);
  }
  // A replaced directory is redundant once its epoch has a complete final one
  // or is older than everything kept.
  for (const Entry& e : replaced) {
    bool superseded = e.epoch < oldest_kept;
    for (size_t i = 0; i < kept && !superseded; ++i) superseded = complete[i].epoch == e.epoch;
    if (superseded) doomed.push_back(e);
  }
  for (const Entry& e : doomed) {
    COHORT_RETURN_IF_ERROR(DeleteCheckpointDir(root, e.path, e.epoch));
  }
  // Leftovers of deletions a crash interrupted.
  std::error_code ec;
  fs::directory_iterator it(root, ec);
  if (ec) return EcStatus("cannot list checkpoint directory", root, ec);
  std::vector<std::string> leftovers;
  for (fs::directory_iterator end; it != end; it.increment(ec)) {
    if (ec) break;
    if (it->path().filename().string().rfind(kDeletingPrefix, 0) == 0) {
      leftovers.push_back(it->path().string());
    }
  }
  for (const std::string& path : leftovers) COHORT_RETURN_IF_ERROR(RemoveTree(path));
  return Status::Ok();
}

}  // namespace cohort::train
