// The file:// BlobStore (a local directory as a bucket); see file_store.h and
// spec/storage.md §4. Created by OpenStore() (store_registry.cc) and tests;
// thread-safe: no state but the root.
#include "file/file_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "backends.h"
#include "cohort/storage/crc32c.h"
#include "keys.h"
#include "local_file.h"

namespace cohort::storage {
namespace {

using local::ScopedFd;

std::string FileUri(std::string_view path) { return "file://" + std::string(path); }

std::string CacheValue(const struct stat& st, uint32_t crc) {
  char buf[80];
  std::snprintf(buf, sizeof(buf), "%" PRIu64 ":%" PRId64 ":%08" PRIx32,
                static_cast<uint64_t>(st.st_size), local::MtimeNanos(st), crc);
  return buf;
}

// The cached CRC32C if the xattr exists and matches the file's size and mtime.
std::optional<uint32_t> ParseCache(const char* value, ssize_t n, const struct stat& st) {
  if (n <= 0) return std::nullopt;
  std::string v(value, static_cast<size_t>(n));
  uint64_t size = 0;
  int64_t mtime = 0;
  uint32_t crc = 0;
  if (std::sscanf(v.c_str(), "%" SCNu64 ":%" SCNd64 ":%" SCNx32, &size, &mtime, &crc) != 3)
    return std::nullopt;
  if (size != static_cast<uint64_t>(st.st_size) || mtime != local::MtimeNanos(st))
    return std::nullopt;
  return crc;
}

std::optional<uint32_t> CachedCrcOfFd(int fd, const struct stat& st) {
  char buf[80];
  return ParseCache(buf, ::fgetxattr(fd, kCrcXattr, buf, sizeof(buf)), st);
}

std::optional<uint32_t> CachedCrcOfPath(const std::string& path, const struct stat& st) {
  char buf[80];
  return ParseCache(buf, ::getxattr(path.c_str(), kCrcXattr, buf, sizeof(buf)), st);
}

ObjectInfo InfoFromStat(const std::string& key, const struct stat& st) {
  ObjectInfo info;
  info.key = key;
  info.size_bytes = static_cast<uint64_t>(st.st_size);
  info.generation = local::MtimeNanos(st);
  info.updated = local::Rfc3339(info.generation);
  return info;
}

struct DirEntry {
  std::string name;
  bool is_dir = false;
};

// The objects (regular files, or links to them) and real subdirectories of
// dir, skipping temp files. A missing dir (or a file) has none.
Result<std::vector<DirEntry>> ReadDir(const std::string& dir) {
  std::vector<DirEntry> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT || errno == ENOTDIR) return out;
    return local::ErrnoStatus(errno, FileUri(dir), "opendir");
  }
  int dfd = ::dirfd(d);
  while (true) {
    errno = 0;
    struct dirent* e = ::readdir(d);
    if (e == nullptr) {
      int err = errno;
      ::closedir(d);
      if (err != 0) return local::ErrnoStatus(err, FileUri(dir), "readdir");
      break;
    }
    std::string_view name = e->d_name;
    if (name == "." || name == ".." || IsTempFileName(name)) continue;
    unsigned char type = e->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st {};
      if (::fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // vanished
      type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG
                                          : S_ISLNK(st.st_mode) ? DT_LNK : DT_UNKNOWN;
    }
    if (type == DT_LNK) {  // a link to a file is an object; links to directories are not followed
      struct stat st {};
      if (::fstatat(dfd, e->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode)) continue;
      type = DT_REG;
    }
    if (type == DT_DIR || type == DT_REG) out.push_back({std::string(name), type == DT_DIR});
  }
  return out;
}

// Whether the tree under dir holds at least one object.
Result<bool> HasObject(const std::string& dir) {
  COHORT_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, ReadDir(dir));
  for (const DirEntry& e : entries)
    if (!e.is_dir) return true;
  for (const DirEntry& e : entries) {
    COHORT_ASSIGN_OR_RETURN(bool has, HasObject(local::JoinPath(dir, e.name)));
    if (has) return true;
  }
  return false;
}

class FileStore final : public BlobStore {
 public:
  explicit FileStore(std::string root) : root_(std::move(root)) {}

  std::string scheme() const override { return "file"; }

  Result<ObjectInfo> PutFile(const std::string& bucket, const std::string& key,
                             const std::string& local_path, const PutOptions& options) override {
    // O_NONBLOCK: a FIFO must not hang the open (it is refused below).
    int fd = ::open(local_path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return local::ErrnoStatus(errno, local_path, "open");
    ScopedFd src(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0) return local::ErrnoStatus(errno, local_path, "fstat");
    if (!S_ISREG(st.st_mode))
      return Status::InvalidArgument(local_path + ": not a regular file");
    uint64_t total = static_cast<uint64_t>(st.st_size);
    return Put(bucket, key, options, [&](const Sink& sink) -> Status {
      std::string buf(local::kChunkBytes, '\0');
      uint64_t offset = 0;
      while (true) {
        size_t got = 0;
        COHORT_RETURN_IF_ERROR(local::PreadFull(fd, buf.data(), buf.size(), offset, &got, local_path));
        if (got == 0) break;
        offset += got;
        COHORT_RETURN_IF_ERROR(sink(std::string_view(buf.data(), got), std::max(total, offset)));
      }
      return Status::Ok();
    });
  }

  Result<ObjectInfo> PutBuffer(const std::string& bucket, const std::string& key,
                               std::string_view data, const PutOptions& options) override {
    return Put(bucket, key, options, [&](const Sink& sink) -> Status {
      for (size_t off = 0; off < data.size(); off += local::kChunkBytes)
        COHORT_RETURN_IF_ERROR(sink(data.substr(off, local::kChunkBytes), data.size()));
      return Status::Ok();
    });
  }

  Result<ObjectInfo> GetToFile(const std::string& bucket, const std::string& key,
                               const std::string& local_path, const GetOptions& options) override {
    COHORT_ASSIGN_OR_RETURN(OpenObject obj, Open(bucket, key));
    // Open the object first: a missing one must leave nothing at local_path.
    COHORT_ASSIGN_OR_RETURN(std::unique_ptr<local::AtomicFile> out,
                            local::AtomicFile::Create(local_path, local_path));
    COHORT_ASSIGN_OR_RETURN(ObjectInfo info,
                            Read(obj, options, [&](std::string_view piece) { return out->Write(piece); }));
    COHORT_RETURN_IF_ERROR(out->Commit(/*no_replace=*/false));
    return info;
  }

  Result<std::string> GetToBuffer(const std::string& bucket, const std::string& key,
                                  const GetOptions& options) override {
    COHORT_ASSIGN_OR_RETURN(OpenObject obj, Open(bucket, key));
    std::string data;
    COHORT_RETURN_IF_ERROR(Read(obj, options, [&](std::string_view piece) {
                             data.append(piece);
                             return Status::Ok();
                           }).status());
    return data;
  }

  Result<ObjectInfo> Stat(const std::string& bucket, const std::string& key) override {
    COHORT_ASSIGN_OR_RETURN(OpenObject obj, Open(bucket, key));
    ObjectInfo info = InfoFromStat(key, obj.st);
    std::optional<uint32_t> crc = CachedCrcOfFd(obj.fd.get(), obj.st);
    if (!crc) {
      uint32_t computed = 0;
      COHORT_RETURN_IF_ERROR(local::StreamRange(
          obj.fd.get(), 0, info.size_bytes, nullptr,
          [&](std::string_view piece) {
            computed = Crc32cExtend(computed, piece.data(), piece.size());
            return Status::Ok();
          },
          obj.uri));
      crc = computed;
    }
    info.crc32c = Crc32cToBase64(*crc);
    return info;
  }

  Result<ListResult> List(const std::string& bucket, const ListOptions& options) override {
    COHORT_ASSIGN_OR_RETURN(std::string bucket_dir, BucketDir(bucket));
    const std::string& prefix = options.prefix;
    size_t slash = prefix.find_last_of('/');
    std::string dir_key = slash == std::string::npos ? "" : prefix.substr(0, slash + 1);
    std::string partial = prefix.substr(dir_key.size());
    if (prefix.find('\0') != std::string::npos)
      return Status::InvalidArgument(FileUri(bucket_dir) + ": list prefix contains a NUL byte");
    if (!dir_key.empty()) {
      std::string dir_part = dir_key.substr(0, dir_key.size() - 1);
      // A prefix whose directory part is not a key path matches no object;
      // one with ".." could escape the root, so reject those outright.
      Status s = ValidateObjectKey(dir_part, FileUri(local::JoinPath(bucket_dir, prefix)));
      if (!s.ok()) return Status::InvalidArgument(s.message() + " (in a list prefix)");
    }
    ListPager pager(options);
    std::string base = dir_key.empty()
                           ? bucket_dir
                           : local::JoinPath(bucket_dir, dir_key.substr(0, dir_key.size() - 1));
    COHORT_ASSIGN_OR_RETURN(bool unused,
                            Walk(base, dir_key, partial, options.delimiter == "/", pager));
    (void)unused;
    return std::move(pager).Finish();
  }

  Status Delete(const std::string& bucket, const std::string& key) override {
    COHORT_ASSIGN_OR_RETURN(std::string path, PathFor(bucket, key));
    if (::unlink(path.c_str()) != 0) {
      // Missing (or a directory, which is no object): already gone.
      if (errno == ENOENT || errno == ENOTDIR || errno == EISDIR) return Status::Ok();
      return local::ErrnoStatus(errno, FileUri(path), "unlink");
    }
    return local::FsyncDir(local::Dirname(path), FileUri(path));
  }

 private:
  // Takes the next piece of a put's data and the total size expected (for progress).
  using Sink = std::function<Status(std::string_view, uint64_t)>;

  struct OpenObject {
    ScopedFd fd;
    struct stat st {};
    std::string key;
    std::string uri;
  };

  Result<std::string> BucketDir(const std::string& bucket) const {
    if (bucket.empty()) return root_;
    std::string dir = local::JoinPath(root_, bucket);
    COHORT_RETURN_IF_ERROR(ValidateObjectKey(bucket, FileUri(dir)));
    return dir;
  }

  Result<std::string> PathFor(const std::string& bucket, const std::string& key) const {
    COHORT_ASSIGN_OR_RETURN(std::string dir, BucketDir(bucket));
    std::string path = local::JoinPath(dir, key);
    COHORT_RETURN_IF_ERROR(ValidateObjectKey(key, FileUri(path)));
    return path;
  }

  Result<OpenObject> Open(const std::string& bucket, const std::string& key) const {
    COHORT_ASSIGN_OR_RETURN(std::string path, PathFor(bucket, key));
    OpenObject obj;
    obj.key = key;
    obj.uri = FileUri(path);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT || errno == ENOTDIR) return Status::NotFound(obj.uri + ": no such object");
      return local::ErrnoStatus(errno, obj.uri, "open");
    }
    obj.fd = ScopedFd(fd);
    if (::fstat(fd, &obj.st) != 0) return local::ErrnoStatus(errno, obj.uri, "fstat");
    if (!S_ISREG(obj.st.st_mode)) return Status::NotFound(obj.uri + ": no such object");
    return obj;
  }

  // Streams the requested range of obj to sink; checks the cached CRC32C
  // when the whole object was read.
  Result<ObjectInfo> Read(const OpenObject& obj, const GetOptions& options,
                          const std::function<Status(std::string_view)>& sink) const {
    ObjectInfo info = InfoFromStat(obj.key, obj.st);
    uint64_t size = info.size_bytes;
    if (options.offset > size)
      return Status::InvalidArgument(obj.uri + ": range start " + std::to_string(options.offset) +
                                     " is beyond the object's size " + std::to_string(size));
    uint64_t length = size - options.offset;
    if (options.length) length = std::min(length, *options.length);
    bool whole = options.offset == 0 && length == size;
    uint32_t crc = 0;
    COHORT_RETURN_IF_ERROR(local::StreamRange(
        obj.fd.get(), options.offset, length, options.progress,
        [&](std::string_view piece) {
          if (whole) crc = Crc32cExtend(crc, piece.data(), piece.size());
          return sink(piece);
        },
        obj.uri));
    std::optional<uint32_t> cached = CachedCrcOfFd(obj.fd.get(), obj.st);
    if (whole) {
      if (cached && *cached != crc)
        return Status::Internal(obj.uri + ": CRC32C mismatch: read " + Crc32cToBase64(crc) +
                                ", stored " + Crc32cToBase64(*cached));
      info.crc32c = Crc32cToBase64(crc);
    } else if (cached) {
      info.crc32c = Crc32cToBase64(*cached);
    }
    return info;
  }

  Result<ObjectInfo> Put(const std::string& bucket, const std::string& key,
                         const PutOptions& options, const std::function<Status(const Sink&)>& source) {
    COHORT_ASSIGN_OR_RETURN(std::string path, PathFor(bucket, key));
    std::string uri = FileUri(path);
    if (options.create_only && ::access(path.c_str(), F_OK) == 0)  // early out; Commit decides
      return Status::FailedPrecondition(uri + ": already exists");
    COHORT_ASSIGN_OR_RETURN(std::unique_ptr<local::AtomicFile> out,
                            local::AtomicFile::Create(path, uri));
    uint32_t crc = 0;
    uint64_t done = 0;
    COHORT_RETURN_IF_ERROR(source([&](std::string_view piece, uint64_t known_total) -> Status {
      COHORT_RETURN_IF_ERROR(out->Write(piece));
      crc = Crc32cExtend(crc, piece.data(), piece.size());
      done += piece.size();
      if (options.progress) options.progress(done, known_total);
      return Status::Ok();
    }));
    if (done == 0 && options.progress) options.progress(0, 0);
    // A precise mtime makes generations distinct even for puts within one clock tick.
    struct timespec times[2];
    times[0].tv_nsec = UTIME_OMIT;
    times[0].tv_sec = 0;
    ::clock_gettime(CLOCK_REALTIME, &times[1]);
    if (::futimens(out->fd(), times) != 0) return local::ErrnoStatus(errno, uri, "futimens");
    struct stat st {};
    if (::fstat(out->fd(), &st) != 0) return local::ErrnoStatus(errno, uri, "fstat");
    std::string cache = CacheValue(st, crc);
    // Best effort: without xattrs (some file systems) Stat recomputes the CRC.
    (void)::fsetxattr(out->fd(), kCrcXattr, cache.data(), cache.size(), 0);
    COHORT_RETURN_IF_ERROR(out->Commit(options.create_only));
    ObjectInfo info = InfoFromStat(key, out->stat());
    info.crc32c = Crc32cToBase64(crc);
    return info;
  }

  // Offers the keys under dir (whose key prefix is dir_key, "" or ending in
  // '/') in byte order, only names starting with `partial`. With
  // roll_up_dirs (delimiter "/"), each subdirectory holding an object is
  // offered as "dir_key/name/" instead of being walked. false: page full.
  Result<bool> Walk(const std::string& dir, const std::string& dir_key, std::string_view partial,
                    bool roll_up_dirs, ListPager& pager) const {
    COHORT_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, ReadDir(dir));
    // Sorting names with '/' appended to directories gives byte order of the
    // full keys: every key under "d/" sorts exactly where "d/" does.
    std::vector<std::pair<std::string, bool>> sorted;
    sorted.reserve(entries.size());
    for (DirEntry& e : entries) {
      if (e.name.compare(0, partial.size(), partial) != 0) continue;
      sorted.emplace_back(e.is_dir ? e.name + "/" : std::move(e.name), e.is_dir);
    }
    std::sort(sorted.begin(), sorted.end());
    for (const auto& [name, is_dir] : sorted) {
      std::string key = dir_key + name;
      if (is_dir) {
        if (pager.SkipsSubtree(key)) continue;
        std::string sub = local::JoinPath(dir, name.substr(0, name.size() - 1));
        if (roll_up_dirs) {
          COHORT_ASSIGN_OR_RETURN(bool has, HasObject(sub));
          if (has && !pager.Offer(key, nullptr)) return false;
        } else {
          COHORT_ASSIGN_OR_RETURN(bool more, Walk(sub, key, "", false, pager));
          if (!more) return false;
        }
        continue;
      }
      std::string path = local::JoinPath(dir, name);
      bool more = pager.Offer(key, [&]() -> std::optional<ObjectInfo> {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
        ObjectInfo info = InfoFromStat(key, st);
        if (std::optional<uint32_t> crc = CachedCrcOfPath(path, st)) info.crc32c = Crc32cToBase64(*crc);
        return info;
      });
      if (!more) return false;
    }
    return true;
  }

  std::string root_;  // absolute and normal: "/" or "/a/b" (no trailing '/')
};

}  // namespace

std::shared_ptr<BlobStore> NewFileStore(std::string root) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(root.empty() ? "/" : root, ec);
  std::string r = ec ? root : p.lexically_normal().string();
  while (r.size() > 1 && r.back() == '/') r.pop_back();
  if (r.empty()) r = "/";
  return std::make_shared<FileStore>(std::move(r));
}

}  // namespace cohort::storage
