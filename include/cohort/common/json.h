// Untrusted JSON in and out: a nesting limit checked before parsing, and
// serialisation that never throws on invalid UTF-8.
//
// Everything a client, an agent or a job sends the head is untrusted. Two
// properties of nlohmann::json make raw use of it unsafe there:
//   - dump() throws type_error 316 on a string that is not valid UTF-8 (a
//     file name, a log line, a report key), and an uncaught exception on a
//     server thread ends the process;
//   - deeply nested input ("[[[[...") costs recursion in the code that walks
//     the parsed value afterwards (copies, comparisons, dump()).
// So: ParseJson() refuses text nested deeper than the limit before it parses
// anything, and DumpJson() replaces invalid UTF-8 with U+FFFD.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "cohort/common/status.h"

namespace cohort {

// The nesting limit for everything the control plane accepts (submit bodies,
// metadata, report lines, agent messages, state records). Ray's job API
// bodies nest a handful of levels; 64 leaves room and bounds the recursion.
inline constexpr int kMaxJsonDepth = 64;

// OK when no array/object in `text` nests deeper than `max_depth` levels
// (strings are skipped, escapes honoured). Linear, no allocation.
Status CheckJsonDepth(std::string_view text, int max_depth = kMaxJsonDepth);

// Parses `text` after CheckJsonDepth. InvalidArgument with a message that is
// valid UTF-8 ("nested deeper than 64 levels", "parse error at byte 12: ...").
template <typename Json = nlohmann::json>
Result<Json> ParseJson(std::string_view text, int max_depth = kMaxJsonDepth);

// j.dump(indent) with every invalid UTF-8 sequence replaced by U+FFFD; never
// throws.
std::string DumpJson(const nlohmann::json& j, int indent = -1);
std::string DumpJson(const nlohmann::ordered_json& j, int indent = -1);

// Replaces every invalid UTF-8 sequence (bad lead/continuation bytes,
// overlong forms, surrogates, code points past U+10FFFF) with U+FFFD.
std::string SanitizeUtf8(std::string_view text);
bool IsValidUtf8(std::string_view text);

// --- implementation ---------------------------------------------------------

namespace internal {
std::string ParseErrorText(const char* what);
}  // namespace internal

template <typename Json>
Result<Json> ParseJson(std::string_view text, int max_depth) {
  if (Status st = CheckJsonDepth(text, max_depth); !st.ok()) return st;
  Json parsed = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    try {
      Json again = Json::parse(text.begin(), text.end());
      (void)again;
    } catch (const nlohmann::json::exception& e) {
      return Status::InvalidArgument(internal::ParseErrorText(e.what()));
    }
    return Status::InvalidArgument("not valid JSON");
  }
  return parsed;
}

}  // namespace cohort
