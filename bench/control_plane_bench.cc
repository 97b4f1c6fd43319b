// Control-plane benchmark driver: talks to a running head's HTTP API (the
// Ray-compatible Jobs API, docs/api.md) and prints key=value lines for
// bench/control_plane.sh. Four phases, in this order:
//
//   1. latency:   N trivial jobs (entrypoint `true`, default resources), one at
//                 a time. Each: POST /api/jobs/, then GET /api/jobs/{id} every
//                 --poll-us (1 ms) until its status is RUNNING or terminal.
//                 Prints submit->RUNNING p50/p99, the bare POST round trip, and
//                 submit->started (every worker reported a pid by the agent:
//                 the process really exists; RUNNING alone means "placed and
//                 the start sent", as the head sets it at placement).
//   2. gang:      R jobs of --gang-workers workers (1 CPU each, PACK), one at a
//                 time, each waited to its end before the next; submit->RUNNING
//                 (all ranks placed at once) and submit->all ranks started.
//   3. sustained: T client threads, each with its own keep-alive connection,
//                 POST `true` jobs back to back for --seconds; submissions/s.
//   4. finished:  tops the job count up to --finished if needed, then lists
//                 the jobs every second (at most --finish-timeout-s) until all
//                 are terminal; reads the head's VmRSS/VmHWM (--head-pid) when
//                 --finished jobs first are terminal, and when all are.
//
// Only the clock and the HTTP client live here; every figure comes from the
// head's answers. Timing goals are for the script to print, never asserted.
#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string url;  // http://127.0.0.1:PORT
  std::string token;
  int head_pid = 0;
  int jobs = 200;
  int poll_us = 1000;
  int gang_reps = 10;
  int gang_workers = 4;
  int threads = 8;
  double seconds = 3;
  int finished = 1000;
  double finish_timeout_s = 60;
  bool sustained_only = false;  // phase 3 alone, no job waited for (a head without agents)
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "control_plane_bench: %s\n", what.c_str());
  std::exit(1);
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Nearest-rank percentile of an unsorted sample.
double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? std::nan("") : s / static_cast<double>(v.size());
}

// One keep-alive HTTP connection to the head (one per thread).
class Client {
 public:
  Client(const std::string& url, const std::string& token) : base_(url) {
    curl_ = curl_easy_init();
    if (curl_ == nullptr) Die("curl_easy_init failed");
    headers_ = curl_slist_append(headers_, ("Authorization: Bearer " + token).c_str());
    headers_ = curl_slist_append(headers_, "Content-Type: application/json");
    headers_ = curl_slist_append(headers_, "Expect:");
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers_);
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl_, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl_, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* u) -> size_t {
      static_cast<std::string*>(u)->append(d, s * n);
      return s * n;
    });
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &body_);
  }
  ~Client() {
    curl_slist_free_all(headers_);
    curl_easy_cleanup(curl_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Returns the HTTP status (0 on a transport error); the body in body().
  long Get(const std::string& path) {
    curl_easy_setopt(curl_, CURLOPT_HTTPGET, 1L);
    return Perform(path);
  }
  long Post(const std::string& path, const std::string& payload) {
    curl_easy_setopt(curl_, CURLOPT_POST, 1L);
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, payload.c_str());
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE, static_cast<long>(payload.size()));
    return Perform(path);
  }
  const std::string& body() const { return body_; }
  const std::string& error() const { return error_; }

 private:
  long Perform(const std::string& path) {
    body_.clear();
    error_.clear();
    const std::string url = base_ + path;
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    CURLcode rc = curl_easy_perform(curl_);
    if (rc != CURLE_OK) {
      error_ = curl_easy_strerror(rc);
      return 0;
    }
    long status = 0;
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &status);
    return status;
  }

  std::string base_;
  CURL* curl_ = nullptr;
  curl_slist* headers_ = nullptr;
  std::string body_;
  std::string error_;
};

bool IsTerminal(const std::string& s) { return s == "SUCCEEDED" || s == "FAILED" || s == "STOPPED"; }

// POSTs a job; returns its id or dies (these are the benchmark's own jobs:
// a rejection is a bug, not a figure).
std::string Submit(Client& c, const json& request) {
  long st = c.Post("/api/jobs/", request.dump());
  if (st != 200) Die("submit: HTTP " + std::to_string(st) + " " + c.error() + c.body());
  auto j = json::parse(c.body(), nullptr, false);
  if (!j.is_object() || !j.contains("submission_id")) Die("submit: unexpected answer " + c.body());
  return j["submission_id"].get<std::string>();
}

json GetJob(Client& c, const std::string& id) {
  long st = c.Get("/api/jobs/" + id);
  if (st != 200) Die("GET /api/jobs/" + id + ": HTTP " + std::to_string(st) + " " + c.error() + c.body());
  auto j = json::parse(c.body(), nullptr, false);
  if (!j.is_object()) Die("GET /api/jobs/" + id + ": not a JSON object");
  return j;
}

// Every worker of the current attempt has reported its pid (or already ended).
bool AllWorkersStarted(const json& details) {
  if (!details.contains("workers") || !details["workers"].is_array() || details["workers"].empty()) return false;
  for (const auto& w : details["workers"]) {
    const bool has_pid = w.contains("pid") && w["pid"].is_number();
    const std::string status = w.value("status", "");
    if (!has_pid && status != "SUCCEEDED" && status != "FAILED") return false;
  }
  return true;
}

struct Timing {
  double submit_ms = 0;   // the POST round trip alone
  double running_ms = 0;  // submit -> RUNNING (or terminal) first seen
  double started_ms = 0;  // submit -> every worker has a pid (NaN if never seen)
  std::string status_seen;   // at running_ms
  std::string final_status;  // when polling stopped
};

// Submits `request` and polls its details every poll_us until RUNNING/terminal
// (running_ms), then on until every worker has a pid or the job ended
// (started_ms); with wait_end, also until the job is terminal.
Timing TimeOne(Client& c, const json& request, int poll_us, bool wait_end) {
  Timing t;
  const auto t0 = Clock::now();
  const std::string id = Submit(c, request);
  t.submit_ms = Ms(Clock::now() - t0);
  bool running = false, started = false;
  const auto give_up = t0 + std::chrono::seconds(30);
  while (Clock::now() < give_up) {
    json d = GetJob(c, id);
    const auto now = Clock::now();
    const std::string status = d.value("status", "");
    if (!running && (status == "RUNNING" || IsTerminal(status))) {
      running = true;
      t.running_ms = Ms(now - t0);
      t.status_seen = status;
    }
    if (running && !started && AllWorkersStarted(d)) {
      started = true;
      t.started_ms = Ms(now - t0);
    }
    const bool terminal = IsTerminal(status);
    if (running && (terminal || (started && !wait_end))) {
      if (!started) t.started_ms = std::nan("");
      t.final_status = status;
      return t;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(poll_us));
  }
  Die("job " + id + " did not reach " + (running ? "its end" : "RUNNING") + " within 30 s");
}

void PrintStats(const char* prefix, const std::vector<double>& v) {
  std::printf("%s n=%zu p50_ms=%.2f p99_ms=%.2f mean_ms=%.2f max_ms=%.2f\n", prefix, v.size(), Percentile(v, 50),
              Percentile(v, 99), Mean(v), v.empty() ? std::nan("") : *std::max_element(v.begin(), v.end()));
  std::fflush(stdout);
}

// VmRSS / VmHWM of a process, in MiB (NaN when unreadable).
std::pair<double, double> ReadRss(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  double rss = std::nan(""), hwm = std::nan("");
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::strtod(line.c_str() + 6, nullptr) / 1024.0;
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  }
  return {rss, hwm};
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--url") f.url = next();
    else if (a == "--token") f.token = next();
    else if (a == "--head-pid") f.head_pid = std::atoi(next().c_str());
    else if (a == "--jobs") f.jobs = std::atoi(next().c_str());
    else if (a == "--poll-us") f.poll_us = std::atoi(next().c_str());
    else if (a == "--gang-reps") f.gang_reps = std::atoi(next().c_str());
    else if (a == "--gang-workers") f.gang_workers = std::atoi(next().c_str());
    else if (a == "--threads") f.threads = std::atoi(next().c_str());
    else if (a == "--seconds") f.seconds = std::atof(next().c_str());
    else if (a == "--finished") f.finished = std::atoi(next().c_str());
    else if (a == "--finish-timeout-s") f.finish_timeout_s = std::atof(next().c_str());
    else if (a == "--sustained-only") f.sustained_only = true;
    else Die("unknown flag " + a);
  }
  if (f.url.empty() || f.token.empty()) Die("usage: control_plane_bench --url http://HOST:PORT --token T [--head-pid PID] ...");
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const Flags f = ParseFlags(argc, argv);
  curl_global_init(CURL_GLOBAL_ALL);
  Client c(f.url, f.token);
  const json trivial = {{"entrypoint", "true"}};
  int submitted = 0;

  // Warm-up: the connection, the head's first-use paths (statement cache, log dir).
  for (int i = 0; i < 5; ++i, ++submitted) {
    if (f.sustained_only) Submit(c, trivial);
    else TimeOne(c, trivial, f.poll_us, false);
  }

  // 1. Submit -> RUNNING of trivial jobs, one at a time.
  if (!f.sustained_only) {
    std::vector<double> post, running, started;
    for (int i = 0; i < f.jobs; ++i, ++submitted) {
      Timing t = TimeOne(c, trivial, f.poll_us, false);
      post.push_back(t.submit_ms);
      running.push_back(t.running_ms);
      if (!std::isnan(t.started_ms)) started.push_back(t.started_ms);
    }
    PrintStats("latency submit_post", post);
    PrintStats("latency submit_to_running", running);
    PrintStats("latency submit_to_started", started);
  }

  // 2. Gang placement: all ranks at once.
  if (!f.sustained_only) {
    const json gang = {{"entrypoint", "true"},
                       {"scaling",
                        {{"num_workers", f.gang_workers},
                         {"resources_per_worker", {{"CPU", 1}}},
                         {"placement_strategy", "PACK"}}}};
    std::vector<double> running, started;
    int failed = 0;
    for (int i = 0; i < f.gang_reps; ++i, ++submitted) {
      Timing t = TimeOne(c, gang, f.poll_us, /*wait_end=*/true);
      running.push_back(t.running_ms);
      if (!std::isnan(t.started_ms)) started.push_back(t.started_ms);
      failed += t.final_status != "SUCCEEDED";
    }
    std::printf("gang workers=%d reps=%d failed=%d\n", f.gang_workers, f.gang_reps, failed);
    PrintStats("gang submit_to_running", running);
    PrintStats("gang submit_to_started", started);
  }

  // 3. Sustained submissions: T closed-loop clients for `seconds`.
  {
    std::atomic<int> ok{0}, errors{0};
    std::vector<std::vector<double>> lat(f.threads);
    const auto t0 = Clock::now();
    const auto end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(f.seconds));
    std::vector<std::thread> threads;
    const std::string body = trivial.dump();
    for (int t = 0; t < f.threads; ++t) {
      threads.emplace_back([&, t] {
        Client tc(f.url, f.token);
        while (Clock::now() < end) {
          const auto s = Clock::now();
          long st = tc.Post("/api/jobs/", body);
          lat[t].push_back(Ms(Clock::now() - s));
          (st == 200 ? ok : errors)++;
        }
      });
    }
    for (auto& th : threads) th.join();
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    std::vector<double> all;
    for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
    submitted += ok.load();
    std::printf("sustained threads=%d seconds=%.2f submitted=%d errors=%d per_sec=%.1f post_p50_ms=%.2f "
                "post_p99_ms=%.2f\n",
                f.threads, elapsed, ok.load(), errors.load(), ok.load() / elapsed, Percentile(all, 50),
                Percentile(all, 99));
    std::fflush(stdout);
  }

  // 4. At least `finished` terminal jobs, then the head's memory: once when
  // the count first reaches `finished` (the head still holds the later jobs,
  // some in flight), and once every job is terminal (the head idle again).
  if (!f.sustained_only) {
    int topped_up = 0;
    for (; submitted < f.finished; ++submitted, ++topped_up) Submit(c, trivial);
    const auto t0 = Clock::now();
    const auto give_up =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(f.finish_timeout_s));
    int total = 0, terminal = 0;
    double list_ms_max = 0;
    bool first_done = false;
    auto print_rss = [&](const char* point) {
      if (f.head_pid <= 0) return;
      auto [rss, hwm] = ReadRss(f.head_pid);
      std::printf("head_rss point=%s finished_jobs=%d jobs=%d rss_mb=%.1f hwm_mb=%.1f\n", point, terminal, total,
                  rss, hwm);
      std::fflush(stdout);
    };
    for (;;) {
      const auto s = Clock::now();
      long st = c.Get("/api/jobs/");
      list_ms_max = std::max(list_ms_max, Ms(Clock::now() - s));
      if (st != 200) Die("GET /api/jobs/: HTTP " + std::to_string(st) + " " + c.error());
      auto list = json::parse(c.body(), nullptr, false);
      if (!list.is_array()) Die("GET /api/jobs/: not an array");
      total = static_cast<int>(list.size());
      terminal = 0;
      for (const auto& j : list) terminal += IsTerminal(j.value("status", ""));
      if (!first_done && terminal >= f.finished) {
        first_done = true;
        print_rss("first_target");
      }
      if (terminal == total || Clock::now() > give_up) break;
      // The listing holds the head's lock while it serializes every job: not too often.
      std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    }
    const double wait_s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("finished jobs=%d terminal=%d topped_up=%d wait_s=%.1f list_all_max_ms=%.1f%s\n", total, terminal,
                topped_up, wait_s, list_ms_max, terminal == total ? "" : " (timed out before all ended)");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    print_rss("all_finished");
  }
  curl_global_cleanup();
  return 0;
}
