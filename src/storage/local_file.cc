// Local-file plumbing for the file:// and mem:// stores; see local_file.h.
#include "local_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <vector>

namespace cohort::storage::local {

Status ErrnoStatus(int err, std::string_view what, std::string_view op) {
  std::string msg = std::string(what) + ": " + std::string(op) + ": " + ::strerror(err);
  if (err == ENOENT || err == ENOTDIR) return Status::NotFound(std::move(msg));
  return Status::IoError(std::move(msg));
}

std::string Dirname(std::string_view path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

std::string Basename(std::string_view path) {
  size_t slash = path.find_last_of('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

std::string JoinPath(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  std::string out(a);
  if (out.back() != '/') out += '/';
  out += b;
  return out;
}

int64_t MtimeNanos(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

std::string Rfc3339(int64_t unix_nanos) {
  time_t secs = static_cast<time_t>(unix_nanos / 1000000000);
  int millis = static_cast<int>((unix_nanos % 1000000000) / 1000000);
  struct tm tm {};
  ::gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
  return buf;
}

std::string RandomHex() {
  uint64_t v = 0;
  if (::getrandom(&v, sizeof(v), 0) != static_cast<ssize_t>(sizeof(v))) {
    // No entropy source: fall back to time, pid and a counter (O_EXCL catches collisions).
    static std::atomic<uint64_t> counter{0};
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    v = (static_cast<uint64_t>(ts.tv_nsec) << 20) ^ static_cast<uint64_t>(ts.tv_sec) ^
        (static_cast<uint64_t>(::getpid()) << 40) ^ counter.fetch_add(0x9E3779B97F4A7C15ull);
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}

Status PreadFull(int fd, char* buf, size_t n, uint64_t offset, size_t* got, std::string_view what) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, buf + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, what, "read");
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  *got = done;
  return Status::Ok();
}

Status WriteFull(int fd, std::string_view data, std::string_view what) {
  while (!data.empty()) {
    ssize_t r = ::write(fd, data.data(), data.size());
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, what, "write");
    }
    data.remove_prefix(static_cast<size_t>(r));
  }
  return Status::Ok();
}

Status FsyncDir(const std::string& dir, std::string_view what) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, what, "open directory " + dir);
  ScopedFd closer(fd);
  // Some file systems cannot fsync directories (EINVAL): nothing more to do there.
  if (::fsync(fd) != 0 && errno != EINVAL) return ErrnoStatus(errno, what, "fsync " + dir);
  return Status::Ok();
}

Status MakeDirs(const std::string& dir, std::string_view what) {
  std::vector<std::string> missing;  // deepest first
  std::string d = dir;
  while (!d.empty() && d != "/" && d != ".") {
    struct stat st {};
    if (::stat(d.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode))
        return Status::FailedPrecondition(std::string(what) + ": " + d + " is not a directory");
      break;
    }
    if (errno != ENOENT) return ErrnoStatus(errno, what, "stat " + d);
    missing.push_back(d);
    d = Dirname(d);
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0777) != 0) {
      if (errno == EEXIST) continue;  // made concurrently; open() checks it is a directory
      if (errno == ENOTDIR)
        return Status::FailedPrecondition(std::string(what) + ": a parent of " + *it +
                                          " is not a directory");
      return ErrnoStatus(errno, what, "mkdir " + *it);
    }
    COHORT_RETURN_IF_ERROR(FsyncDir(Dirname(*it), what));
  }
  return Status::Ok();
}

ScopedFd::~ScopedFd() {
  if (fd_ >= 0) ::close(fd_);
}

ScopedFd& ScopedFd::operator=(ScopedFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

Status ScopedFd::Close(std::string_view what) {
  int fd = release();
  if (fd >= 0 && ::close(fd) != 0 && errno != EINTR) return ErrnoStatus(errno, what, "close");
  return Status::Ok();
}

AtomicFile::AtomicFile(std::string path, std::string dir, std::string temp_path, std::string what,
                       int fd)
    : path_(std::move(path)),
      dir_(std::move(dir)),
      temp_path_(std::move(temp_path)),
      what_(std::move(what)),
      fd_(fd) {}

Result<std::unique_ptr<AtomicFile>> AtomicFile::Create(const std::string& path, std::string what) {
  std::string dir = Dirname(path);
  std::string name = Basename(path);
  if (name.empty()) return Status::InvalidArgument(what + ": names a directory, not a file");
  COHORT_RETURN_IF_ERROR(MakeDirs(dir, what));
  for (int attempt = 0;; ++attempt) {
    std::string temp = JoinPath(dir, "." + name + ".tmp." + RandomHex());
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0)
      return std::unique_ptr<AtomicFile>(new AtomicFile(path, dir, temp, std::move(what), fd));
    if (errno == EEXIST && attempt < 8) continue;
    if (errno == ENOTDIR)
      return Status::FailedPrecondition(what + ": a parent directory is a file");
    return ErrnoStatus(errno, what, "create " + temp);
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    (void)fd_.Close(what_);
    ::unlink(temp_path_.c_str());
  }
}

Status AtomicFile::Write(std::string_view data) { return WriteFull(fd_.get(), data, what_); }

Status AtomicFile::Commit(bool no_replace) {
  if (::fsync(fd_.get()) != 0) return ErrnoStatus(errno, what_, "fsync");
  if (::fstat(fd_.get(), &stat_) != 0) return ErrnoStatus(errno, what_, "fstat");
  COHORT_RETURN_IF_ERROR(fd_.Close(what_));
  if (no_replace) {
    if (::renameat2(AT_FDCWD, temp_path_.c_str(), AT_FDCWD, path_.c_str(), RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST) return Status::FailedPrecondition(what_ + ": already exists");
      if (errno != EINVAL && errno != ENOSYS) return ErrnoStatus(errno, what_, "rename");
      // The file system has no RENAME_NOREPLACE: link() also refuses to replace.
      if (::link(temp_path_.c_str(), path_.c_str()) != 0) {
        if (errno == EEXIST) return Status::FailedPrecondition(what_ + ": already exists");
        return ErrnoStatus(errno, what_, "link");
      }
      ::unlink(temp_path_.c_str());
    }
  } else if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    if (errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST)
      return Status::FailedPrecondition(what_ + ": is a directory");
    return ErrnoStatus(errno, what_, "rename");
  }
  committed_ = true;
  return FsyncDir(dir_, what_);
}

Status StreamRange(int fd, uint64_t offset, uint64_t length, const ProgressFn& progress,
                   const std::function<Status(std::string_view)>& sink, std::string_view what) {
  std::string buf(static_cast<size_t>(std::min<uint64_t>(length, kChunkBytes)), '\0');
  uint64_t done = 0;
  while (done < length) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(length - done, kChunkBytes));
    size_t got = 0;
    COHORT_RETURN_IF_ERROR(PreadFull(fd, buf.data(), want, offset + done, &got, what));
    if (got < want)
      return Status::IoError(std::string(what) + ": the file shrank while being read");
    COHORT_RETURN_IF_ERROR(sink(std::string_view(buf.data(), got)));
    done += got;
    if (progress) progress(done, length);
  }
  if (length == 0 && progress) progress(0, 0);
  return Status::Ok();
}

}  // namespace cohort::storage::local
