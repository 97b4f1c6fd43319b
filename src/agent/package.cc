// Package naming and zip extraction; see package.h.
#include "package.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

namespace cohort::agent {
namespace {

// Guards against zip bombs; far above any sane working_dir.
constexpr uint64_t kMaxExtractedBytes = 16ull << 30;
constexpr zip_int64_t kMaxEntries = 1'000'000;

std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(start, slash - start);
    if (!part.empty() && part != ".") parts.emplace_back(part);
    start = slash + 1;
  }
  return parts;
}

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Creates dest/parts[0]/.../parts[n-1] as real directories; an existing
// component that is not a directory (a symlink in particular) is an error.
Status MakeDirs(const std::string& dest, const std::vector<std::string>& parts, size_t n,
                std::string_view entry) {
  std::string path = dest;
  for (size_t i = 0; i < n; ++i) {
    path += "/" + parts[i];
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) continue;
      return Status::InvalidArgument("zip entry '" + std::string(entry) +
                                     "' goes through '" + parts[i] +
                                     "', which is not a directory (a symlink?)");
    }
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      return Status::IoError(Errno("cannot create " + path));
    }
  }
  return Status::Ok();
}

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
struct ZipFileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

}  // namespace

Result<std::string> PackageFileName(std::string_view uri) {
  constexpr std::string_view kScheme = "gcs://";
  if (uri.substr(0, kScheme.size()) != kScheme) {
    return Status::InvalidArgument("working_dir package '" + std::string(uri) +
                                   "' is not a gcs:// package URI");
  }
  std::string_view name = uri.substr(kScheme.size());
  bool ok = !name.empty() && name.size() <= 200 && name[0] != '.';
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '-' || c == '.');
  }
  if (!ok) {
    return Status::InvalidArgument("working_dir package '" + std::string(uri) +
                                   "' does not name a plain file");
  }
  return std::string(name);
}

Status CheckZipEntryName(std::string_view name) {
  if (name.empty()) return Status::InvalidArgument("zip entry with an empty name");
  if (name[0] == '/') {
    return Status::InvalidArgument("zip entry '" + std::string(name) +
                                   "' is an absolute path; refusing to extract it");
  }
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    if (slash == std::string_view::npos) slash = name.size();
    if (name.substr(start, slash - start) == "..") {
      return Status::InvalidArgument("zip entry '" + std::string(name) +
                                     "' leaves the working directory ('..'); refusing to "
                                     "extract it");
    }
    start = slash + 1;
  }
  if (SplitPath(name).empty()) {
    return Status::InvalidArgument("zip entry '" + std::string(name) + "' names no file");
  }
  return Status::Ok();
}

Status CheckZipSymlink(std::string_view link_name, std::string_view target,
                       const std::set<std::string>& other_links) {
  auto refuse = [&](const char* why) {
    return Status::InvalidArgument("zip symlink '" + std::string(link_name) + "' -> '" +
                                   std::string(target) + "' " + why +
                                   "; refusing to extract it");
  };
  if (target.empty() || target[0] == '/') return refuse("points outside the working directory");
  std::vector<std::string> dir = SplitPath(link_name);
  if (!dir.empty()) dir.pop_back();  // the link's own name
  std::vector<std::string> rest = SplitPath(target);
  // SplitPath drops "." and empty parts but keeps "..".
  for (size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] == "..") {
      if (dir.empty()) return refuse("points outside the working directory");
      dir.pop_back();
      continue;
    }
    dir.push_back(rest[i]);
    if (i + 1 < rest.size() && !other_links.empty()) {
      std::string prefix;
      for (const std::string& d : dir) prefix += (prefix.empty() ? "" : "/") + d;
      if (other_links.count(prefix) != 0) return refuse("goes through another symlink");
    }
  }
  return Status::Ok();
}

Status ExtractZip(const std::string& zip_path, const std::string& dest_dir) {
  int zerr = 0;
  std::unique_ptr<zip_t, ZipCloser> archive(zip_open(zip_path.c_str(), ZIP_RDONLY, &zerr));
  if (!archive) {
    zip_error_t error;
    zip_error_init_with_code(&error, zerr);
    std::string msg = zip_error_strerror(&error);
    zip_error_fini(&error);
    return Status::InvalidArgument("not a readable zip archive: " + msg);
  }
  zip_int64_t count = zip_get_num_entries(archive.get(), 0);
  if (count < 0 || count > kMaxEntries) {
    return Status::InvalidArgument("zip archive with " + std::to_string(count) + " entries");
  }

  // Pass 1: classify and check every entry before writing anything.
  struct Entry {
    zip_uint64_t index;
    std::string name;
    bool is_dir = false;
    bool is_symlink = false;
    mode_t mode = 0644;
  };
  std::vector<Entry> entries;
  for (zip_int64_t i = 0; i < count; ++i) {
    const char* raw = zip_get_name(archive.get(), i, ZIP_FL_ENC_RAW);
    if (raw == nullptr) return Status::InvalidArgument("zip entry without a name");
    Entry e{static_cast<zip_uint64_t>(i), raw};
    COHORT_RETURN_IF_ERROR(CheckZipEntryName(e.name));
    zip_uint8_t opsys = 0;
    zip_uint32_t attributes = 0;
    if (zip_file_get_external_attributes(archive.get(), i, 0, &opsys, &attributes) == 0 &&
        opsys == ZIP_OPSYS_UNIX) {
      mode_t mode = attributes >> 16;
      e.is_symlink = S_ISLNK(mode);
      e.is_dir = S_ISDIR(mode);
      if (mode & 0777) e.mode = (mode & 0777) | 0600;
    }
    if (e.name.back() == '/') e.is_dir = true;
    if (e.is_dir) e.mode = 0755;
    entries.push_back(std::move(e));
  }

  std::set<std::string> links;
  for (const Entry& e : entries) {
    if (!e.is_symlink) continue;
    std::string joined;
    for (const std::string& p : SplitPath(e.name)) joined += (joined.empty() ? "" : "/") + p;
    links.insert(joined);
  }

  if (::mkdir(dest_dir.c_str(), 0755) != 0) return Status::IoError(Errno("mkdir " + dest_dir));

  // Pass 2: directories and regular files (no symlink exists yet).
  uint64_t total = 0;
  std::vector<char> buf(1 << 16);
  for (const Entry& e : entries) {
    if (e.is_symlink) continue;
    std::vector<std::string> parts = SplitPath(e.name);
    if (e.is_dir) {
      COHORT_RETURN_IF_ERROR(MakeDirs(dest_dir, parts, parts.size(), e.name));
      continue;
    }
    COHORT_RETURN_IF_ERROR(MakeDirs(dest_dir, parts, parts.size() - 1, e.name));
    std::string path = dest_dir;
    for (const std::string& p : parts) path += "/" + p;
    std::unique_ptr<zip_file_t, ZipFileCloser> in(zip_fopen_index(archive.get(), e.index, 0));
    if (!in) {
      return Status::InvalidArgument("cannot read zip entry '" + e.name +
                                     "': " + zip_strerror(archive.get()));
    }
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, e.mode);
    if (fd < 0) {
      if (errno == EEXIST) {
        return Status::InvalidArgument("zip entry '" + e.name + "' appears twice");
      }
      return Status::IoError(Errno("cannot create " + path));
    }
    Status st;
    for (;;) {
      zip_int64_t n = zip_fread(in.get(), buf.data(), buf.size());
      if (n < 0) {
        st = Status::InvalidArgument("corrupt zip entry '" + e.name +
                                     "': " + zip_file_strerror(in.get()));
        break;
      }
      if (n == 0) break;
      total += static_cast<uint64_t>(n);
      if (total > kMaxExtractedBytes) {
        st = Status::InvalidArgument("zip archive expands to more than " +
                                     std::to_string(kMaxExtractedBytes) + " bytes");
        break;
      }
      const char* p = buf.data();
      size_t left = static_cast<size_t>(n);
      while (left > 0 && st.ok()) {
        ssize_t w = ::write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
          st = Status::IoError(Errno("cannot write " + path));
          break;
        }
        p += w;
        left -= static_cast<size_t>(w);
      }
      if (!st.ok()) break;
    }
    ::close(fd);
    COHORT_RETURN_IF_ERROR(st);
  }

  // Pass 3: symlinks, each checked lexically; their parents must be real
  // directories, so the lexical check is the truth.
  for (const Entry& e : entries) {
    if (!e.is_symlink) continue;
    std::unique_ptr<zip_file_t, ZipFileCloser> in(zip_fopen_index(archive.get(), e.index, 0));
    if (!in) return Status::InvalidArgument("cannot read zip entry '" + e.name + "'");
    std::string target;
    for (;;) {
      zip_int64_t n = zip_fread(in.get(), buf.data(), buf.size());
      if (n < 0) return Status::InvalidArgument("corrupt zip entry '" + e.name + "'");
      if (n == 0) break;
      target.append(buf.data(), static_cast<size_t>(n));
      if (target.size() > 4096) {
        return Status::InvalidArgument("zip symlink '" + e.name + "' has an overlong target");
      }
    }
    COHORT_RETURN_IF_ERROR(CheckZipSymlink(e.name, target, links));
    std::vector<std::string> parts = SplitPath(e.name);
    COHORT_RETURN_IF_ERROR(MakeDirs(dest_dir, parts, parts.size() - 1, e.name));
    std::string path = dest_dir;
    for (const std::string& p : parts) path += "/" + p;
    if (::symlink(target.c_str(), path.c_str()) != 0) {
      if (errno == EEXIST) {
        return Status::InvalidArgument("zip symlink '" + e.name +
                                       "' appears twice or is also a directory of the archive");
      }
      return Status::IoError(Errno("cannot create symlink " + path));
    }
  }
  return Status::Ok();
}

}  // namespace cohort::agent
