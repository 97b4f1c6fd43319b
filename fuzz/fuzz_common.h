// Shared helpers of the libFuzzer targets in fuzz/ (see docs/fuzzing.md).
//
// FUZZ_CHECK(cond, what): a property the target asserts about the code under
// test (a round trip, an invariant from a header comment). A failure prints
// what broke and aborts, which libFuzzer reports as a crash and saves as a
// reproducer, exactly like an ASan or UBSan finding.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#define FUZZ_CHECK(cond, what)                                                        \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n  %s\n", __FILE__, __LINE__, \
                   #cond, std::string(what).c_str());                                 \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

namespace cohort::fuzz {

// True when `text` is valid UTF-8 (what nlohmann::json::dump() insists on).
inline bool IsValidUtf8(std::string_view text) {
  try {
    (void)nlohmann::json(std::string(text)).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

}  // namespace cohort::fuzz
