// Reporter implementation; see include/cohort/train/report.h.
#include "cohort/train/report.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <nlohmann/json.hpp>

namespace cohort::train {

using Json = nlohmann::ordered_json;

struct Reporter::State {
  std::mutex mu;
  std::string path;  // empty: stdout
  int rank = 0;
  int fd = -1;  // -1: not open (never -1 for stdout once opened)
  bool is_socket = false;

  std::string Name() const { return path.empty() ? "<stdout>" : path; }

  void CloseLocked() {
    if (fd >= 0 && fd != STDOUT_FILENO) ::close(fd);
    fd = -1;
  }

  Status OpenLocked() {
    if (fd >= 0) return Status::Ok();
    if (path.empty()) {
      fd = STDOUT_FILENO;
      is_socket = false;
      return Status::Ok();
    }
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      if (path.size() >= sizeof(addr.sun_path)) {
        return Status::InvalidArgument("report socket path " + path + " is longer than " +
                                       std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
      }
      std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
      int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (s < 0) {
        return Status::IoError("report socket " + path + ": socket(): " + std::strerror(errno));
      }
      int rc;
      do {
        rc = ::connect(s, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
      } while (rc != 0 && errno == EINTR);
      if (rc != 0) {
        int err = errno;
        ::close(s);
        return Status::Unavailable("cannot connect to report socket " + path + ": " +
                                   std::strerror(err));
      }
      fd = s;
      is_socket = true;
      return Status::Ok();
    }
    int f = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) {
      return Status::IoError("cannot open report file " + path + " for append: " +
                             std::strerror(errno));
    }
    fd = f;
    is_socket = false;
    return Status::Ok();
  }

  // Writes `line` (ending in '\n'); one write(2) unless the kernel takes less.
  Status WriteLine(const std::string& line) {
    std::lock_guard<std::mutex> lock(mu);
    COHORT_RETURN_IF_ERROR(OpenLocked());
    size_t done = 0;
    while (done < line.size()) {
      ssize_t n = is_socket ? ::send(fd, line.data() + done, line.size() - done, MSG_NOSIGNAL)
                            : ::write(fd, line.data() + done, line.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        CloseLocked();  // reopen (reconnect) on the next report
        return Status::IoError("cannot write report to " + Name() + ": " + std::strerror(err));
      }
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }
};

namespace {

double UnixSeconds() {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  return std::chrono::duration<double>(now).count();
}

std::string Dump(const Json& j) {
  // replace: invalid UTF-8 in a name must not throw.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace

Reporter::Reporter(std::unique_ptr<State> state) : state_(std::move(state)) {}
Reporter::Reporter(Reporter&&) noexcept = default;
Reporter& Reporter::operator=(Reporter&&) noexcept = default;

Reporter::~Reporter() {
  if (state_) state_->CloseLocked();
}

Reporter Reporter::FromEnv(int rank) {
  const char* env = std::getenv(kReportPathEnv);
  return ForPath(env ? env : "", rank);
}

Reporter Reporter::ForPath(std::string path, int rank) {
  auto state = std::make_unique<State>();
  state->path = std::move(path);
  state->rank = rank;
  return Reporter(std::move(state));
}

Status Reporter::Open() {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->OpenLocked();
}

int Reporter::rank() const { return state_->rank; }
std::string Reporter::destination() const { return state_->Name(); }

Status Reporter::Report(const std::vector<std::pair<std::string, double>>& metrics) {
  Json j = Json::object();
  j["rank"] = state_->rank;
  j["time"] = UnixSeconds();
  for (const auto& [name, value] : metrics) {
    if (name == "rank" || name == "time") {
      return Status::InvalidArgument("metric name \"" + name +
                                     "\" is reserved in reports (rank and time are added)");
    }
    j[name] = value;  // non-finite doubles serialize as null
  }
  return state_->WriteLine(Dump(j));
}

Status Reporter::ReportJson(const std::string& json_object_line) {
  Json parsed = Json::parse(json_object_line, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return Status::InvalidArgument("ReportJson: not a JSON object: " +
                                   json_object_line.substr(0, 200));
  }
  Json j = Json::object();
  if (!parsed.contains("rank")) j["rank"] = state_->rank;
  if (!parsed.contains("time")) j["time"] = UnixSeconds();
  for (auto& [key, value] : parsed.items()) j[key] = value;
  return state_->WriteLine(Dump(j));
}

}  // namespace cohort::train
