// Base64 (RFC 4648, standard alphabet, '=' padding). Stateless; thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace cohort {

std::string Base64Encode(std::string_view bytes);
// False (and *bytes untouched) unless text is well-formed padded base64.
// Whitespace (line breaks in PEM-ish data) is skipped.
bool Base64Decode(std::string_view text, std::string* bytes);

}  // namespace cohort
