// Depth check, safe dump and UTF-8 repair; see include/cohort/common/json.h.
#include "cohort/common/json.h"

#include <cstdint>

namespace cohort {

Status CheckJsonDepth(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    switch (c) {
      case '"': in_string = true; break;
      case '[':
      case '{':
        if (++depth > max_depth)
          return Status::InvalidArgument("JSON nested deeper than " + std::to_string(max_depth) + " levels");
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default: break;
    }
  }
  return Status::Ok();
}

namespace {
template <typename Json>
std::string Dump(const Json& j, int indent) {
  try {
    return j.dump(indent, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
  } catch (const std::exception&) {
    return "null";  // not reached with error_handler_t::replace
  }
}
}  // namespace

std::string DumpJson(const nlohmann::json& j, int indent) { return Dump(j, indent); }
std::string DumpJson(const nlohmann::ordered_json& j, int indent) { return Dump(j, indent); }

namespace {
// Length of the valid UTF-8 sequence at text[i], or 0 when it is invalid.
size_t ValidSequenceAt(std::string_view text, size_t i) {
  const unsigned char c = static_cast<unsigned char>(text[i]);
  if (c < 0x80) return 1;
  size_t len = 0;
  uint32_t min = 0;
  if ((c & 0xE0) == 0xC0) len = 2, min = 0x80;
  else if ((c & 0xF0) == 0xE0) len = 3, min = 0x800;
  else if ((c & 0xF8) == 0xF0) len = 4, min = 0x10000;
  else return 0;
  if (i + len > text.size()) return 0;
  uint32_t cp = c & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k) {
    const unsigned char cc = static_cast<unsigned char>(text[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  // Overlong forms, surrogates and code points past U+10FFFF are invalid too.
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}
}  // namespace

bool IsValidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = ValidSequenceAt(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string SanitizeUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t n = ValidSequenceAt(text, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

namespace internal {
std::string ParseErrorText(const char* what) {
  // "[json.exception.parse_error.101] parse error at line 1, ...": drop the
  // tag; the parser quotes what it read last, which may be invalid UTF-8.
  std::string why = what;
  if (size_t p = why.find("] "); p != std::string::npos) why = why.substr(p + 2);
  return SanitizeUtf8(why);
}
}  // namespace internal

}  // namespace cohort
