// File and tree transfers between local paths and object stores; see
// include/cohort/storage/transfer.h. Called by `cohort storage` and the
// trainer; stateless, any thread.
#include "cohort/storage/transfer.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "local_file.h"

namespace cohort::storage {
namespace {

std::string LocalPath(const Uri& u) { return "/" + u.key; }

// The key prefix of the tree at key: key itself if empty or ending in '/'.
std::string TreePrefix(const std::string& key) {
  return key.empty() || key.back() == '/' ? key : key + "/";
}

bool IsLocalDir(const Uri& u) {
  if (u.scheme != "file") return false;
  std::error_code ec;
  return std::filesystem::is_directory(LocalPath(u), ec);
}

// Whether uri names an object (for file://, a regular file: no CRC pass).
Result<bool> ObjectExists(BlobStore& store, const Uri& u) {
  if (u.key.empty() || u.key.back() == '/') return false;
  if (u.scheme == "file") {
    struct stat st {};
    return ::stat(LocalPath(u).c_str(), &st) == 0 && S_ISREG(st.st_mode);
  }
  Result<ObjectInfo> info = store.Stat(u.bucket, u.key);
  if (info.ok()) return true;
  if (info.status().code() == StatusCode::kNotFound) return false;
  return info.status();
}

// Every page of a listing.
Status ListPages(BlobStore& store, const Uri& u, const std::string& prefix,
                 const std::string& delimiter, std::vector<ObjectInfo>* objects,
                 std::vector<std::string>* prefixes) {
  ListOptions options;
  options.prefix = prefix;
  options.delimiter = delimiter;
  while (true) {
    COHORT_ASSIGN_OR_RETURN(ListResult page, store.List(u.bucket, options));
    for (ObjectInfo& o : page.objects) objects->push_back(std::move(o));
    if (prefixes != nullptr)
      for (std::string& p : page.prefixes) prefixes->push_back(std::move(p));
    if (page.next_page_token.empty()) return Status::Ok();
    if (page.next_page_token == options.page_token)
      return Status::Internal(u.ToString() + ": listing returned the same page token twice");
    options.page_token = std::move(page.next_page_token);
  }
}

// Removes the temp file of a remote -> remote copy.
struct TempFile {
  std::string path;
  ~TempFile() {
    if (!path.empty()) ::unlink(path.c_str());
  }
};

// Copies one object between exact URIs; returns the destination's info.
Result<ObjectInfo> CopyOne(const Uri& src, const Uri& dst, const ProgressFn& progress) {
  if (src.scheme == "file") {
    COHORT_ASSIGN_OR_RETURN(std::shared_ptr<BlobStore> store, OpenStore(dst));
    PutOptions options;
    options.progress = progress;
    return store->PutFile(dst.bucket, dst.key, LocalPath(src), options);
  }
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<BlobStore> from, OpenStore(src));
  if (dst.scheme == "file") {
    GetOptions options;
    options.progress = progress;
    COHORT_ASSIGN_OR_RETURN(ObjectInfo info,
                            from->GetToFile(src.bucket, src.key, LocalPath(dst), options));
    info.key = dst.key;
    return info;
  }
  // Remote -> remote: through a local temp file; progress counts each phase as half.
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<BlobStore> to, OpenStore(dst));
  std::error_code ec;
  std::filesystem::path tmp_dir = std::filesystem::temp_directory_path(ec);
  if (ec) tmp_dir = "/tmp";
  TempFile temp;
  std::string tmpl = (tmp_dir / "cohort-copy-XXXXXX").string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return local::ErrnoStatus(errno, tmpl, "mkstemp");
  ::close(fd);
  temp.path = tmpl;
  GetOptions get;
  if (progress) get.progress = [&](uint64_t done, uint64_t total) { progress(done / 2, total); };
  COHORT_ASSIGN_OR_RETURN(ObjectInfo downloaded,
                          from->GetToFile(src.bucket, src.key, temp.path, get));
  PutOptions put;
  if (progress)
    put.progress = [&](uint64_t done, uint64_t total) { progress((total + done) / 2, total); };
  return to->PutFile(dst.bucket, dst.key, temp.path, put);
}

// rmdir()s the directories under path (and path) that are empty, bottom-up.
void RemoveEmptyDirs(const std::string& path) {
  std::error_code ec;
  std::vector<std::string> subdirs;
  for (std::filesystem::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_directory(type_ec) && !it->is_symlink(type_ec)) subdirs.push_back(it->path().string());
  }
  for (const std::string& sub : subdirs) RemoveEmptyDirs(sub);
  ::rmdir(path.c_str());  // fails (ENOTEMPTY) where something is left: fine
}

}  // namespace

Status CopyFile(std::string_view src, std::string_view dst, const ProgressFn& progress) {
  COHORT_ASSIGN_OR_RETURN(Uri s, ParseUri(src));
  COHORT_ASSIGN_OR_RETURN(Uri d, ParseUri(dst));
  if (s.key.empty() || s.key.back() == '/' || IsLocalDir(s))
    return Status::InvalidArgument(s.ToString() +
                                   ": is a directory or prefix; copy it as a tree (cp -r)");
  if (d.key.empty() || d.key.back() == '/' || IsLocalDir(d)) d = d.Child(local::Basename(s.key));
  return CopyOne(s, d, progress).status();
}

Status CopyTree(std::string_view src, std::string_view dst, const ProgressFn& progress,
                std::vector<ObjectInfo>* copied) {
  COHORT_ASSIGN_OR_RETURN(Uri s, ParseUri(src));
  COHORT_ASSIGN_OR_RETURN(Uri d, ParseUri(dst));
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<BlobStore> store, OpenStore(s));
  std::string prefix = TreePrefix(s.key);
  std::vector<ObjectInfo> objects;
  COHORT_RETURN_IF_ERROR(ListPages(*store, s, prefix, "", &objects, nullptr));
  if (objects.empty()) {
    COHORT_ASSIGN_OR_RETURN(bool is_object, ObjectExists(*store, s));
    if (is_object) {
      if (d.key.empty() || d.key.back() == '/' || IsLocalDir(d)) d = d.Child(local::Basename(s.key));
      COHORT_ASSIGN_OR_RETURN(ObjectInfo info, CopyOne(s, d, progress));
      if (copied != nullptr) copied->push_back(std::move(info));
      return Status::Ok();
    }
    if (IsLocalDir(s)) {
      if (progress) progress(0, 0);
      return Status::Ok();  // an empty directory: nothing to copy
    }
    return Status::NotFound(s.ToString() + ": no such object, prefix or directory");
  }
  uint64_t total = 0;
  for (const ObjectInfo& o : objects) total += o.size_bytes;
  uint64_t done = 0;
  for (const ObjectInfo& o : objects) {
    Uri from = s;
    from.key = o.key;
    Uri to = d.Child(std::string_view(o.key).substr(prefix.size()));
    ProgressFn file_progress;
    if (progress) {
      file_progress = [&](uint64_t file_done, uint64_t) {
        progress(std::min(total, done + file_done), total);
      };
    }
    COHORT_ASSIGN_OR_RETURN(ObjectInfo info, CopyOne(from, to, file_progress));
    done += o.size_bytes;
    if (copied != nullptr) copied->push_back(std::move(info));
  }
  if (progress) progress(total, total);
  return Status::Ok();
}

Status RemoveTree(std::string_view uri) {
  COHORT_ASSIGN_OR_RETURN(Uri u, ParseUri(uri));
  if (u.scheme == "file" && (u.key.empty() || u.key == "/"))
    return Status::InvalidArgument("refusing to remove the root directory " + u.ToString());
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<BlobStore> store, OpenStore(u));
  std::vector<ObjectInfo> objects;
  COHORT_RETURN_IF_ERROR(ListPages(*store, u, TreePrefix(u.key), "", &objects, nullptr));
  size_t removed = 0;
  for (const ObjectInfo& o : objects) {
    COHORT_RETURN_IF_ERROR(store->Delete(u.bucket, o.key));
    ++removed;
  }
  COHORT_ASSIGN_OR_RETURN(bool is_object, ObjectExists(*store, u));
  if (is_object) {
    COHORT_RETURN_IF_ERROR(store->Delete(u.bucket, u.key));
    ++removed;
  }
  bool local_dir = IsLocalDir(u);
  if (local_dir) {
    std::string path = LocalPath(u);
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    RemoveEmptyDirs(path);
  }
  if (removed == 0 && !local_dir)
    return Status::NotFound(u.ToString() + ": no such object, prefix or directory");
  return Status::Ok();
}

Result<std::vector<ObjectInfo>> ListAll(std::string_view uri, bool recursive) {
  COHORT_ASSIGN_OR_RETURN(Uri u, ParseUri(uri));
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<BlobStore> store, OpenStore(u));
  std::vector<ObjectInfo> out;
  std::vector<std::string> prefixes;
  COHORT_RETURN_IF_ERROR(
      ListPages(*store, u, TreePrefix(u.key), recursive ? "" : "/", &out, &prefixes));
  for (std::string& p : prefixes) {
    ObjectInfo info;
    info.key = std::move(p);
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  if (!out.empty() || u.key.empty() || IsLocalDir(u)) return out;
  if (u.key.back() != '/') {
    Result<ObjectInfo> info = store->Stat(u.bucket, u.key);
    if (info.ok()) return std::vector<ObjectInfo>{std::move(*info)};
    if (info.status().code() != StatusCode::kNotFound) return info.status();
  }
  return Status::NotFound(u.ToString() + ": no such object, prefix or directory");
}

}  // namespace cohort::storage
