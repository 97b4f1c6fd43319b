// Checkpoints in object storage; see include/cohort/train/remote_checkpoint.h.
#include "cohort/train/remote_checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cohort/common/logging.h"
#include "cohort/storage/blob_store.h"

namespace cohort::train {
namespace {

namespace fs = std::filesystem;
using storage::BlobStore;
using storage::Uri;

struct Target {
  Uri uri;
  std::shared_ptr<BlobStore> store;
};

Result<Target> Open(const std::string& text) {
  COHORT_ASSIGN_OR_RETURN(Uri uri, storage::ParseUri(text));
  COHORT_ASSIGN_OR_RETURN(auto store, storage::OpenStore(uri));
  return Target{uri, store};
}

// Regular files under dir, as paths relative to it, sorted.
Result<std::vector<std::string>> FilesUnder(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec)) out.push_back(fs::relative(it->path(), dir, ec).string());
  if (ec) return Status::IoError("cannot list " + dir + ": " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

// Parses "checkpoint_000012/" (a listed prefix's last segment) to 12.
std::optional<int64_t> EpochOfPrefix(const std::string& prefix) {
  std::string name = prefix;
  while (!name.empty() && name.back() == '/') name.pop_back();
  auto slash = name.rfind('/');
  if (slash != std::string::npos) name = name.substr(slash + 1);
  const std::string head = "checkpoint_";
  if (name.rfind(head, 0) != 0 || name.size() == head.size()) return std::nullopt;
  int64_t epoch = 0;
  for (char c : name.substr(head.size())) {
    if (c < '0' || c > '9') return std::nullopt;
    epoch = epoch * 10 + (c - '0');
  }
  return epoch;
}

}  // namespace

bool IsStorageUri(const std::string& root) { return storage::IsRemoteUri(root); }

Status UploadCheckpoint(const std::string& local_checkpoint_dir, const std::string& root_uri,
                        int64_t epoch) {
  COHORT_ASSIGN_OR_RETURN(Target t, Open(root_uri));
  const Uri dir = t.uri.Child(CheckpointDirName(epoch));
  COHORT_ASSIGN_OR_RETURN(std::vector<std::string> files, FilesUnder(local_checkpoint_dir));
  nlohmann::json manifest = {{"epoch", epoch}, {"files", nlohmann::json::array()}};
  for (const std::string& name : files) {
    if (name == kManifestFile) continue;
    const Uri obj = dir.Child(name);
    auto info = t.store->PutFile(obj.bucket, obj.key, local_checkpoint_dir + "/" + name, {});
    if (!info.ok()) return info.status().WithPrefix("uploading checkpoint file " + obj.ToString());
    manifest["files"].push_back(
        {{"name", name}, {"size_bytes", info->size_bytes}, {"crc32c", info->crc32c}});
  }
  const Uri manifest_uri = dir.Child(kManifestFile);
  auto written = t.store->PutBuffer(manifest_uri.bucket, manifest_uri.key, manifest.dump(2), {});
  if (!written.ok()) return written.status().WithPrefix("committing checkpoint " + dir.ToString());
  return Status::Ok();
}

Result<std::optional<CheckpointInfo>> FindLatestRemoteCheckpoint(const std::string& root_uri,
                                                                 const std::string& local_cache_dir) {
  COHORT_ASSIGN_OR_RETURN(Target t, Open(root_uri));
  // Candidate epochs: the "checkpoint_N/" prefixes under the root.
  storage::ListOptions list;
  list.prefix = t.uri.key.empty() || t.uri.key.back() == '/' ? t.uri.key : t.uri.key + "/";
  list.delimiter = "/";
  std::vector<int64_t> epochs;
  while (true) {
    COHORT_ASSIGN_OR_RETURN(storage::ListResult page, t.store->List(t.uri.bucket, list));
    for (const auto& p : page.prefixes)
      if (auto e = EpochOfPrefix(p)) epochs.push_back(*e);
    if (page.next_page_token.empty()) break;
    list.page_token = page.next_page_token;
  }
  std::sort(epochs.rbegin(), epochs.rend());

  for (int64_t epoch : epochs) {
    const Uri dir = t.uri.Child(CheckpointDirName(epoch));
    const Uri manifest_uri = dir.Child(kManifestFile);
    auto text = t.store->GetToBuffer(manifest_uri.bucket, manifest_uri.key, {});
    if (!text.ok()) {
      if (text.status().code() == StatusCode::kNotFound) {
        COHORT_LOG(WARN) << "skipping incomplete checkpoint " << dir.ToString() << " (no manifest)";
        continue;
      }
      return text.status();
    }
    auto manifest = nlohmann::json::parse(*text, nullptr, false);
    if (manifest.is_discarded() || !manifest.contains("files")) {
      COHORT_LOG(WARN) << "skipping checkpoint " << dir.ToString() << ": unreadable manifest";
      continue;
    }
    // Every listed object present with its size? Then download.
    bool complete = true;
    for (const auto& f : manifest["files"]) {
      const Uri obj = dir.Child(f.value("name", ""));
      auto st = t.store->Stat(obj.bucket, obj.key);
      if (!st.ok() || st->size_bytes != f.value("size_bytes", uint64_t{0})) {
        COHORT_LOG(WARN) << "skipping incomplete checkpoint " << dir.ToString() << ": "
                         << obj.ToString() << (st.ok() ? " has the wrong size" : " is missing");
        complete = false;
        break;
      }
    }
    if (!complete) continue;
    const std::string local = local_cache_dir + "/" + CheckpointDirName(epoch);
    std::error_code ec;
    fs::remove_all(local, ec);
    fs::create_directories(local, ec);
    if (ec) return Status::IoError("cannot create " + local + ": " + ec.message());
    for (const auto& f : manifest["files"]) {
      const std::string name = f.value("name", "");
      const Uri obj = dir.Child(name);
      fs::create_directories(fs::path(local + "/" + name).parent_path(), ec);
      auto got = t.store->GetToFile(obj.bucket, obj.key, local + "/" + name, {});
      if (!got.ok()) return got.status().WithPrefix("downloading checkpoint " + dir.ToString());
      const std::string want = f.value("crc32c", "");
      if (!want.empty() && !got->crc32c.empty() && got->crc32c != want)
        return Status::Internal("checkpoint object " + obj.ToString() + " has CRC32C " + got->crc32c +
                                " but its manifest says " + want);
    }
    COHORT_ASSIGN_OR_RETURN(std::string state, ReadFile(local + "/" + kCheckpointStateFile));
    return std::optional<CheckpointInfo>(CheckpointInfo{local, epoch, state});
  }
  return std::optional<CheckpointInfo>();
}

Status UploadDirectory(const std::string& local_dir, const std::string& uri, const std::string& last) {
  COHORT_ASSIGN_OR_RETURN(Target t, Open(uri));
  COHORT_ASSIGN_OR_RETURN(std::vector<std::string> files, FilesUnder(local_dir));
  std::stable_partition(files.begin(), files.end(), [&](const std::string& f) { return f != last; });
  for (const std::string& name : files) {
    const Uri obj = t.uri.Child(name);
    auto info = t.store->PutFile(obj.bucket, obj.key, local_dir + "/" + name, {});
    if (!info.ok()) return info.status().WithPrefix("uploading " + obj.ToString());
  }
  return Status::Ok();
}

}  // namespace cohort::train
