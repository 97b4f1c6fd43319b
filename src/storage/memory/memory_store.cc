// The mem:// BlobStore: objects held in this process, for tests of the
// components above storage (OpenStore("mem://...") shares one per process).
// Same contract as file:// (keys.h rules, create-only, ranges, list with
// delimiter and paging, CRC32C), with buckets created on first use and
// generations counting up from 1 per store. Thread-safe: one mutex guards
// the map; data is copied in and out under it.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include <map>
#include <mutex>

#include "backends.h"
#include "cohort/storage/crc32c.h"
#include "keys.h"
#include "local_file.h"

namespace cohort::storage {
namespace {

struct MemObject {
  std::string data;
  uint32_t crc = 0;
  int64_t generation = 0;
  std::string content_type;
  std::string updated;
};

ObjectInfo InfoOf(const std::string& key, const MemObject& obj) {
  ObjectInfo info;
  info.key = key;
  info.size_bytes = obj.data.size();
  info.crc32c = Crc32cToBase64(obj.crc);
  info.generation = obj.generation;
  info.etag = std::to_string(obj.generation);
  info.updated = obj.updated;
  return info;
}

class MemoryBlobStore final : public BlobStore {
 public:
  std::string scheme() const override { return "mem"; }

  Result<ObjectInfo> PutFile(const std::string& bucket, const std::string& key,
                             const std::string& local_path, const PutOptions& options) override {
    COHORT_RETURN_IF_ERROR(Validate(bucket, key));
    int fd = ::open(local_path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // no hang on a FIFO
    if (fd < 0) return local::ErrnoStatus(errno, local_path, "open");
    local::ScopedFd src(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0) return local::ErrnoStatus(errno, local_path, "fstat");
    if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(local_path + ": not a regular file");
    std::string data;
    data.reserve(static_cast<size_t>(st.st_size));
    std::string buf(local::kChunkBytes, '\0');
    while (true) {
      size_t got = 0;
      COHORT_RETURN_IF_ERROR(
          local::PreadFull(fd, buf.data(), buf.size(), data.size(), &got, local_path));
      if (got == 0) break;
      data.append(buf.data(), got);
      if (options.progress)
        options.progress(data.size(), std::max<uint64_t>(data.size(), static_cast<uint64_t>(st.st_size)));
    }
    if (data.empty() && options.progress) options.progress(0, 0);
    return Store(bucket, key, std::move(data), options);
  }

  Result<ObjectInfo> PutBuffer(const std::string& bucket, const std::string& key,
                               std::string_view data, const PutOptions& options) override {
    COHORT_RETURN_IF_ERROR(Validate(bucket, key));
    if (options.progress) options.progress(data.size(), data.size());
    return Store(bucket, key, std::string(data), options);
  }

  Result<ObjectInfo> GetToFile(const std::string& bucket, const std::string& key,
                               const std::string& local_path, const GetOptions& options) override {
    ObjectInfo info;
    COHORT_ASSIGN_OR_RETURN(std::string data, Read(bucket, key, options, &info));
    COHORT_ASSIGN_OR_RETURN(std::unique_ptr<local::AtomicFile> out,
                            local::AtomicFile::Create(local_path, local_path));
    for (size_t off = 0; off < data.size(); off += local::kChunkBytes) {
      std::string_view piece = std::string_view(data).substr(off, local::kChunkBytes);
      COHORT_RETURN_IF_ERROR(out->Write(piece));
      if (options.progress) options.progress(off + piece.size(), data.size());
    }
    if (data.empty() && options.progress) options.progress(0, 0);
    COHORT_RETURN_IF_ERROR(out->Commit(/*no_replace=*/false));
    return info;
  }

  Result<std::string> GetToBuffer(const std::string& bucket, const std::string& key,
                                  const GetOptions& options) override {
    ObjectInfo info;
    COHORT_ASSIGN_OR_RETURN(std::string data, Read(bucket, key, options, &info));
    if (options.progress) options.progress(data.size(), data.size());
    return data;
  }

  Result<ObjectInfo> Stat(const std::string& bucket, const std::string& key) override {
    COHORT_RETURN_IF_ERROR(Validate(bucket, key));
    std::lock_guard<std::mutex> lock(mu_);
    const MemObject* obj = Find(bucket, key);
    if (obj == nullptr) return Status::NotFound(Uri(bucket, key) + ": no such object");
    return InfoOf(key, *obj);
  }

  Result<ListResult> List(const std::string& bucket, const ListOptions& options) override {
    if (options.prefix.find('\0') != std::string::npos)
      return Status::InvalidArgument(Uri(bucket, "") + ": list prefix contains a NUL byte");
    ListPager pager(options);
    std::lock_guard<std::mutex> lock(mu_);
    auto b = buckets_.find(bucket);
    if (b == buckets_.end()) return std::move(pager).Finish();
    const auto& objects = b->second;
    // Keys at or before the page token cannot be on this page.
    auto it = objects.lower_bound(options.prefix);
    if (!options.page_token.empty() && options.page_token >= options.prefix)
      it = objects.upper_bound(options.page_token);
    for (; it != objects.end(); ++it) {
      if (it->first.compare(0, options.prefix.size(), options.prefix) != 0) break;
      const std::string& key = it->first;
      const MemObject& obj = it->second;
      if (!pager.Offer(key, [&] { return std::optional<ObjectInfo>(InfoOf(key, obj)); })) break;
    }
    return std::move(pager).Finish();
  }

  Status Delete(const std::string& bucket, const std::string& key) override {
    COHORT_RETURN_IF_ERROR(Validate(bucket, key));
    std::lock_guard<std::mutex> lock(mu_);
    auto b = buckets_.find(bucket);
    if (b != buckets_.end()) b->second.erase(key);
    return Status::Ok();
  }

 private:
  static std::string Uri(const std::string& bucket, const std::string& key) {
    return "mem://" + bucket + (key.empty() ? "" : "/" + key);
  }

  static Status Validate(const std::string& bucket, const std::string& key) {
    if (bucket.empty() || bucket.find('/') != std::string::npos)
      return Status::InvalidArgument("mem://" + bucket + ": bad bucket name");
    return ValidateObjectKey(key, Uri(bucket, key));
  }

  const MemObject* Find(const std::string& bucket, const std::string& key) const {
    auto b = buckets_.find(bucket);
    if (b == buckets_.end()) return nullptr;
    auto o = b->second.find(key);
    return o == b->second.end() ? nullptr : &o->second;
  }

  Result<std::string> Read(const std::string& bucket, const std::string& key,
                           const GetOptions& options, ObjectInfo* info) {
    COHORT_RETURN_IF_ERROR(Validate(bucket, key));
    std::lock_guard<std::mutex> lock(mu_);
    const MemObject* obj = Find(bucket, key);
    if (obj == nullptr) return Status::NotFound(Uri(bucket, key) + ": no such object");
    uint64_t size = obj->data.size();
    if (options.offset > size)
      return Status::InvalidArgument(Uri(bucket, key) + ": range start " +
                                     std::to_string(options.offset) +
                                     " is beyond the object's size " + std::to_string(size));
    uint64_t length = size - options.offset;
    if (options.length) length = std::min(length, *options.length);
    *info = InfoOf(key, *obj);
    return obj->data.substr(static_cast<size_t>(options.offset), static_cast<size_t>(length));
  }

  Result<ObjectInfo> Store(const std::string& bucket, const std::string& key, std::string data,
                           const PutOptions& options) {
    MemObject obj;
    obj.crc = Crc32c(data);
    obj.data = std::move(data);
    obj.content_type = options.content_type;
    struct timespec now {};
    ::clock_gettime(CLOCK_REALTIME, &now);
    obj.updated = local::Rfc3339(static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec);
    std::lock_guard<std::mutex> lock(mu_);
    auto& objects = buckets_[bucket];
    if (options.create_only && objects.count(key) != 0)
      return Status::FailedPrecondition(Uri(bucket, key) + ": already exists");
    obj.generation = ++last_generation_;
    MemObject& stored = objects[key] = std::move(obj);
    return InfoOf(key, stored);
  }

  std::mutex mu_;
  std::map<std::string, std::map<std::string, MemObject>> buckets_;  // guarded by mu_
  int64_t last_generation_ = 0;                                      // guarded by mu_
};

}  // namespace

std::shared_ptr<BlobStore> NewMemoryBlobStore() { return std::make_shared<MemoryBlobStore>(); }

}  // namespace cohort::storage
