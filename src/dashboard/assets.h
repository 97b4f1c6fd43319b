// The dashboard's files, embedded in the binary by embed_assets.cmake (the
// generated dashboard_assets.cc defines the table). Private to src/dashboard.
#pragma once

#include <cstddef>

namespace cohort::dashboard::internal {

struct Asset {
  const char* name;           // "index.html", "app.js", "app.css"
  const char* content_type;   // "text/html; charset=utf-8", ...
  const unsigned char* data;  // `size` bytes (plus a trailing NUL)
  size_t size;
  const char* etag;  // quoted, from the SHA-256 of the bytes
};

extern const Asset kAssets[];
extern const size_t kAssetCount;

}  // namespace cohort::dashboard::internal
