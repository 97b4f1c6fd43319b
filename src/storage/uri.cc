// URI parsing for storage; see include/cohort/storage/blob_store.h.
#include <unistd.h>

#include <filesystem>

#include "cohort/storage/blob_store.h"

namespace cohort::storage {

std::string Uri::ToString() const {
  if (scheme == "file") return "file:///" + key;
  return scheme + "://" + bucket + (key.empty() ? "" : "/" + key);
}

Uri Uri::Child(std::string_view child) const {
  Uri u = *this;
  if (!u.key.empty() && u.key.back() != '/') u.key += '/';
  u.key += std::string(child);
  return u;
}

bool IsRemoteUri(std::string_view text) {
  for (std::string_view p : {"gs://", "s3://", "file://", "mem://"})
    if (text.substr(0, p.size()) == p) return true;
  return false;
}

Result<Uri> ParseUri(std::string_view text) {
  if (text.empty()) return Status::InvalidArgument("empty storage URI");
  Uri u;
  auto sep = text.find("://");
  if (sep == std::string_view::npos) {
    // A plain local path.
    std::error_code ec;
    std::filesystem::path p = std::filesystem::absolute(std::string(text), ec);
    if (ec) return Status::InvalidArgument("bad path '" + std::string(text) + "': " + ec.message());
    std::string s = p.lexically_normal().string();
    if (!text.empty() && text.back() == '/' && (s.empty() || s.back() != '/')) s += '/';
    u.scheme = "file";
    u.key = s.substr(1);  // drop the leading '/'
    return u;
  }
  u.scheme = std::string(text.substr(0, sep));
  std::string_view rest = text.substr(sep + 3);
  if (u.scheme == "file") {
    if (rest.empty() || rest[0] != '/')
      return Status::InvalidArgument("file URI '" + std::string(text) +
                                     "' must be absolute: file:///path/to/dir");
    u.key = std::string(rest.substr(1));
    return u;
  }
  if (u.scheme != "gs" && u.scheme != "s3" && u.scheme != "mem")
    return Status::InvalidArgument("unsupported storage scheme '" + u.scheme + "' in '" +
                                   std::string(text) + "': use gs://, s3:// or file://");
  auto slash = rest.find('/');
  u.bucket = std::string(rest.substr(0, slash));
  if (u.bucket.empty())
    return Status::InvalidArgument("storage URI '" + std::string(text) + "' has no bucket");
  if (slash != std::string_view::npos) u.key = std::string(rest.substr(slash + 1));
  return u;
}

}  // namespace cohort::storage
