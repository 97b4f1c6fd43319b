// Local-file plumbing shared by the file:// and mem:// stores (internal to
// storage/): errno-to-Status, full read/write loops, directory creation and
// fsync, and AtomicFile, the "temp file next to the target, fsync, rename,
// fsync(dir)" writer that makes puts and downloads all-or-nothing.
//
// Everything here is stateless or owned by one caller: call from any thread.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cohort/common/status.h"
#include "cohort/storage/blob_store.h"

namespace cohort::storage::local {

// Copies stream in chunks of this many bytes.
inline constexpr size_t kChunkBytes = size_t{1} << 20;

// "<what>: <op>: <strerror(err)>" as NotFound (ENOENT, ENOTDIR) or IoError.
Status ErrnoStatus(int err, std::string_view what, std::string_view op);

// "dir" of "dir/name" ("." for "name", "/" for "/name").
std::string Dirname(std::string_view path);
// "name" of "dir/name".
std::string Basename(std::string_view path);
// a + "/" + b without doubling a trailing '/'.
std::string JoinPath(std::string_view a, std::string_view b);

// mtime as nanoseconds since the epoch; RFC 3339 (UTC, milliseconds) of it.
int64_t MtimeNanos(const struct stat& st);
std::string Rfc3339(int64_t unix_nanos);

// 16 random hex digits (getrandom; unique enough for temp-file names).
std::string RandomHex();

// Reads up to n bytes at offset (pread, retrying EINTR and short reads);
// *got < n only at end of file.
Status PreadFull(int fd, char* buf, size_t n, uint64_t offset, size_t* got, std::string_view what);
// Writes all of data (retrying EINTR and short writes).
Status WriteFull(int fd, std::string_view data, std::string_view what);

// Creates dir and missing parents, fsyncing each parent that gained an entry.
// FailedPrecondition if a component is not a directory.
Status MakeDirs(const std::string& dir, std::string_view what);
// fsync of a directory (makes renames/creates/unlinks in it durable).
Status FsyncDir(const std::string& dir, std::string_view what);

// An fd closed on destruction.
class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) : fd_(fd) {}
  ~ScopedFd();
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept;
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes now, reporting a close() error (write-back failures surface here).
  Status Close(std::string_view what);

 private:
  int fd_;
};

// Writes a file atomically: data goes to "<dir>/.<name>.tmp.<random>" next to
// path; Commit() fsyncs it, renames it over path and fsyncs the directory.
// Destroying an uncommitted AtomicFile removes the temp file, so a failed
// write leaves nothing behind (a crash may leave the temp file, which
// listings skip).
class AtomicFile {
 public:
  // Creates the temp file (and path's directory, with parents). `what`
  // names path in error messages (e.g. its URI).
  static Result<std::unique_ptr<AtomicFile>> Create(const std::string& path, std::string what);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  Status Write(std::string_view data);
  int fd() const { return fd_.get(); }
  const std::string& temp_path() const { return temp_path_; }

  // fsync(file); fstat (see stat()); close; rename over path -- with
  // no_replace, FailedPrecondition "<what>: already exists" if path exists
  // (renameat2 RENAME_NOREPLACE, or link() where the file system lacks it);
  // fsync(dir).
  Status Commit(bool no_replace);
  // The temp file's stat as of Commit (size, mtime).
  const struct stat& stat() const { return stat_; }

 private:
  AtomicFile(std::string path, std::string dir, std::string temp_path, std::string what, int fd);

  std::string path_;
  std::string dir_;
  std::string temp_path_;
  std::string what_;
  ScopedFd fd_;
  bool committed_ = false;
  struct stat stat_ {};
};

// Streams [offset, offset + length) of an open file to sink in kChunkBytes
// pieces, calling progress(done, length) after each. IoError if the file
// ends early (it changed while being read).
Status StreamRange(int fd, uint64_t offset, uint64_t length, const ProgressFn& progress,
                   const std::function<Status(std::string_view)>& sink, std::string_view what);

}  // namespace cohort::storage::local
