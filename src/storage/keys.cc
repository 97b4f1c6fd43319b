// Object-key rules and list paging; see keys.h.
#include "keys.h"

namespace cohort::storage {

bool IsTempFileName(std::string_view name) {
  return name.size() > 1 && name[0] == '.' && name.find(".tmp.", 1) != std::string_view::npos;
}

Status ValidateObjectKey(std::string_view key, std::string_view uri) {
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument(std::string(uri) + ": bad object key: " + std::string(why));
  };
  if (key.empty()) return bad("empty");
  if (key.size() > kMaxObjectKeyBytes)
    return bad("longer than " + std::to_string(kMaxObjectKeyBytes) + " bytes");
  if (key.find('\0') != std::string_view::npos) return bad("contains a NUL byte");
  if (key.front() == '/') return bad("starts with '/'");
  size_t start = 0;
  while (true) {
    size_t end = key.find('/', start);
    std::string_view segment =
        key.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (segment.empty()) return bad("has an empty path segment ('//' or a trailing '/')");
    if (segment == "." || segment == "..") return bad("has a '.' or '..' segment");
    if (IsTempFileName(segment)) return bad("segment '" + std::string(segment) +
                                            "' is reserved for temporary files (.NAME.tmp.*)");
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return Status::Ok();
}

ListPager::ListPager(const ListOptions& options)
    : prefix_(options.prefix),
      delimiter_(options.delimiter),
      token_(options.page_token),
      max_entries_(options.max_results > 0 ? static_cast<size_t>(options.max_results) : 1000) {}

bool ListPager::SkipsSubtree(std::string_view dir_key) const {
  return !token_.empty() && std::string_view(token_) > dir_key &&
         std::string_view(token_).substr(0, dir_key.size()) != dir_key;
}

bool ListPager::Offer(std::string_view key,
                      const std::function<std::optional<ObjectInfo>()>& make_info) {
  if (key.substr(0, prefix_.size()) != prefix_) return true;
  std::string_view entry = key;
  bool is_prefix = false;
  if (!delimiter_.empty()) {
    size_t pos = key.find(delimiter_, prefix_.size());
    if (pos != std::string_view::npos) {
      entry = key.substr(0, pos + delimiter_.size());
      is_prefix = true;
    }
  }
  if (!token_.empty() && entry <= std::string_view(token_)) return true;
  // Keys rolled into the common prefix just returned (they are contiguous).
  if (is_prefix && entry == last_entry_) return true;
  if (entries_ >= max_entries_) {
    result_.next_page_token = last_entry_;
    return false;
  }
  if (is_prefix) {
    result_.prefixes.emplace_back(entry);
  } else {
    std::optional<ObjectInfo> info = make_info ? make_info() : std::optional<ObjectInfo>(ObjectInfo{});
    if (!info) return true;
    info->key = std::string(key);
    result_.objects.push_back(std::move(*info));
  }
  last_entry_ = std::string(entry);
  ++entries_;
  return true;
}

ListResult ListPager::Finish() && { return std::move(result_); }

}  // namespace cohort::storage
