// Type-checked reads of JSON fields, for the operator's decoding of what the
// API server and the head send: they never throw; a missing field, a field of
// another type, or a parent that is not an object reads as the default.
// (nlohmann's value() and operator[] throw on a type mismatch, and const
// operator[] on a missing key is undefined.) Private to src/k8s.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace cohort::k8s::fields {

// j[key] when j is an object holding key, else null.
inline const nlohmann::json& Field(const nlohmann::json& j, const char* key) {
  static const nlohmann::json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

inline std::string Str(const nlohmann::json& j, const char* key, const std::string& def = "") {
  const nlohmann::json& v = Field(j, key);
  return v.is_string() ? v.get<std::string>() : def;
}

inline bool Bool(const nlohmann::json& j, const char* key, bool def = false) {
  const nlohmann::json& v = Field(j, key);
  return v.is_boolean() ? v.get<bool>() : def;
}

// An integer-valued number (a float with no fraction counts) within
// [lo, hi], else def. REQUIRES: |lo|, |hi| <= 2^53 (exact as doubles).
inline long long Int(const nlohmann::json& j, const char* key, long long def, long long lo, long long hi) {
  const nlohmann::json& v = Field(j, key);
  if (v.is_number_unsigned()) {
    const std::uint64_t u = v.get<std::uint64_t>();
    return hi >= 0 && u <= static_cast<std::uint64_t>(hi) && static_cast<long long>(u) >= lo ? static_cast<long long>(u)
                                                                                             : def;
  }
  if (v.is_number_integer()) {
    const long long x = v.get<std::int64_t>();
    return x >= lo && x <= hi ? x : def;
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi))) return def;  // NaN too
    const long long x = static_cast<long long>(d);
    return static_cast<double>(x) == d ? x : def;
  }
  return def;
}

// metadata.<key> of a Kubernetes object, "" when absent or not a string.
inline std::string Meta(const nlohmann::json& obj, const char* key) { return Str(Field(obj, "metadata"), key); }

}  // namespace cohort::k8s::fields
