// Logging implementation; see include/cohort/common/logging.h.
#include "cohort/common/logging.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace cohort::log {
namespace {

Level ThresholdFromEnv() {
  const char* env = std::getenv("COHORT_LOG_LEVEL");
  if (env == nullptr) return Level::INFO;
  if (std::strcmp(env, "DEBUG") == 0) return Level::DEBUG;
  if (std::strcmp(env, "WARN") == 0) return Level::WARN;
  if (std::strcmp(env, "ERROR") == 0) return Level::ERROR;
  return Level::INFO;
}

Level& Threshold() {
  static Level level = ThresholdFromEnv();
  return level;
}

std::string& Prefix() {
  static std::string prefix;
  return prefix;
}

const char* LevelName(Level level) {
  switch (level) {
    case Level::DEBUG: return "DEBUG";
    case Level::INFO: return "INFO";
    case Level::WARN: return "WARN";
    case Level::ERROR: return "ERROR";
    case Level::FATAL: return "FATAL";
  }
  return "?";
}

}  // namespace

bool Enabled(Level level) { return level >= Threshold(); }
void SetDefaultLevel(Level level) {
  if (std::getenv("COHORT_LOG_LEVEL") == nullptr) Threshold() = level;
}
void SetPrefix(std::string prefix) { Prefix() = std::move(prefix); }

Message::Message(Level level, const char* file, int line) : level_(level) {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
  const char* base = std::strrchr(file, '/');
  os_ << buf << '.' << (ms < 100 ? (ms < 10 ? "00" : "0") : "") << ms << ' ' << LevelName(level)
      << ' ' << (base ? base + 1 : file) << ':' << line << ' ';
  if (!Prefix().empty()) os_ << Prefix() << ' ';
}

Message::~Message() {
  os_ << '\n';
  std::string s = os_.str();
  ssize_t unused = ::write(STDERR_FILENO, s.data(), s.size());
  (void)unused;
  if (level_ == Level::FATAL) std::abort();
}

}  // namespace cohort::log
