// LogStore: per-job append-only log files. See log_store.h for the contract.
//
// Appends go through cached O_APPEND descriptors under mu_; reads open their
// own O_RDONLY descriptor and pread(2), so a reader never waits for a writer.
#include "cohort/head/log_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace cohort::head {
namespace {

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

Status IoErrorAt(std::string_view what, const std::string& path, int err) {
  return Status::IoError("log " + path + ": " + std::string(what) + ": " + ErrnoText(err));
}

// Closes an fd when it goes out of scope.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

// Opens `path` for reading; -1 with errno ENOENT if it does not exist.
int OpenForRead(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// Reads up to `len` bytes at `offset` (fewer only at end of file).
Result<std::string> PreadAll(int fd, const std::string& path, uint64_t offset, size_t len) {
  std::string out(len, '\0');
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, out.data() + got, len - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoErrorAt("read", path, errno);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

// Size of an open file.
Result<uint64_t> FdSize(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return IoErrorAt("stat", path, errno);
  return static_cast<uint64_t>(st.st_size);
}

// Length of the longest prefix of `s` that does not end inside a UTF-8
// character (a lead byte whose continuation bytes are missing). Invalid UTF-8
// is passed through untouched: only a truncated multi-byte tail is held back.
size_t Utf8SafePrefix(std::string_view s) {
  size_t n = s.size();
  // Find the last lead byte among the last 4 bytes.
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t need = (c & 0x80) == 0 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return back < need ? n - back : n;
  }
  return n;
}

}  // namespace

LogStore::LogStore(std::string root) : root_(std::move(root)) {}

LogStore::~LogStore() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [job_id, fd] : append_fds_) ::close(fd);
}

Result<std::unique_ptr<LogStore>> LogStore::Open(const std::string& root) {
  if (root.empty()) return Status::InvalidArgument("log root must not be empty");
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) return Status::IoError("log root " + root + ": cannot create: " + ec.message());
  return std::unique_ptr<LogStore>(new LogStore(root));
}

Status LogStore::ValidateJobId(std::string_view job_id) {
  auto bad = [&](std::string_view why) {
    std::string shown(job_id.substr(0, 64));
    for (char& c : shown) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    }
    return Status::InvalidArgument("invalid job id '" + shown + "': " + std::string(why));
  };
  if (job_id.empty()) return bad("must not be empty");
  if (job_id.size() > kMaxJobIdBytes) return bad("longer than " + std::to_string(kMaxJobIdBytes) + " bytes");
  if (job_id == ".") return bad("must not be '.'");
  if (job_id.find("..") != std::string_view::npos) return bad("must not contain '..'");
  for (char c : job_id) {
    if (c == '/' || c == '\\') return bad("must not contain '/' or '\\'");
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return bad("must not contain control characters");
  }
  return Status::Ok();
}

Result<std::string> LogStore::PathFor(std::string_view job_id) const {
  COHORT_RETURN_IF_ERROR(ValidateJobId(job_id));
  return root_ + "/" + std::string(job_id) + ".log";
}

Result<int> LogStore::AppendFdLocked(const std::string& job_id, const std::string& path) {
  auto it = append_fds_.find(job_id);
  if (it != append_fds_.end()) return it->second;
  auto open_append = [&] { return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644); };
  int fd;
  do {
    fd = open_append();
  } while (fd < 0 && errno == EINTR);
  if (fd < 0 && errno == ENOENT) {  // root removed under us: recreate it once
    std::error_code ec;
    std::filesystem::create_directories(root_, ec);
    if (ec) return Status::IoError("log root " + root_ + ": cannot create: " + ec.message());
    fd = open_append();
  }
  if (fd < 0) return IoErrorAt("open for append", path, errno);
  if (append_fds_.size() >= kMaxOpenFiles) {
    ::close(append_fds_.begin()->second);
    append_fds_.erase(append_fds_.begin());
  }
  append_fds_.emplace(job_id, fd);
  return fd;
}

Status LogStore::Append(std::string_view job_id, std::string_view text) {
  COHORT_ASSIGN_OR_RETURN(std::string path, PathFor(job_id));
  if (text.empty()) return Status::Ok();
  std::string id(job_id);
  std::lock_guard<std::mutex> lock(mu_);
  COHORT_ASSIGN_OR_RETURN(int fd, AppendFdLocked(id, path));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      // Drop the descriptor so the next Append starts from a fresh open.
      ::close(fd);
      append_fds_.erase(id);
      return IoErrorAt("append", path, err);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status LogStore::Sync(std::string_view job_id) {
  COHORT_ASSIGN_OR_RETURN(std::string path, PathFor(job_id));
  int fd = OpenForRead(path);  // fsync through any descriptor flushes the file
  if (fd < 0) return errno == ENOENT ? Status::Ok() : IoErrorAt("open", path, errno);
  FdCloser closer(fd);
  if (::fsync(fd) != 0) return IoErrorAt("fsync", path, errno);
  return Status::Ok();
}

void LogStore::Close(std::string_view job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = append_fds_.find(std::string(job_id));
  if (it == append_fds_.end()) return;
  ::close(it->second);
  append_fds_.erase(it);
}

Result<LogChunk> LogStore::Read(std::string_view job_id, uint64_t offset, size_t max_bytes) {
  COHORT_ASSIGN_OR_RETURN(std::string path, PathFor(job_id));
  LogChunk chunk;
  chunk.next_offset = offset;
  int fd = OpenForRead(path);
  if (fd < 0) return errno == ENOENT ? Result<LogChunk>(chunk) : IoErrorAt("open", path, errno);
  FdCloser closer(fd);
  COHORT_ASSIGN_OR_RETURN(uint64_t size, FdSize(fd, path));
  if (offset >= size || max_bytes == 0) return chunk;
  size_t len = static_cast<size_t>(std::min<uint64_t>(max_bytes, size - offset));
  COHORT_ASSIGN_OR_RETURN(chunk.data, PreadAll(fd, path, offset, len));
  chunk.next_offset = offset + chunk.data.size();
  return chunk;
}

Result<LogChunk> LogStore::ReadLines(std::string_view job_id, uint64_t offset, size_t max_lines, size_t max_bytes,
                                     bool include_partial_line) {
  if (max_lines == 0 || max_bytes == 0) return Status::InvalidArgument("ReadLines needs max_lines and max_bytes > 0");
  COHORT_ASSIGN_OR_RETURN(LogChunk raw, Read(job_id, offset, max_bytes));
  std::string_view data = raw.data;
  // Keep through the max_lines-th newline.
  size_t lines = 0;
  size_t keep = 0;  // bytes of whole lines
  for (size_t i = 0; i < data.size() && lines < max_lines; ++i) {
    if (data[i] == '\n') {
      ++lines;
      keep = i + 1;
    }
  }
  if (lines < max_lines && keep < data.size()) {
    // Bytes after the last newline: a line still being written, the file's
    // unterminated last line, or a line longer than max_bytes.
    bool cut_by_max_bytes = data.size() == max_bytes;
    if (keep == 0 && cut_by_max_bytes) {
      keep = Utf8SafePrefix(data);  // one over-long line: hand it out in pieces
      if (keep == 0) keep = data.size();
    } else if (include_partial_line && !cut_by_max_bytes) {
      keep = data.size();
    }
  }
  raw.data.resize(keep);
  raw.next_offset = offset + keep;
  return raw;
}

Result<std::string> LogStore::ReadAll(std::string_view job_id, size_t max_bytes) {
  COHORT_ASSIGN_OR_RETURN(std::string path, PathFor(job_id));
  int fd = OpenForRead(path);
  if (fd < 0) return errno == ENOENT ? Result<std::string>(std::string()) : IoErrorAt("open", path, errno);
  FdCloser closer(fd);
  COHORT_ASSIGN_OR_RETURN(uint64_t size, FdSize(fd, path));
  if (size <= max_bytes) return PreadAll(fd, path, 0, static_cast<size_t>(size));
  // Too big: keep the end (where failures are), starting at a line boundary.
  COHORT_ASSIGN_OR_RETURN(std::string tail, PreadAll(fd, path, size - max_bytes, max_bytes));
  size_t nl = tail.find('\n');
  if (nl != std::string::npos && nl + 1 < tail.size()) tail.erase(0, nl + 1);
  return "[cohort: log truncated: showing the last " + std::to_string(tail.size()) + " of " +
         std::to_string(size) + " bytes]\n" + tail;
}

Result<std::string> LogStore::Tail(std::string_view job_id, size_t n_lines, size_t max_bytes) {
  COHORT_ASSIGN_OR_RETURN(std::string path, PathFor(job_id));
  if (n_lines == 0 || max_bytes == 0) return std::string();
  int fd = OpenForRead(path);
  if (fd < 0) return errno == ENOENT ? Result<std::string>(std::string()) : IoErrorAt("open", path, errno);
  FdCloser closer(fd);
  COHORT_ASSIGN_OR_RETURN(uint64_t size, FdSize(fd, path));
  const uint64_t window_max = std::min<uint64_t>(size, max_bytes);
  // Read a growing window off the end until it holds n_lines line starts.
  uint64_t window = std::min<uint64_t>(window_max, 64 * 1024);
  while (true) {
    COHORT_ASSIGN_OR_RETURN(std::string data, PreadAll(fd, path, size - window, static_cast<size_t>(window)));
    size_t limit = data.size();
    if (limit > 0 && data[limit - 1] == '\n') --limit;  // a trailing '\n' ends the last line
    size_t count = 0;
    for (size_t i = limit; i > 0; --i) {
      if (data[i - 1] == '\n' && ++count == n_lines) return data.substr(i);
    }
    if (window == size) return data;  // the whole file has fewer lines
    if (window == window_max) {
      // Hit max_bytes: drop the partial first line when there is a whole one.
      size_t nl = data.find('\n');
      if (nl != std::string::npos && nl + 1 < data.size()) data.erase(0, nl + 1);
      return data;
    }
    window = std::min<uint64_t>(window_max, window * 2);
  }
}

Result<uint64_t> LogStore::Size(std::string_view job_id) {
  COHORT_ASSIGN_OR_RETURN(std::string path, PathFor(job_id));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return uint64_t{0};
    return IoErrorAt("stat", path, errno);
  }
  return static_cast<uint64_t>(st.st_size);
}

Status LogStore::Remove(std::string_view job_id) {
  COHORT_ASSIGN_OR_RETURN(std::string path, PathFor(job_id));
  std::lock_guard<std::mutex> lock(mu_);  // no Append reopens it between close and unlink
  auto it = append_fds_.find(std::string(job_id));
  if (it != append_fds_.end()) {
    ::close(it->second);
    append_fds_.erase(it);
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return IoErrorAt("remove", path, errno);
  const std::string marks = root_ + "/" + std::string(job_id) + ".marks";
  if (::unlink(marks.c_str()) != 0 && errno != ENOENT) return IoErrorAt("remove", marks, errno);
  return Status::Ok();
}

namespace {
constexpr size_t kMarkBytes = 16;

void EncodeMark(const LogStore::Mark& m, unsigned char* out) {
  auto put = [&](uint64_t v, int at, int n) {
    for (int i = 0; i < n; ++i) out[at + i] = static_cast<unsigned char>(v >> (8 * i));
  };
  put(static_cast<uint32_t>(m.attempt), 0, 4);
  put(static_cast<uint32_t>(m.rank), 4, 4);
  put(m.offset, 8, 8);
}

LogStore::Mark DecodeMark(const unsigned char* in) {
  auto get = [&](int at, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(in[at + i]) << (8 * i);
    return v;
  };
  LogStore::Mark m;
  m.attempt = static_cast<int32_t>(static_cast<uint32_t>(get(0, 4)));
  m.rank = static_cast<int32_t>(static_cast<uint32_t>(get(4, 4)));
  m.offset = get(8, 8);
  return m;
}
}  // namespace

Result<std::vector<LogStore::Mark>> LogStore::ReadMarks(std::string_view job_id) {
  COHORT_RETURN_IF_ERROR(ValidateJobId(job_id));
  const std::string path = root_ + "/" + std::string(job_id) + ".marks";
  std::vector<Mark> marks;
  int fd = OpenForRead(path);
  if (fd < 0) return errno == ENOENT ? Result<std::vector<Mark>>(marks) : IoErrorAt("open", path, errno);
  FdCloser closer(fd);
  COHORT_ASSIGN_OR_RETURN(uint64_t size, FdSize(fd, path));
  std::vector<unsigned char> buf(static_cast<size_t>(std::min<uint64_t>(size, uint64_t{64} << 20)));
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoErrorAt("read", path, errno);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  for (size_t at = 0; at + kMarkBytes <= done; at += kMarkBytes) marks.push_back(DecodeMark(buf.data() + at));
  return marks;
}

Status LogStore::WriteMark(std::string_view job_id, size_t slot, const Mark& mark) {
  COHORT_RETURN_IF_ERROR(ValidateJobId(job_id));
  const std::string path = root_ + "/" + std::string(job_id) + ".marks";
  int fd;
  do {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return IoErrorAt("open", path, errno);
  FdCloser closer(fd);
  unsigned char rec[kMarkBytes];
  EncodeMark(mark, rec);
  ssize_t n;
  do {
    n = ::pwrite(fd, rec, sizeof(rec), static_cast<off_t>(slot * kMarkBytes));
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(rec))) return IoErrorAt("write", path, n < 0 ? errno : EIO);
  return Status::Ok();
}

}  // namespace cohort::head
