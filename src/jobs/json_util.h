// Private helpers of src/jobs: how JSON values are named in error messages,
// how amounts are printed, and UTF-8 repair. Pure functions.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace cohort::jobs::internal {

// Python's repr of the type the value would have after json.loads, as Ray's
// TypeError messages print it: "<class 'int'>", "<class 'str'>", "<class 'dict'>" ...
template <typename Json>
std::string JsonTypeForMessage(const Json& j) {
  const char* name = "object";
  switch (j.type()) {
    case nlohmann::json::value_t::null: name = "NoneType"; break;
    case nlohmann::json::value_t::boolean: name = "bool"; break;
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: name = "int"; break;
    case nlohmann::json::value_t::number_float: name = "float"; break;
    case nlohmann::json::value_t::string: name = "str"; break;
    case nlohmann::json::value_t::array: name = "list"; break;
    case nlohmann::json::value_t::object: name = "dict"; break;
    default: break;
  }
  return std::string("<class '") + name + "'>";
}

// An integral amount within int64 becomes a JSON integer (so {"CPU": 1} stays
// {"CPU": 1} on the wire), anything else a JSON float.
inline nlohmann::json NumberToJson(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e15) {
    return static_cast<int64_t>(v);
  }
  return v;
}

// "1", "0.5", "8589934592", "1e+20".
std::string FormatNumber(double v);

// Replaces every invalid UTF-8 sequence with U+FFFD, so the text can be
// serialised by nlohmann::json (which refuses invalid UTF-8).
std::string SanitizeUtf8(std::string_view text);

}  // namespace cohort::jobs::internal
