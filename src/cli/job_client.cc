// JobClient and the job-following loop; see cli/job_client.h.
#include "cli/job_client.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "cli/package.h"
#include "cohort/net/http_client.h"
#include "cohort/net/ws_client.h"
#include "cohort/train/compression.h"

namespace cohort::cli {
namespace {

std::string Trim(std::string s) {
  auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

std::string Getenv(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string HomeDir() {
  std::string home = Getenv("HOME");
  if (!home.empty()) return home;
  if (struct passwd* pw = ::getpwuid(::getuid()); pw != nullptr && pw->pw_dir != nullptr) {
    return pw->pw_dir;
  }
  return ".";
}

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A JSON number for a resource amount: an integer when it is one.
Json Amount(double v) {
  if (v == std::floor(v) && std::fabs(v) < 9e15) return static_cast<int64_t>(v);
  return v;
}

std::string StringField(const Json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<Json> ParseObject(const std::string& text, const std::string& what) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument(what + " must be a JSON object, got: " + text.substr(0, 200));
  }
  return j;
}

}  // namespace

Connection ResolveConnection(const std::string& address_flag, const std::string& token_flag,
                             const std::string& state_dir_flag) {
  Connection c;
  c.address = Trim(!address_flag.empty() ? address_flag : Getenv("COHORT_ADDRESS"));
  if (c.address.empty()) c.address = kDefaultAddress;
  if (c.address.find("://") == std::string::npos) c.address = "http://" + c.address;
  while (!c.address.empty() && c.address.back() == '/') c.address.pop_back();

  c.state_dir = !state_dir_flag.empty() ? state_dir_flag : Getenv("COHORT_STATE_DIR");
  if (c.state_dir.empty()) c.state_dir = HomeDir() + "/.cohort";

  c.token = Trim(!token_flag.empty() ? token_flag : Getenv("COHORT_TOKEN"));
  if (c.token.empty()) {
    std::ifstream in(c.state_dir + "/token");
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      c.token = Trim(ss.str());
    }
  }
  return c;
}

// --- JobClient -----------------------------------------------------------------

Result<JobClient::Reply> JobClient::Call(const std::string& method, const std::string& path,
                                         const std::string& body,
                                         const std::string& content_type) {
  net::HttpRequest req;
  req.method = method;
  req.url = conn_.address + path;
  if (!conn_.token.empty()) req.headers.emplace_back("Authorization", "Bearer " + conn_.token);
  if (!content_type.empty()) req.headers.emplace_back("Content-Type", content_type);
  req.body = body;
  req.connect_timeout = std::chrono::milliseconds(5000);
  req.stall_timeout = std::chrono::milliseconds(60000);
  net::HttpTransportError error;
  Result<net::HttpResponse> resp = net::SendHttp(req, &error);
  if (!resp.ok()) {
    const std::string& detail = resp.status().message();
    if (error.kind == net::HttpTransportError::Kind::kConnect) {
      return Status::Unavailable("cannot reach the cohort head at " + conn_.address +
                                 ": is it running? (cohort start --head)");
    }
    return Status::Unavailable("request to the cohort head at " + conn_.address +
                               " failed: " + detail);
  }
  return Reply{resp->status, std::move(resp->body)};
}

Status JobClient::HttpError(const std::string& method, const std::string& path,
                            const Reply& reply) const {
  if (reply.status == 401 || reply.status == 403) {
    return Status::FailedPrecondition(
        "the head refused the token: pass --token or set COHORT_TOKEN (the head's token is in " +
        conn_.state_dir + "/token)");
  }
  std::string text = Trim(reply.body);
  if (text.size() > 4000) text = text.substr(0, 4000) + "...";
  if (text.empty()) text = method + " " + path + " failed";
  text += " (HTTP " + std::to_string(reply.status) + ")";
  switch (reply.status) {
    case 404:
      return Status::NotFound(text);
    case 409:
      return Status::AlreadyExists(text);
    case 400:
    case 413:
    case 422:
      return Status::InvalidArgument(text);
    default:
      return reply.status >= 500 ? Status::Unavailable(text) : Status::Internal(text);
  }
}

Result<Json> JobClient::CallJson(const std::string& method, const std::string& path,
                                 const std::string& body) {
  COHORT_ASSIGN_OR_RETURN(Reply reply,
                          Call(method, path, body, body.empty() ? "" : "application/json"));
  if (reply.status != 200) return HttpError(method, path, reply);
  Json j = Json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return Status::Internal("unexpected answer from the head to " + method + " " + path +
                            " (not JSON): " + reply.body.substr(0, 200));
  }
  return j;
}

Result<std::string> JobClient::Submit(const Json& request) {
  COHORT_ASSIGN_OR_RETURN(Json j, CallJson("POST", "/api/jobs/", request.dump()));
  std::string id = StringField(j, "submission_id");
  if (id.empty()) id = StringField(j, "job_id");
  if (id.empty()) {
    return Status::Internal("the head accepted the job but returned no submission_id: " +
                            j.dump().substr(0, 200));
  }
  return id;
}

Result<Json> JobClient::Get(const std::string& id) {
  COHORT_ASSIGN_OR_RETURN(Json j, CallJson("GET", "/api/jobs/" + net::UrlEncode(id)));
  if (!j.is_object()) return Status::Internal("unexpected job details from the head: " + j.dump().substr(0, 200));
  return j;
}

Result<Json> JobClient::List() {
  COHORT_ASSIGN_OR_RETURN(Json j, CallJson("GET", "/api/jobs/"));
  if (!j.is_array()) return Status::Internal("unexpected job list from the head: " + j.dump().substr(0, 200));
  return j;
}

Result<bool> JobClient::Stop(const std::string& id) {
  COHORT_ASSIGN_OR_RETURN(Json j, CallJson("POST", "/api/jobs/" + net::UrlEncode(id) + "/stop"));
  auto it = j.is_object() ? j.find("stopped") : j.end();
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

Status JobClient::Delete(const std::string& id) {
  return CallJson("DELETE", "/api/jobs/" + net::UrlEncode(id)).status();
}

Result<std::string> JobClient::Logs(const std::string& id) {
  COHORT_ASSIGN_OR_RETURN(Json j, CallJson("GET", "/api/jobs/" + net::UrlEncode(id) + "/logs"));
  auto it = j.is_object() ? j.find("logs") : j.end();
  if (it == j.end() || !(it->is_string() || it->is_null())) {
    return Status::Internal("unexpected logs answer from the head: " + j.dump().substr(0, 200));
  }
  return it->is_string() ? it->get<std::string>() : std::string();
}

Result<MetricsPage> JobClient::Metrics(const std::string& id, int64_t since) {
  COHORT_ASSIGN_OR_RETURN(Json j, CallJson("GET", "/api/jobs/" + net::UrlEncode(id) +
                                                      "/metrics?since=" + std::to_string(since)));
  MetricsPage page;
  page.next = since;
  if (!j.is_object()) return Status::Internal("unexpected metrics answer from the head");
  if (auto it = j.find("metrics"); it != j.end() && it->is_array()) {
    for (auto& m : *it) page.metrics.push_back(m);
  }
  if (auto it = j.find("next"); it != j.end() && it->is_number_integer()) {
    page.next = it->get<int64_t>();
  } else {
    page.next = since + static_cast<int64_t>(page.metrics.size());
  }
  return page;
}

Result<Json> JobClient::ClusterStatus() {
  COHORT_ASSIGN_OR_RETURN(Json j, CallJson("GET", "/api/cluster/status"));
  if (!j.is_object()) return Status::Internal("unexpected cluster status from the head");
  return j;
}

Result<Json> JobClient::Version() { return CallJson("GET", "/api/version"); }

Result<std::string> JobClient::UploadPackage(
    const std::string& path, const std::function<void(const std::string&)>& progress) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return Status::InvalidArgument("working directory " + path + " does not exist");
  }
  std::string name, bytes, what;
  PackageContents contents;
  const bool is_dir = S_ISDIR(st.st_mode);
  if (is_dir) {
    COHORT_ASSIGN_OR_RETURN(contents, ScanDirectory(path));
    name = contents.name;
  } else if (S_ISREG(st.st_mode) && path.size() > 4 && path.substr(path.size() - 4) == ".zip") {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!in) return Status::IoError("cannot read " + path);
    bytes = ss.str();
    name = "_ray_pkg_" + Sha1Hex(bytes) + ".zip";
  } else {
    return Status::InvalidArgument("working directory " + path +
                                   " must be a directory or a .zip file");
  }
  const std::string route = "/api/packages/gcs/" + name;
  COHORT_ASSIGN_OR_RETURN(Reply check, Call("GET", route));
  if (check.status == 200) {
    if (progress) progress("Using " + path + ", already on the head as gcs://" + name);
    return "gcs://" + name;
  }
  if (check.status != 404) return HttpError("GET", route, check);
  if (is_dir) {
    COHORT_ASSIGN_OR_RETURN(bytes, ZipPackage(contents));
  }
  COHORT_ASSIGN_OR_RETURN(Reply put, Call("PUT", route, bytes));
  if (put.status != 200) return HttpError("PUT", route, put);
  if (progress) {
    char size[32];
    std::snprintf(size, sizeof(size), "%.1f KiB", static_cast<double>(bytes.size()) / 1024.0);
    std::string files = is_dir ? std::to_string(contents.entries.size()) + " entries, " : "";
    progress("Uploaded " + path + " (" + files + size + ") as gcs://" + name);
  }
  return "gcs://" + name;
}

// --- submit request -------------------------------------------------------------

std::string ShellJoin(const std::vector<std::string>& words) {
  auto safe = [](unsigned char c) {
    return std::isalnum(c) || std::strchr("_@%+=:,./-", c) != nullptr;
  };
  std::string out;
  for (const std::string& w : words) {
    if (!out.empty()) out += ' ';
    if (!w.empty() && std::all_of(w.begin(), w.end(), [&](char c) {
          return c != '\0' && safe(static_cast<unsigned char>(c));
        })) {
      out += w;
      continue;
    }
    out += '\'';
    for (char c : w) {
      if (c == '\'') {
        out += "'\"'\"'";
      } else {
        out += c;
      }
    }
    out += '\'';
  }
  return out;
}

Result<Json> BuildSubmitRequest(const SubmitOptions& o) {
  if (o.entrypoint.empty() || o.entrypoint[0].empty()) {
    return Status::InvalidArgument(
        "no entrypoint given\nusage: cohort job submit [options] -- COMMAND ARGS...");
  }
  Json runtime_env = Json::object();
  if (!o.runtime_env_json.empty()) {
    COHORT_ASSIGN_OR_RETURN(runtime_env, ParseObject(o.runtime_env_json, "--runtime-env-json"));
  }
  if (!o.working_dir.empty()) runtime_env["working_dir"] = o.working_dir;
  if (auto it = runtime_env.find("working_dir");
      it != runtime_env.end() && !(it->is_string() || it->is_null())) {
    return Status::InvalidArgument("runtime_env.working_dir must be a string");
  }
  for (const std::string& kv : o.env) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Status::InvalidArgument("--env wants KEY=VALUE, got \"" + kv + "\"");
    }
    if (!runtime_env.contains("env_vars")) runtime_env["env_vars"] = Json::object();
    if (!runtime_env["env_vars"].is_object()) {
      return Status::InvalidArgument("runtime_env.env_vars must be an object");
    }
    runtime_env["env_vars"][kv.substr(0, eq)] = kv.substr(eq + 1);
  }

  if (!o.grad_compression.empty()) {
    Result<train::GradCompression> c = train::ParseGradCompression(o.grad_compression);
    if (!c.ok()) return c.status().WithPrefix("--grad-compression");
    if (!runtime_env.contains("env_vars")) runtime_env["env_vars"] = Json::object();
    if (!runtime_env["env_vars"].is_object()) return Status::InvalidArgument("runtime_env.env_vars must be an object");
    runtime_env["env_vars"]["COHORT_GRAD_COMPRESSION"] = o.grad_compression;
  }

  Json metadata = Json::object();
  if (!o.metadata_json.empty()) {
    COHORT_ASSIGN_OR_RETURN(metadata, ParseObject(o.metadata_json, "--metadata-json"));
    for (auto& [k, v] : metadata.items()) {
      if (!v.is_string()) {
        return Status::InvalidArgument("--metadata-json values must be strings (key \"" + k +
                                       "\")");
      }
    }
  }

  Json body = Json::object();
  body["entrypoint"] = ShellJoin(o.entrypoint);
  if (!o.submission_id.empty()) body["submission_id"] = o.submission_id;
  body["runtime_env"] = std::move(runtime_env);
  body["metadata"] = std::move(metadata);

  if (o.workers) {
    if (*o.workers < 1) {
      return Status::InvalidArgument("--workers must be at least 1, got " +
                                     std::to_string(*o.workers));
    }
    const double cpus = o.cpus_per_worker.value_or(1.0);
    const double gpus = o.gpus_per_worker.value_or(0.0);
    if (cpus < 0 || gpus < 0) {
      return Status::InvalidArgument("--cpus-per-worker and --gpus-per-worker must be >= 0");
    }
    Json resources = Json::object();
    resources["CPU"] = Amount(cpus);
    if (gpus > 0) resources["GPU"] = Amount(gpus);
    Json scaling = Json::object();
    scaling["num_workers"] = *o.workers;
    scaling["resources_per_worker"] = std::move(resources);
    if (!o.placement_strategy.empty()) {
      std::string s = o.placement_strategy;
      std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
      if (s != "PACK" && s != "SPREAD") {
        return Status::InvalidArgument("--placement-strategy must be PACK or SPREAD, got " +
                                       o.placement_strategy);
      }
      scaling["placement_strategy"] = s;
    }
    body["scaling"] = std::move(scaling);
  } else if (o.cpus_per_worker || o.gpus_per_worker || !o.placement_strategy.empty()) {
    return Status::InvalidArgument(
        "--cpus-per-worker, --gpus-per-worker and --placement-strategy need --workers N "
        "(for a single process use --entrypoint-num-cpus / --entrypoint-num-gpus)");
  }
  if (o.max_failures) {
    if (*o.max_failures < -1) {
      return Status::InvalidArgument("--max-failures must be >= 0, or -1 for unlimited");
    }
    body["failure"] = Json{{"max_failures", *o.max_failures}};
  }
  if (!o.results_uri.empty()) body["results_uri"] = o.results_uri;
  if (o.entrypoint_num_cpus) body["entrypoint_num_cpus"] = Amount(*o.entrypoint_num_cpus);
  if (o.entrypoint_num_gpus) body["entrypoint_num_gpus"] = Amount(*o.entrypoint_num_gpus);
  if (o.entrypoint_memory) body["entrypoint_memory"] = *o.entrypoint_memory;
  return body;
}

std::string LocalWorkingDir(const Json& request) {
  auto env = request.find("runtime_env");
  if (env == request.end() || !env->is_object()) return "";
  std::string wd = StringField(*env, "working_dir");
  if (wd.empty() || wd.find("://") != std::string::npos) return "";
  return wd;
}

bool IsTerminalStatus(const std::string& status) {
  return status == "STOPPED" || status == "SUCCEEDED" || status == "FAILED";
}

std::string FinalStatusLine(const std::string& id, const std::string& status,
                            const std::string& message) {
  // The job's own message, first line only, without Ray's log excerpt (the
  // log has been shown already).
  std::string msg = message.substr(0, message.find('\n'));
  if (size_t cut = msg.find(", last available logs"); cut != std::string::npos) msg.resize(cut);
  if (size_t cut = msg.find(". No logs available"); cut != std::string::npos) msg.resize(cut);
  msg = Trim(msg);
  if (status == "SUCCEEDED") return "Job " + id + " succeeded";
  if (status == "FAILED") return "Job " + id + " failed" + (msg.empty() ? "" : ": " + msg);
  if (status == "STOPPED") return "Job " + id + " was stopped" + (msg.empty() ? "" : ": " + msg);
  return "Job " + id + " ended with status " + status + (msg.empty() ? "" : ": " + msg);
}

// --- following -------------------------------------------------------------------

std::string_view LogOffsetFilter::Next(std::string_view chunk) {
  const uint64_t start = position_;
  position_ += chunk.size();
  if (position_ <= printed_) return {};
  const uint64_t skip = printed_ > start ? printed_ - start : 0;
  printed_ = position_;
  return chunk.substr(static_cast<size_t>(skip));
}

Result<std::string> JobClient::LogTailUrl(const std::string& id) const {
  constexpr std::string_view kHttp = "http://";
  if (conn_.address.compare(0, kHttp.size(), kHttp) != 0) {
    return Status::InvalidArgument("cannot follow a log through " + conn_.address +
                                   ": the log stream needs an http:// head address (no wss://)");
  }
  return "ws://" + conn_.address.substr(kHttp.size()) + "/api/jobs/" + net::UrlEncode(id) +
         "/logs/tail";
}

namespace {

using Clock = std::chrono::steady_clock;

// The longest wait between two tries to reopen the log stream.
constexpr std::chrono::milliseconds kMaxReconnectDelay{2000};
// A connection that stayed open this long counts as a working one even if
// it brought nothing new (a quiet job).
constexpr std::chrono::milliseconds kHealthyConnection{5000};
constexpr std::chrono::milliseconds kConnectTimeout{5000};
// Log bytes queued for the printing thread before the stream stops reading.
constexpr size_t kMaxQueuedBytes = size_t{4} << 20;

std::string Seconds(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", std::chrono::duration<double>(d).count());
  return buf;
}

// One job's log stream on a thread of its own: opens the logs/tail
// WebSocket, hands the new bytes (LogOffsetFilter) and notes to the
// following thread through a bounded queue, reopens the stream after it
// breaks. Ends with ended() (the head closed it with 1000) or error().
// Take/Wait/Stop are for one consumer thread.
class LogTail {
 public:
  struct Event {
    bool note = false;  // a line of the CLI's own; else log bytes
    std::string text;
  };

  LogTail(std::string id, std::string url, net::WebSocketClient::Headers headers, Connection conn,
          const FollowOptions& options)
      : id_(std::move(id)), url_(std::move(url)), headers_(std::move(headers)),
        conn_(std::move(conn)), options_(options) {}
  ~LogTail() { Stop(); }
  LogTail(const LogTail&) = delete;
  LogTail& operator=(const LogTail&) = delete;

  void Start() { thread_ = std::thread([this] { Run(); }); }

  // Ends the stream (aborting a read in progress) and joins the thread.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      if (live_ != nullptr) live_->Abort();
    }
    space_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Waits until an event is queued, the stream ended or failed, or `until`.
  void Wait(Clock::time_point until) {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait_until(lock, until, [&] { return !queue_.empty() || ended_ || error_; });
  }

  // Moves the queued events into `out`. Returns true once the stream has
  // ended and every event has been taken.
  bool Take(std::vector<Event>* out) {
    std::lock_guard<std::mutex> lock(mu_);
    while (!queue_.empty()) {
      out->push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    queued_bytes_ = 0;
    space_.notify_all();
    return ended_;
  }

  std::optional<Status> error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }

  // When the stream last opened or brought a message (replayed bytes that
  // are skipped included).
  Clock::time_point last_activity() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_activity_;
  }

 private:
  void Run();

  // Queues `e`, first waiting while the queue is full. False once stopping.
  bool Push(Event e) {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return stop_ || queued_bytes_ < kMaxQueuedBytes; });
    if (stop_) return false;
    queued_bytes_ += e.text.size();
    queue_.push_back(std::move(e));
    ready_.notify_all();
    return true;
  }

  void Finish(std::optional<Status> error) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error) {
      error_ = std::move(error);
    } else {
      ended_ = true;
    }
    ready_.notify_all();
  }

  // False if stopped meanwhile.
  bool SleepUnlessStopped(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mu_);
    return !space_.wait_for(lock, d, [&] { return stop_; });
  }

  bool stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return stop_;
  }

  // What a refused connection means for the user (no retry helps).
  Status Refused(const Status& s) const {
    if (s.code() == StatusCode::kFailedPrecondition) {
      return Status::FailedPrecondition(
          "the head refused the token: pass --token or set COHORT_TOKEN (the head's token is in " +
          conn_.state_dir + "/token)");
    }
    return Status(s.code(), "cannot follow the log of job " + id_ + ": " + s.message());
  }

  const std::string id_, url_;
  const net::WebSocketClient::Headers headers_;
  const Connection conn_;
  const FollowOptions options_;

  std::mutex mu_;
  std::condition_variable ready_;  // consumer: an event, the end or an error
  std::condition_variable space_;  // producer: room in the queue, or stop_
  std::deque<Event> queue_;
  size_t queued_bytes_ = 0;
  bool stop_ = false;
  bool ended_ = false;
  std::optional<Status> error_;
  Clock::time_point last_activity_ = Clock::now();
  net::WebSocketClient* live_ = nullptr;  // the open connection, for Stop's Abort
  std::thread thread_;
};

void LogTail::Run() {
  LogOffsetFilter filter(options_.log_offset);
  std::chrono::milliseconds delay = options_.reconnect_delay;
  std::optional<Clock::time_point> failing_since;  // the current run of failed tries
  int failed_tries = 0;
  Status last_error;
  while (!stopping()) {
    filter.Restart();
    const uint64_t printed_before = filter.printed();
    const Clock::time_point opened = Clock::now();
    bool ended = false;
    Result<std::unique_ptr<net::WebSocketClient>> ws = net::WebSocketClient::Connect(
        url_, headers_, Deadline::After(std::min(kConnectTimeout, options_.unreachable_timeout)));
    if (!ws.ok()) {
      const StatusCode code = ws.status().code();
      if (code != StatusCode::kUnavailable && code != StatusCode::kDeadlineExceeded) {
        return Finish(Refused(ws.status()));
      }
      last_error = ws.status();
    } else {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return (*ws)->Abort();
        live_ = ws->get();
        last_activity_ = Clock::now();
      }
      (*ws)->SetIdleTimeout(options_.stream_idle_timeout);
      while (true) {
        Result<std::optional<std::string>> message = (*ws)->ReadMessage();
        if (!message.ok()) {
          last_error = message.status();  // Cancelled when stopping
          break;
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          last_activity_ = Clock::now();
        }
        if (!message->has_value()) {
          const uint16_t close_code = (*ws)->close_code().value_or(1005);
          if (close_code == 1000) {
            ended = true;
          } else {
            const std::string& reason = (*ws)->close_reason();
            last_error = Status::Unavailable("the head closed the log stream with code " +
                                             std::to_string(close_code) +
                                             (reason.empty() ? "" : " (" + reason + ")"));
          }
          break;
        }
        std::string_view fresh = filter.Next(**message);
        if (fresh.empty()) continue;
        delay = options_.reconnect_delay;
        if (!Push(Event{false, std::string(fresh)})) break;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        live_ = nullptr;
      }
      ws->reset();
      if (ended) return Finish(std::nullopt);
    }
    if (stopping()) return;

    const Clock::time_point now = Clock::now();
    if (filter.printed() > printed_before || now - opened >= kHealthyConnection) {
      failing_since.reset();  // that connection worked; this is a new failure
      failed_tries = 0;
    }
    ++failed_tries;
    if (!failing_since) {
      failing_since = now;
      Push(Event{true, "(log stream interrupted after byte " + std::to_string(filter.printed()) +
                           ": " + last_error.message() + "; reconnecting)"});
    }
    if (now - *failing_since >= options_.unreachable_timeout) {
      return Finish(Status::Unavailable(
          "lost the log stream of job " + id_ + " from the cohort head at " + conn_.address +
          " after byte " + std::to_string(filter.printed()) + ", and " +
          std::to_string(failed_tries) + " tries over " + Seconds(now - *failing_since) +
          " did not reopen it: " + last_error.message() +
          " (is the head running? `cohort job logs " + id_ + "` prints the whole log)"));
    }
    if (!SleepUnlessStopped(delay)) return;
    delay = std::min(delay * 2, kMaxReconnectDelay);
  }
}

}  // namespace

Result<FollowResult> FollowJob(JobClient& client, const std::string& id, ProgressPrinter& printer,
                               const FollowOptions& options) {
  FollowResult result;
  result.log_offset = options.log_offset;
  int64_t since = 0;
  bool metrics_supported = options.show_progress;
  ProgressTracker tracker;
  std::string last_status, last_pending;
  int64_t last_attempt = -1;
  bool unreachable = false;  // since unreachable_since
  std::chrono::steady_clock::time_point unreachable_since{};
  bool said_unreachable = false;

  std::unique_ptr<LogTail> tail;  // opened after the first answer about the job
  std::vector<LogTail::Event> events;
  bool log_ended = false;
  bool polled_after_log_end = false;
  bool terminal = false;
  std::string status, message;
  Clock::time_point next_poll = Clock::now();
  Clock::time_point last_log_event = Clock::now();  // or when the job was seen terminal

  auto stop = [&] {
    if (tail) tail->Stop();
    printer.Finish();
  };

  // Transport trouble (the head restarting) is retried for a while.
  auto retryable = [&](const Status& s) -> bool {
    if (s.code() != StatusCode::kUnavailable) return false;
    const auto now = std::chrono::steady_clock::now();
    if (!unreachable) {
      unreachable = true;
      unreachable_since = now;
    }
    if (now - unreachable_since > options.unreachable_timeout) return false;
    if (!said_unreachable) {
      printer.Note("(" + s.message() + "; retrying)");
      said_unreachable = true;
    }
    return true;
  };

  // One poll of the job's details and metrics. Non-OK: following ends.
  auto poll = [&]() -> Status {
    Result<Json> details = client.Get(id);
    if (!details.ok()) return retryable(details.status()) ? Status::Ok() : details.status();
    if (said_unreachable) printer.Note("(reconnected to the head)");
    unreachable = false;
    said_unreachable = false;
    result.details = *details;
    status = StringField(*details, "status");
    message = StringField(*details, "message");

    if (auto it = details->find("attempt"); it != details->end() && it->is_number_integer()) {
      const int64_t attempt = it->get<int64_t>();
      if (last_attempt >= 0 && attempt > last_attempt) {
        printer.Note("--- attempt " + std::to_string(attempt + 1) +
                     ": the job is restarting after a failure ---");
      }
      last_attempt = attempt;
    }
    if (status == "PENDING") {
      std::string reason = StringField(*details, "pending_reason");
      if (reason.empty()) reason = message;
      if (status != last_status || reason != last_pending) {
        printer.Note("Job " + id + " is pending" + (reason.empty() ? "" : ": " + reason));
      }
      last_pending = reason;
    } else if (status == "RUNNING" && last_status != "RUNNING" && !tracker.has_progress()) {
      tracker.SetStartTime(UnixNow());
    }
    last_status = status;
    if (IsTerminalStatus(status) && !terminal) {
      terminal = true;
      last_log_event = Clock::now();  // the drain wait starts now
    }

    if (metrics_supported) {
      Result<MetricsPage> page = client.Metrics(id, since);
      if (page.ok()) {
        for (const Json& m : page->metrics) tracker.Add(m);
        since = page->next;
      } else if (page.status().code() == StatusCode::kNotFound) {
        metrics_supported = false;  // a head without the metrics route
      }
      printer.Update(tracker, UnixNow());
    }

    if (!tail) {
      COHORT_ASSIGN_OR_RETURN(std::string url, client.LogTailUrl(id));
      net::WebSocketClient::Headers headers;
      if (!client.connection().token.empty()) {
        headers.emplace_back("Authorization", "Bearer " + client.connection().token);
      }
      tail = std::make_unique<LogTail>(id, std::move(url), std::move(headers), client.connection(),
                                       options);
      tail->Start();
    }
    return Status::Ok();
  };

  while (true) {
    if (options.interrupted && options.interrupted()) {
      stop();
      result.interrupted = true;
      return result;
    }

    if (tail) {
      events.clear();
      log_ended = tail->Take(&events);
      for (LogTail::Event& e : events) {
        if (e.note) {
          printer.Note(e.text);
        } else {
          printer.Log(e.text);
          result.log_offset += e.text.size();
        }
      }
      if (!events.empty()) last_log_event = Clock::now();
      if (std::optional<Status> error = tail->error()) {
        stop();
        return *error;
      }
    }

    // The head ends the stream once the job is terminal: ask for the final
    // status right away.
    Clock::time_point now = Clock::now();
    const bool poll_now = log_ended && !polled_after_log_end;
    if (now >= next_poll || poll_now) {
      if (log_ended) polled_after_log_end = true;
      if (Status s = poll(); !s.ok()) {
        stop();
        return s;
      }
      now = Clock::now();
      next_poll = now + options.poll_interval;
    }

    if (terminal && log_ended) {
      stop();
      result.status = status;
      result.message = message;
      return result;
    }
    if (terminal && tail && now - std::max(last_log_event, tail->last_activity()) > options.stream_idle_timeout) {
      stop();
      printer.Note("(the log stream stayed silent for " + Seconds(options.stream_idle_timeout) +
                   " after the job ended; stopped following)");
      result.status = status;
      result.message = message;
      return result;
    }

    const Clock::time_point until = std::min(next_poll, now + std::chrono::milliseconds(50));
    if (tail) {
      tail->Wait(until);
    } else {
      std::this_thread::sleep_until(until);
    }
  }
}

// --- text helpers -------------------------------------------------------------

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string FormatTimeMs(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  const time_t t = static_cast<time_t>(unix_ms / 1000);
  struct tm tm_local;
  if (::localtime_r(&t, &tm_local) == nullptr) return "-";
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm_local);
  return buf;
}

std::string FormatAmount(double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.4g", v);
  }
  return buf;
}

namespace {

// A name from a job, safe to print on a terminal: as-is when printable,
// else as a JSON string (escapes control characters).
std::string PrintableName(const std::string& name) {
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f) return Json(name).dump(-1, ' ', false, Json::error_handler_t::replace);
  return name;
}

}  // namespace

std::string FormatJobResults(const std::string& id, const Json& d) {
  const std::string status = StringField(d, "status");
  const std::string uri = StringField(d, "results_uri");
  std::string out;
  if (!uri.empty()) {
    auto listing = d.find("results");
    if (listing == d.end() || !listing->is_array() || listing->empty()) {
      out = "Job " + id + " (" + status + "): results go to " + PrintableName(uri) + "; ";
      out += IsTerminalStatus(status) ? "none were verified there (see `cohort job status " + id + "`)\n"
                                      : "they are listed here once the job has succeeded\n";
      return out;
    }
    double total = 0;
    std::vector<std::vector<std::string>> rows = {{"OBJECT", "SIZE", "CRC32C"}};
    for (const Json& o : *listing) {
      const double size = NumberField(o, "size_bytes");
      total += size;
      rows.push_back({PrintableName(StringField(o, "uri")), FormatBytes(size), StringField(o, "crc32c")});
    }
    out = "Job " + id + " (" + status + "): " + std::to_string(listing->size()) + " object(s), " +
          FormatBytes(total) + ", in " + PrintableName(uri) + "\n";
    out += FormatTable(rows);
    return out;
  }
  auto nodes = d.find("node_results");
  size_t with_files = 0;
  if (nodes != d.end() && nodes->is_array())
    for (const Json& n : *nodes) with_files += NumberField(n, "file_count") > 0 ? 1 : 0;
  if (with_files == 0) {
    const std::string dir = StringField(d, "results_dir");
    out = "Job " + id + " (" + status + "): no results ";
    out += IsTerminalStatus(status) ? "were left" : "yet";
    out += dir.empty() ? "" : " in " + PrintableName(dir);
    out += " (results are listed when a worker exits)\n";
    return out;
  }
  out = "Job " + id + " (" + status + "): results are on " + std::to_string(with_files) +
        " node(s); the job has no results_uri\n";
  for (const Json& n : *nodes) {
    const double count = NumberField(n, "file_count");
    if (count <= 0) continue;
    const std::string address = StringField(n, "node_address");
    out += "\nnode " + PrintableName(StringField(n, "node_id")) +
           (address.empty() ? "" : " (" + PrintableName(address) + ")") + ": " +
           PrintableName(StringField(n, "dir")) + ", " + FormatAmount(count) + " file(s), " +
           FormatBytes(NumberField(n, "total_bytes")) + "\n";
    std::vector<std::vector<std::string>> rows = {{"  FILE", "SIZE"}};
    size_t listed = 0;
    if (auto files = n.find("files"); files != n.end() && files->is_array())
      for (const Json& f : *files) {
        rows.push_back({"  " + PrintableName(StringField(f, "path")), FormatBytes(NumberField(f, "size_bytes"))});
        ++listed;
      }
    out += FormatTable(rows);
    if (static_cast<double>(listed) < count)
      out += "  ... and " + FormatAmount(count - static_cast<double>(listed)) + " more\n";
    if (auto t = n.find("truncated"); t != n.end() && t->is_boolean() && t->get<bool>())
      out += "  (the directory has too many entries; not all were counted)\n";
  }
  if (with_files > 1)
    out += "\nThe results are spread over several nodes. Submit with --results-uri gs://BUCKET/PATH "
           "(or s3://, file:// on shared storage) to gather them in one place.\n";
  return out;
}

std::string FormatBytes(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int unit = 0;
  while (std::fabs(bytes) >= 1024 && unit < 5) {
    bytes /= 1024;
    ++unit;
  }
  char buf[64];
  if (unit == 0) {
    std::snprintf(buf, sizeof(buf), "%.0f B", bytes);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", bytes, kUnits[unit]);
  }
  return buf;
}

double NumberField(const Json& j, const char* key, double fallback) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

}  // namespace cohort::cli
