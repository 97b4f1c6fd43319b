// Object-key rules and list paging shared by the file:// and mem:// stores
// (internal to storage/; the cloud stores get both from their servers).
//
// ValidateObjectKey enforces spec/storage.md §4's key rules. ListPager turns a
// stream of keys in byte order into one ListResult page with GCS/S3
// semantics: prefix filter, delimiter roll-up into common prefixes, at most
// max_results entries (objects plus prefixes), and a page token that is the
// last entry returned (the next page starts strictly after it).
// Both are thread-compatible values; use one ListPager per List call.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "cohort/storage/blob_store.h"

namespace cohort::storage {

// Longest key accepted (GCS's limit on object names, in bytes).
inline constexpr size_t kMaxObjectKeyBytes = 1024;

// OK if key is a usable object key: non-empty, at most kMaxObjectKeyBytes, no
// NUL, no leading '/', no empty, "." or ".." segment (so no trailing '/'),
// and no segment shaped like one of our temp files (".name.tmp.*", which
// listings hide). Otherwise InvalidArgument "<uri>: ..." naming uri.
Status ValidateObjectKey(std::string_view key, std::string_view uri);

// True for the names of in-flight temp files: ".<name>.tmp.<suffix>".
bool IsTempFileName(std::string_view name);

class ListPager {
 public:
  explicit ListPager(const ListOptions& options);

  const std::string& prefix() const { return prefix_; }
  const std::string& delimiter() const { return delimiter_; }

  // True if no key under `dir_key` ("a/b/": every key starting with it) can
  // be on this page because they all sort at or before the page token.
  bool SkipsSubtree(std::string_view dir_key) const;

  // Offers the next key; keys must come in strictly increasing byte order.
  // make_info is called only when the key becomes an object entry of this
  // page (its result's key is overwritten; nullopt: the object vanished, skip
  // it). Returns false when the page is already full and this key would
  // start the next one: stop offering.
  bool Offer(std::string_view key, const std::function<std::optional<ObjectInfo>()>& make_info);

  // The page built so far.
  ListResult Finish() &&;

 private:
  std::string prefix_;
  std::string delimiter_;
  std::string token_;
  size_t max_entries_;
  size_t entries_ = 0;
  std::string last_entry_;
  ListResult result_;
};

}  // namespace cohort::storage
