// Working-directory packaging; see cli/package.h.
#include "cli/package.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

#include <openssl/evp.h>

namespace cohort::cli {
namespace {

// 1980-01-02 00:00:00 UTC: the zip (DOS) epoch plus a day, so no time zone
// turns it into a pre-1980 time.
constexpr time_t kFixedMtime = 315619200;

struct DirId {
  dev_t dev;
  ino_t ino;
  bool operator==(const DirId& o) const { return dev == o.dev && ino == o.ino; }
};

class Scanner {
 public:
  Scanner(const PackageOptions& options, PackageContents* out) : options_(options), out_(out) {}

  // Walks `abs` (a directory, stat'ed as `st`) whose path relative to the
  // root is `rel` ("" for the root). Returns whether it added any entry.
  Result<bool> Walk(const std::string& abs, const std::string& rel, const struct stat& st) {
    DirId id{st.st_dev, st.st_ino};
    if (std::find(ancestors_.begin(), ancestors_.end(), id) != ancestors_.end()) {
      return false;  // a symlink back up the tree: skip the loop
    }
    ancestors_.push_back(id);
    Result<bool> added = WalkChildren(abs, rel);
    ancestors_.pop_back();
    if (!added.ok()) return added.status();
    if (!*added && !rel.empty()) {
      out_->entries.push_back(PackageEntry{rel + "/", true, false, ""});
      return true;
    }
    return *added;
  }

 private:
  Result<bool> WalkChildren(const std::string& abs, const std::string& rel) {
    DIR* d = ::opendir(abs.c_str());
    if (d == nullptr) {
      return Status::IoError("cannot list directory " + abs + ": " + std::strerror(errno));
    }
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      names.push_back(std::move(name));
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    bool added = false;
    for (const std::string& name : names) {
      if (IsExcludedName(name)) continue;
      const std::string child_abs = abs + "/" + name;
      const std::string child_rel = rel.empty() ? name : rel + "/" + name;
      struct stat st;
      if (::stat(child_abs.c_str(), &st) != 0) {
        if (errno == ENOENT) continue;  // dangling symlink, or removed while we walk
        return Status::IoError("cannot stat " + child_abs + ": " + std::strerror(errno));
      }
      if (S_ISDIR(st.st_mode)) {
        COHORT_ASSIGN_OR_RETURN(bool child_added, Walk(child_abs, child_rel, st));
        added = added || child_added;
      } else if (S_ISREG(st.st_mode)) {
        PackageEntry entry;
        entry.path = child_rel;
        entry.executable = (st.st_mode & S_IXUSR) != 0;
        COHORT_ASSIGN_OR_RETURN(entry.content, ReadWholeFile(child_abs));
        out_->total_bytes += entry.content.size();
        if (out_->total_bytes > options_.max_bytes) {
          return Status::InvalidArgument(
              "working directory " + out_->root + " holds more than " +
              std::to_string(options_.max_bytes >> 20) +
              " MiB of files: move data sets out of it (read them from storage instead)");
        }
        out_->entries.push_back(std::move(entry));
        added = true;
      }
      // Sockets, FIFOs and devices are not packaged.
    }
    return added;
  }

  static Result<std::string> ReadWholeFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::IoError("cannot read " + path + ": " + std::strerror(errno));
    std::string out;
    char buf[1 << 16];
    while (true) {
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        return Status::IoError("cannot read " + path + ": " + std::strerror(err));
      }
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }

  const PackageOptions& options_;
  PackageContents* out_;
  std::vector<DirId> ancestors_;
};

std::string ZipErrorText(zip_error_t* error) {
  const char* s = zip_error_strerror(error);
  return s ? s : "unknown libzip error";
}

std::string ZipErrorText(zip_t* za) { return ZipErrorText(zip_get_error(za)); }

// The 22-byte end-of-central-directory record of a zip with no entries
// (libzip writes nothing at all for an empty archive).
std::string EmptyZip() {
  std::string z = "PK\x05\x06";
  z.append(18, '\0');
  return z;
}

}  // namespace

bool IsExcludedName(std::string_view name) {
  return name == ".git" || name == "__pycache__" || name == ".venv" || name == "venv";
}

std::string Sha1Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha1(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

std::string PackageName(const std::vector<PackageEntry>& entries) {
  std::vector<const PackageEntry*> sorted;
  sorted.reserve(entries.size());
  for (const PackageEntry& e : entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(),
            [](const PackageEntry* a, const PackageEntry* b) { return a->path < b->path; });
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha1(), nullptr);
  for (const PackageEntry* e : sorted) {
    // kind, path, NUL, size, NUL, bytes: unambiguous without escaping.
    const char kind = e->is_dir ? 'd' : (e->executable ? 'x' : 'f');
    const std::string size = std::to_string(e->content.size());
    EVP_DigestUpdate(ctx, &kind, 1);
    EVP_DigestUpdate(ctx, e->path.data(), e->path.size());
    EVP_DigestUpdate(ctx, "\0", 1);
    EVP_DigestUpdate(ctx, size.data(), size.size());
    EVP_DigestUpdate(ctx, "\0", 1);
    EVP_DigestUpdate(ctx, e->content.data(), e->content.size());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, digest, &len);
  EVP_MD_CTX_free(ctx);
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < 8 && i < len; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return "_ray_pkg_" + hex + ".zip";
}

Result<PackageContents> ScanDirectory(const std::string& dir, const PackageOptions& options) {
  PackageContents out;
  out.root = dir;
  while (out.root.size() > 1 && out.root.back() == '/') out.root.pop_back();
  struct stat st;
  if (::stat(out.root.c_str(), &st) != 0) {
    return Status::InvalidArgument("working directory " + dir + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("working directory " + dir + " is not a directory");
  }
  Scanner scanner(options, &out);
  COHORT_RETURN_IF_ERROR(scanner.Walk(out.root, "", st).status());
  std::sort(out.entries.begin(), out.entries.end(),
            [](const PackageEntry& a, const PackageEntry& b) { return a.path < b.path; });
  out.name = PackageName(out.entries);
  return out;
}

Result<std::string> ZipPackage(const PackageContents& contents) {
  if (contents.entries.empty()) return EmptyZip();
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* archive_src = zip_source_buffer_create(nullptr, 0, 0, &error);
  if (archive_src == nullptr) {
    Status s = Status::Internal("cannot create a zip buffer: " + ZipErrorText(&error));
    zip_error_fini(&error);
    return s;
  }
  zip_t* za = zip_open_from_source(archive_src, ZIP_TRUNCATE, &error);
  if (za == nullptr) {
    Status s = Status::Internal("cannot open a zip buffer: " + ZipErrorText(&error));
    zip_source_free(archive_src);
    zip_error_fini(&error);
    return s;
  }
  zip_error_fini(&error);
  zip_source_keep(archive_src);  // read the bytes back after zip_close

  auto fail = [&](const std::string& what) -> Status {
    Status s = Status::Internal(what + ": " + ZipErrorText(za));
    zip_discard(za);
    zip_source_free(archive_src);
    return s;
  };
  for (const PackageEntry& e : contents.entries) {
    zip_int64_t index;
    uint32_t mode;
    if (e.is_dir) {
      std::string name = e.path;
      if (!name.empty() && name.back() == '/') name.pop_back();
      index = zip_dir_add(za, name.c_str(), ZIP_FL_ENC_GUESS);
      if (index < 0) return fail("cannot add directory " + e.path + " to the package");
      mode = S_IFDIR | 0755;
    } else {
      // The entry's bytes stay owned by `contents` until zip_close.
      zip_source_t* src = zip_source_buffer(za, e.content.data(), e.content.size(), 0);
      if (src == nullptr) return fail("cannot add " + e.path + " to the package");
      index = zip_file_add(za, e.path.c_str(), src, ZIP_FL_ENC_GUESS);
      if (index < 0) {
        zip_source_free(src);
        return fail("cannot add " + e.path + " to the package");
      }
      if (zip_set_file_compression(za, static_cast<zip_uint64_t>(index), ZIP_CM_DEFLATE, 6) != 0) {
        return fail("cannot set compression for " + e.path);
      }
      mode = S_IFREG | (e.executable ? 0755 : 0644);
    }
    const auto i = static_cast<zip_uint64_t>(index);
    if (zip_file_set_mtime(za, i, kFixedMtime, 0) != 0 ||
        zip_file_set_external_attributes(za, i, 0, ZIP_OPSYS_UNIX, mode << 16) != 0) {
      return fail("cannot set attributes of " + e.path);
    }
  }
  if (zip_close(za) != 0) return fail("cannot write the package");

  std::string bytes;
  if (zip_source_open(archive_src) != 0) {
    Status s = Status::Internal("cannot read the package back: " +
                                ZipErrorText(zip_source_error(archive_src)));
    zip_source_free(archive_src);
    return s;
  }
  char buf[1 << 16];
  while (true) {
    zip_int64_t n = zip_source_read(archive_src, buf, sizeof(buf));
    if (n < 0) {
      Status s = Status::Internal("cannot read the package back: " +
                                  ZipErrorText(zip_source_error(archive_src)));
      zip_source_close(archive_src);
      zip_source_free(archive_src);
      return s;
    }
    if (n == 0) break;
    bytes.append(buf, static_cast<size_t>(n));
  }
  zip_source_close(archive_src);
  zip_source_free(archive_src);
  return bytes;
}

}  // namespace cohort::cli
