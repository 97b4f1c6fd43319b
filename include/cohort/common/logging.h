// Logging and invariant checks: COHORT_LOG(INFO) << ...; COHORT_CHECK(cond) << ...;
//
// One line per message to stderr: time, level, file:line, then the text. The
// level threshold comes from COHORT_LOG_LEVEL (DEBUG|INFO|WARN|ERROR, default
// INFO). A process-wide prefix (e.g. "rank=1") can be set once at start-up.
// Thread-safe: each message is written with a single write(2).
#pragma once

#include <sstream>
#include <string>

namespace cohort::log {

enum class Level { DEBUG = 0, INFO = 1, WARN = 2, ERROR = 3, FATAL = 4 };

bool Enabled(Level level);
// Changes the threshold unless COHORT_LOG_LEVEL is set (the user's choice wins).
void SetDefaultLevel(Level level);
// Appears after file:line in every message, e.g. "rank=1". Set before threads start.
void SetPrefix(std::string prefix);

class Message {
 public:
  Message(Level level, const char* file, int line);
  ~Message();  // writes the line; aborts for FATAL
  std::ostream& stream() { return os_; }

 private:
  Level level_;
  std::ostringstream os_;
};

// Lets `cond ? (void)0 : Voidify() & stream` type-check.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace cohort::log

#define COHORT_LOG(level)                                              \
  !::cohort::log::Enabled(::cohort::log::Level::level)                 \
      ? (void)0                                                        \
      : ::cohort::log::Voidify() &                                     \
            ::cohort::log::Message(::cohort::log::Level::level, __FILE__, __LINE__).stream()

// A broken invariant is a bug: print file:line and abort.
#define COHORT_CHECK(cond)                                                               \
  (cond) ? (void)0                                                                       \
         : ::cohort::log::Voidify() &                                                    \
               ::cohort::log::Message(::cohort::log::Level::FATAL, __FILE__, __LINE__).stream() \
                   << "Check failed: " #cond " "
