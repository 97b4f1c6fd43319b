// See include/cohort/common/atomic_file.h.
#include "cohort/common/atomic_file.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cohort {
namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

// The directory holding `path` ("." for a bare name, "/" for "/name").
std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

Status WriteFileAtomically(const std::string& path, std::string_view contents, mode_t mode) {
  if (path.empty() || path.back() == '/') {
    return Status::InvalidArgument("cannot write a file at '" + path + "': not a file path");
  }
  const std::string dir = DirectoryOf(path);
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + ".XXXXXX";
  int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return Status::IoError("cannot create a temporary file to write " + path + " (in " + dir +
                           "): " + ErrnoText(err));
  }
  // Removes the temporary file and describes the failed step.
  auto fail = [&](const char* step, int err) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return Status::IoError("cannot " + std::string(step) + " " + path + " (through " + tmp +
                           "): " + ErrnoText(err));
  };
  for (size_t done = 0; done < contents.size();) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write", errno);
    }
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd, mode) != 0) return fail("set the mode of", errno);
  if (::fsync(fd) != 0) return fail("fsync", errno);
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) return fail("close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("rename into place", errno);

  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int err = dfd < 0 ? errno : 0;
  if (dfd >= 0) {
    if (::fsync(dfd) != 0) err = errno;
    ::close(dfd);
  }
  // EINVAL: a file system without fsync for directories; nothing more to do.
  if (err != 0 && err != EINVAL) {
    return Status::IoError("wrote " + path + ", but cannot fsync its directory " + dir +
                           " (the new file may not survive a crash): " + ErrnoText(err));
  }
  return Status::Ok();
}

}  // namespace cohort
