// `cohort start` (head or node agent), `cohort stop`, and `cohort run` (the
// embedded default: a head and one local agent in this process, one job run
// to the end). Main thread; the head and agent run their own threads.
//
// Without --block, `start` detaches: it forks a child that runs the head or
// agent in a new session (output to <state-dir>/<role>.out), waits until the
// child reports it is ready (or failed) through a pipe, prints how to use it
// and exits; the child's pid goes to <state-dir>/<role>.pid for `cohort stop`.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/job_client.h"
#include "cli/progress.h"
#include "cohort/agent/agent.h"
#include "cohort/agent/metrics.h"
#include "cohort/common/logging.h"
#include "cohort/common/prometheus.h"
#include "cohort/head/head_server.h"
#include "cohort/jobs/job.h"
#include "cohort/net/http_server.h"

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;

std::string DefaultStateDir() {
  if (const char* d = std::getenv("COHORT_STATE_DIR"); d && *d) return d;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.cohort";
}

// Blocks SIGINT/SIGTERM/SIGHUP in this thread (and the threads it creates
// after), so that WaitForTermination can take them with sigwait.
void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTermination() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

// Daemon support: the parent waits on a pipe for the child's one-line verdict.
struct Detach {
  int ready_fd = -1;  // child: write "ok ..." or "error ..." here
};

// Returns in the child (with ready_fd set); in the parent, waits for the
// verdict, prints it and exits.
Detach DetachOrExit(const std::string& state_dir, const std::string& role) {
  int fds[2];
  if (pipe(fds) != 0) {
    std::perror("pipe");
    std::exit(1);
  }
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(1);
  }
  if (pid == 0) {
    close(fds[0]);
    setsid();
    std::error_code ec;
    fs::create_directories(state_dir, ec);
    const std::string out = state_dir + "/" + role + ".out";
    FILE* f = std::freopen(out.c_str(), "a", stdout);
    if (f) dup2(fileno(stdout), STDERR_FILENO);
    FILE* in = std::freopen("/dev/null", "r", stdin);
    (void)in;
    std::ofstream(state_dir + "/" + role + ".pid") << getpid() << "\n";
    return Detach{fds[1]};
  }
  close(fds[1]);
  std::string verdict;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) verdict.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  if (verdict.rfind("ok\n", 0) == 0) {
    std::fputs(verdict.c_str() + 3, stdout);
    std::exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  std::fprintf(stderr, "cohort start: %s\n(see %s/%s.out)\n",
               verdict.empty() ? "the process exited before it was ready" : verdict.c_str(),
               state_dir.c_str(), role.c_str());
  std::exit(1);
}

void Report(const Detach& d, bool ok, const std::string& text) {
  if (d.ready_fd < 0) {
    std::fputs(text.c_str(), ok ? stdout : stderr);
    std::fflush(ok ? stdout : stderr);
    return;
  }
  std::string line = (ok ? "ok\n" : "") + text;
  ssize_t w = write(d.ready_fd, line.data(), line.size());
  (void)w;
  close(d.ready_fd);
}

// --- credentials -----------------------------------------------------------------

std::string Getenv(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// A secret given either as a value flag or as a file flag (its first line);
// "" when neither is set.
Result<std::string> SecretFromFlags(const std::string& value, const char* value_flag, const std::string& file,
                                    const char* file_flag) {
  if (!value.empty() && !file.empty())
    return Status::InvalidArgument(std::string("give ") + value_flag + " or " + file_flag + ", not both");
  if (!file.empty()) return head::ReadTokenFile(file, file_flag);
  return value;
}

std::string LocalIp() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return host;
}

// --- cohort start ---------------------------------------------------------------

struct StartFlags {
  bool head = false;
  std::string address;
  int port = 6380;
  int dashboard_port = 8265;
  std::string host = "0.0.0.0";
  std::string state_dir;
  std::string auth = "token";
  std::string token, token_file;            // head: the API token; agent: joins with it (compatibility)
  std::string join_token, join_token_file;  // the agents' join token
  bool block = false;
  double node_timeout_s = 10;
  size_t max_body_bytes = size_t{100} << 20;
  std::optional<double> num_cpus, num_gpus;
  std::optional<int64_t> memory;
  std::string resources_json;
  std::string advertise;
  int metrics_port = 0;  // agent: serve GET /metrics there (0: off)
};

int RunHead(const StartFlags& f) {
  const std::string state_dir = f.state_dir.empty() ? DefaultStateDir() : f.state_dir;
  if (f.auth != "token" && f.auth != "none") {
    std::fprintf(stderr, "cohort start: --auth must be 'token' or 'none'\n");
    return kExitUsage;
  }
  // The head takes its secrets from its flags or its state dir only, not from
  // the environment the CLI reads (a $COHORT_TOKEN_FILE meant for clients
  // must not become a new head's token).
  auto token = SecretFromFlags(f.token, "--token", f.token_file, "--token-file");
  if (!token.ok()) {
    std::fprintf(stderr, "cohort start: %s\n", token.status().message().c_str());
    return kExitUsage;
  }
  auto join_token = SecretFromFlags(f.join_token, "--join-token", f.join_token_file, "--join-token-file");
  if (!join_token.ok()) {
    std::fprintf(stderr, "cohort start: %s\n", join_token.status().message().c_str());
    return kExitUsage;
  }
  if (f.auth == "none" && (!token->empty() || !join_token->empty())) {
    std::fprintf(stderr, "cohort start: --auth none takes no token\n");
    return kExitUsage;
  }
  Detach detach;
  if (!f.block) detach = DetachOrExit(state_dir, "head");
  BlockTerminationSignals();
  head::HeadOptions options;
  options.state_dir = state_dir;
  options.host = f.host;
  options.agent_port = f.port;
  options.dashboard_port = f.dashboard_port;
  options.auth = f.auth == "token";
  options.token = *token;
  options.join_token = *join_token;
  options.node_timeout = std::chrono::milliseconds(static_cast<int64_t>(f.node_timeout_s * 1000));
  options.max_body_bytes = f.max_body_bytes;
  auto head = head::HeadServer::Start(options);
  if (!head.ok()) {
    Report(detach, false, "cannot start the head: " + head.status().ToString() + "\n");
    return 1;
  }
  const std::string ip = LocalIp();
  // Where each secret is (never the secret itself: this goes to logs).
  auto where = [&](const std::string& value_flag_value, const std::string& file, const char* value_flag,
                   const std::string& state_file) {
    if (!file.empty()) return file;
    if (!value_flag_value.empty()) return std::string("given with ") + value_flag;
    return state_dir + "/" + state_file;
  };
  const std::string join_file = where(f.join_token, f.join_token_file, "--join-token", "join_token");
  const bool join_on_command_line = f.join_token_file.empty() && !f.join_token.empty();
  const std::string join_flag = " --join-token-file " + (join_on_command_line ? std::string("FILE") : join_file);
  std::string text =
      "cohort head started (pid " + std::to_string(getpid()) + ").\n" + "  API and dashboard:  http://" + ip + ":" +
      std::to_string((*head)->dashboard_port()) + "\n" + "  Agents join with:   cohort start --address " + ip + ":" +
      std::to_string((*head)->agent_port()) + (options.auth ? join_flag : "") + "\n" +
      (options.auth ? "  API token:          " + where(f.token, f.token_file, "--token", "token") +
                          " (admin: the API and the dashboard)\n" + "  Join token:         " + join_file +
                          " (agents only: copy it to their machines, pass --join-token-file)\n"
                    : "  API token:          none (--auth none)\n") +
      "  State:              " + state_dir + "\n" +
      (f.block ? "Press Ctrl-C to stop.\n" : "Stop it with: cohort stop\n");
  Report(detach, true, text);
  int sig = WaitForTermination();
  COHORT_LOG(INFO) << "signal " << sig << ": stopping the head";
  (*head)->Stop();
  return 0;
}

// What an agent registers with, first found: --join-token(-file); --token(-file)
// (the admin token still joins, with a WARN on the head); $COHORT_JOIN_TOKEN_FILE,
// $COHORT_TOKEN, $COHORT_TOKEN_FILE; <dir>/join_token, then <dir>/token, for dir
// = its state dir, then the default one (a head on this machine). "" when none.
Result<std::string> AgentToken(const StartFlags& f, const std::string& base) {
  COHORT_ASSIGN_OR_RETURN(std::string join,
                          SecretFromFlags(f.join_token, "--join-token", f.join_token_file, "--join-token-file"));
  COHORT_ASSIGN_OR_RETURN(std::string token, SecretFromFlags(f.token, "--token", f.token_file, "--token-file"));
  if (!join.empty() && !token.empty())
    return Status::InvalidArgument("give the join token (--join-token, --join-token-file) or --token/--token-file, "
                                   "not both: agents need only the join token");
  if (!join.empty()) return join;
  if (!token.empty()) return token;
  if (std::string path = Getenv("COHORT_JOIN_TOKEN_FILE"); !path.empty())
    return head::ReadTokenFile(path, "$COHORT_JOIN_TOKEN_FILE");
  if (std::string t = Getenv("COHORT_TOKEN"); !t.empty()) return t;
  if (std::string path = Getenv("COHORT_TOKEN_FILE"); !path.empty())
    return head::ReadTokenFile(path, "$COHORT_TOKEN_FILE");
  for (const char* name : {"join_token", "token"})
    for (const std::string& dir : {base, DefaultStateDir()}) {
      std::ifstream in(dir + "/" + name);
      std::string line;
      if (in && std::getline(in, line) && !line.empty()) return line;
    }
  return std::string();
}

int RunAgent(const StartFlags& f) {
  const std::string base = f.state_dir.empty() ? DefaultStateDir() + "/agent" : f.state_dir;
  agent::Agent::Options options;
  options.head_address = f.address;
  options.state_dir = base;
  options.advertise_address = f.advertise;
  auto token = AgentToken(f, base);
  if (!token.ok()) {
    std::fprintf(stderr, "cohort start: %s\n", token.status().message().c_str());
    return kExitUsage;
  }
  options.cluster_token = *token;
  if (f.num_cpus) options.resources["CPU"] = *f.num_cpus;
  if (f.num_gpus) options.resources["GPU"] = *f.num_gpus;
  if (f.memory) options.resources["memory"] = static_cast<double>(*f.memory);
  if (!f.resources_json.empty()) {
    auto j = nlohmann::json::parse(f.resources_json, nullptr, false);
    if (!j.is_object()) {
      std::fprintf(stderr, "cohort start: --resources must be a JSON object, e.g. '{\"TPU\": 4}'\n");
      return kExitUsage;
    }
    for (auto& [k, v] : j.items()) {
      if (!v.is_number() || v.get<double>() < 0) {
        std::fprintf(stderr, "cohort start: --resources: '%s' must be a non-negative number\n", k.c_str());
        return kExitUsage;
      }
      options.resources[k] = v.get<double>();
    }
  }
  Detach detach;
  if (!f.block) detach = DetachOrExit(base, "agent");
  BlockTerminationSignals();
  agent::Agent agent(options);
  Status st = agent.Start();
  if (!st.ok()) {
    Report(detach, false, "cannot start the node agent: " + st.ToString() + "\n");
    return 1;
  }
  // Prometheus: GET /metrics without auth (numbers only), on all addresses.
  agent::NodeMetrics node_metrics(agent);
  std::unique_ptr<net::HttpServer> metrics_server;
  if (f.metrics_port > 0) {
    net::HttpServer::Options http_options;
    http_options.port = f.metrics_port;
    auto server = net::HttpServer::Start(http_options);
    if (!server.ok()) {
      agent.Stop(true);
      Report(detach, false, "cannot serve metrics: " + server.status().WithPrefix("--metrics-port").ToString() + "\n");
      return 1;
    }
    metrics_server = std::move(server).value();
    metrics_server->Handle("GET", "/metrics", [&node_metrics](const net::Request&) {
      net::Response r;
      r.content_type = prom::kContentType;
      r.body = node_metrics.Text();
      return r;
    });
  }
  std::string res;
  for (const auto& [k, v] : agent.resources()) res += (res.empty() ? "" : ", ") + k + "=" + FormatAmount(v);
  Report(detach, true,
         "cohort node agent started (pid " + std::to_string(getpid()) + "), node " + agent.node_id() +
             " at " + agent.advertise_address() + " joined " + f.address + "\n  resources: " + res +
             (metrics_server ? "\n  metrics: http://" + agent.advertise_address() + ":" +
                                   std::to_string(metrics_server->port()) + "/metrics"
                             : "") +
             "\n  state: " + base + "\n");
  std::thread waiter([&] {
    Status why = agent.Wait();
    if (!why.ok()) {
      COHORT_LOG(ERROR) << "agent ended: " << why.ToString();
      kill(getpid(), SIGTERM);
    }
  });
  WaitForTermination();
  metrics_server.reset();  // no scrape outlives the agent
  agent.Stop(true);
  waiter.join();
  return agent.Wait(Deadline::After(std::chrono::seconds(1))).ok() ? 0 : 1;
}

// --- cohort stop -----------------------------------------------------------------

int RunStop(const std::string& state_dir_flag) {
  const std::string dir = state_dir_flag.empty() ? DefaultStateDir() : state_dir_flag;
  std::vector<std::pair<std::string, pid_t>> targets;
  std::error_code ec;
  auto consider = [&](const fs::path& p) {
    std::ifstream in(p);
    long pid = 0;
    if (in >> pid && pid > 1) targets.emplace_back(p.string(), static_cast<pid_t>(pid));
  };
  for (const char* role : {"agent.pid", "head.pid"}) consider(fs::path(dir) / role);
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) consider(it->path() / "agent.pid");
  int stopped = 0;
  // Agents first (they stop their workers), then the head.
  std::stable_sort(targets.begin(), targets.end(), [](const auto& a, const auto& b) {
    return a.first.find("agent") != std::string::npos && b.first.find("agent") == std::string::npos;
  });
  for (const auto& [file, pid] : targets) {
    if (kill(pid, SIGTERM) != 0) {
      fs::remove(file, ec);
      continue;
    }
    bool gone = false;
    for (int i = 0; i < 150 && !gone; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      gone = kill(pid, 0) != 0;
    }
    if (!gone) kill(pid, SIGKILL);
    fs::remove(file, ec);
    std::printf("stopped %s (pid %d)\n", fs::path(file).stem().string().c_str(), pid);
    ++stopped;
  }
  if (stopped == 0) std::printf("nothing to stop under %s\n", dir.c_str());
  return 0;
}

// --- cohort run ---------------------------------------------------------------------

struct RunFlags {
  SubmitOptions submit;
  std::string state_dir;
  std::string results_dir;  // "" = ./cohort_results
  std::optional<double> num_cpus, num_gpus;
  bool keep_state = false;
  int dashboard_port = 8265;  // the dashboard and API on 127.0.0.1; busy -> an ephemeral port
};

volatile sig_atomic_t g_run_interrupted = 0;

int RunEmbedded(RunFlags& f, const Passthrough& passthrough) {
  if (!passthrough || passthrough->empty()) {
    std::fprintf(stderr, "cohort run: give the entrypoint after --, e.g. cohort run --workers 2 -- ./train\n");
    return kExitUsage;
  }
  f.submit.entrypoint = *passthrough;
  // Results are never thrown away with the temp state: without a results
  // URI they go to ./cohort_results/<job id>/, checkpoints to its
  // checkpoints/ (the layout a results URI gets). A job that writes none
  // still succeeds: only a results URI makes the head insist on them.
  std::error_code cwd_ec;
  const fs::path cwd = fs::current_path(cwd_ec);
  if (cwd_ec) {
    std::fprintf(stderr, "cohort run: cannot read the current directory: %s\n", cwd_ec.message().c_str());
    return 1;
  }
  std::string local_results;
  if (f.submit.results_uri.empty()) {
    if (f.submit.submission_id.empty()) f.submit.submission_id = jobs::NewSubmissionId();
    const fs::path base = f.results_dir.empty() ? cwd / "cohort_results" : fs::absolute(f.results_dir);
    local_results = (base / f.submit.submission_id).lexically_normal().string();
    f.submit.env.push_back("COHORT_RESULTS_DIR=" + local_results);
    f.submit.env.push_back("COHORT_CHECKPOINT_DIR=" + local_results + "/checkpoints");
  }
  // The job's output is what matters here; the embedded head and agent only
  // speak up for warnings (COHORT_LOG_LEVEL=INFO shows everything).
  log::SetDefaultLevel(log::Level::WARN);
  auto request = BuildSubmitRequest(f.submit);
  if (!request.ok()) {
    std::fprintf(stderr, "cohort run: %s\n", request.status().message().c_str());
    return kExitUsage;
  }
  // State: a fresh temp dir unless given.
  std::string state_dir = f.state_dir;
  bool temp = false;
  if (state_dir.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "cohort-run-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::perror("cohort run: mkdtemp");
      return 1;
    }
    state_dir = tmpl;
    temp = true;
  }
  head::HeadOptions head_options;
  head_options.state_dir = state_dir + "/head";
  head_options.host = "127.0.0.1";
  head_options.agent_port = 0;
  head_options.dashboard_port = f.dashboard_port;
  auto head = head::HeadServer::Start(head_options);
  if (!head.ok() && f.dashboard_port != 0 && head.status().code() == StatusCode::kUnavailable) {
    // Another head (or a second `cohort run`) has the port: any free one will do.
    head_options.dashboard_port = 0;
    head = head::HeadServer::Start(head_options);
  }
  if (!head.ok()) {
    std::fprintf(stderr, "cohort run: cannot start the embedded head: %s\n", head.status().ToString().c_str());
    return 1;
  }
  agent::Agent::Options agent_options;
  agent_options.head_address = "127.0.0.1:" + std::to_string((*head)->agent_port());
  agent_options.cluster_token = (*head)->join_token();
  agent_options.state_dir = state_dir + "/agent";
  agent_options.advertise_address = "127.0.0.1";
  // Workers start where the user typed the command (torchrun's behaviour),
  // unless --working-dir ships a copy.
  agent_options.worker_cwd = cwd.string();
  if (f.num_cpus) agent_options.resources["CPU"] = *f.num_cpus;
  if (f.num_gpus) agent_options.resources["GPU"] = *f.num_gpus;
  agent::Agent agent(agent_options);
  if (Status st = agent.Start(); !st.ok()) {
    std::fprintf(stderr, "cohort run: cannot start the embedded agent: %s\n", st.ToString().c_str());
    return 1;
  }
  Connection conn{"http://127.0.0.1:" + std::to_string((*head)->dashboard_port()), (*head)->token(),
                  head_options.state_dir};
  JobClient client(conn);
  if (std::string local = LocalWorkingDir(*request); !local.empty()) {
    auto uri = client.UploadPackage(local);
    if (!uri.ok()) {
      std::fprintf(stderr, "cohort run: %s\n", uri.status().ToString().c_str());
      return 1;
    }
    (*request)["runtime_env"]["working_dir"] = *uri;
  }
  auto id = client.Submit(*request);
  if (!id.ok()) {
    std::fprintf(stderr, "cohort run: %s\n", id.status().message().c_str());
    return 1;
  }
  std::printf("cohort run: job %s on an embedded cluster (state in %s)\n", id->c_str(), state_dir.c_str());
  std::printf("Dashboard: http://127.0.0.1:%d (token: %s)\n  this job: http://127.0.0.1:%d/#/jobs/%s\n",
              (*head)->dashboard_port(), (*head)->token().c_str(), (*head)->dashboard_port(), id->c_str());
  std::fflush(stdout);

  struct sigaction sa {};
  sa.sa_handler = [](int) { g_run_interrupted = 1; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  ProgressPrinter printer = ProgressPrinter::ForStdout();
  FollowOptions follow;
  follow.poll_interval = std::chrono::milliseconds(200);
  follow.interrupted = [] { return g_run_interrupted != 0; };
  auto result = FollowJob(client, *id, printer, follow);
  printer.Finish();
  if (result.ok() && result->interrupted) {
    std::printf("cohort run: interrupted; stopping job %s\n", id->c_str());
    (void)client.Stop(*id);
    g_run_interrupted = 0;
    follow.interrupted = [] { return g_run_interrupted != 0; };
    follow.log_offset = result->log_offset;  // the rest of the log, not all of it again
    ProgressPrinter quiet = ProgressPrinter::ForStdout(false);
    result = FollowJob(client, *id, quiet, follow);
  }
  int code = 1;
  if (!result.ok()) {
    std::fprintf(stderr, "cohort run: %s\n", result.status().ToString().c_str());
  } else {
    // Final metrics: the last report of rank 0.
    auto metrics = client.Metrics(*id, 0);
    if (metrics.ok() && !metrics->metrics.empty()) {
      const Json* last = nullptr;
      for (const auto& m : metrics->metrics)
        if (m.value("rank", 0) == 0) last = &m;
      if (last != nullptr) std::printf("final metrics: %s\n", last->dump().c_str());
    }
    std::printf("%s\n", FinalStatusLine(*id, result->status, result->message).c_str());
    code = result->status == "SUCCEEDED" ? 0 : 1;
    if (!local_results.empty()) {
      std::error_code ec;
      if (fs::is_directory(local_results, ec)) {
        std::printf("results: %s\n", local_results.c_str());
      } else {
        std::printf("results: none (the job wrote nothing to $COHORT_RESULTS_DIR = %s)\n", local_results.c_str());
      }
    } else {
      std::printf("results: %s\n", f.submit.results_uri.c_str());
    }
  }
  agent.Stop(true);
  (*head)->Stop();
  if (temp && !f.keep_state) {
    std::error_code ec;
    fs::remove_all(state_dir, ec);
  }
  return code;
}

}  // namespace

Result<std::string> ResolveTokenFlags(const std::string& token, const std::string& token_file) {
  COHORT_ASSIGN_OR_RETURN(std::string t, SecretFromFlags(token, "--token", token_file, "--token-file"));
  if (!t.empty()) return t;
  if (std::string env = Getenv("COHORT_TOKEN"); !env.empty()) return env;
  if (std::string path = Getenv("COHORT_TOKEN_FILE"); !path.empty())
    return head::ReadTokenFile(path, "$COHORT_TOKEN_FILE");
  return std::string();
}

Command AddStartCommand(CLI::App& root) {
  auto f = std::make_shared<StartFlags>();
  CLI::App* app = root.add_subcommand("start", "Start a head (--head) or a node agent (--address HOST:PORT)");
  app->add_flag("--head", f->head, "Start the head: node registry, scheduler, job manager, HTTP API");
  app->add_option("--address", f->address, "The head's agent address HOST:PORT to join as a node agent");
  app->add_option("--port", f->port, "Head: the agents' gRPC port")->capture_default_str();
  app->add_option("--dashboard-port", f->dashboard_port, "Head: the HTTP API port")->capture_default_str();
  app->add_option("--host", f->host, "Head: the address both ports listen on")->capture_default_str();
  app->add_option("--state-dir", f->state_dir, "State directory (default ~/.cohort, or ~/.cohort/agent for agents)");
  app->add_option("--auth", f->auth, "Head: 'token' (default) or 'none'");
  app->add_option("--token", f->token,
                  "Head: the API (admin) token (default: <state-dir>/token, created at first start). Agents: "
                  "joins with it for compatibility (the head logs a warning); give agents the join token instead");
  app->add_option("--token-file", f->token_file,
                  "As --token, read from the first line of this file (agents: default $COHORT_TOKEN_FILE)");
  app->add_option("--join-token", f->join_token,
                  "The agents' join token (head: default <state-dir>/join_token, created at first start; it "
                  "never opens the HTTP API). Prefer --join-token-file: a command line is visible to all users");
  app->add_option("--join-token-file", f->join_token_file,
                  "As --join-token, read from the first line of this file (agents: default "
                  "$COHORT_JOIN_TOKEN_FILE, else <state-dir>/join_token)");
  app->add_option("--node-timeout-s", f->node_timeout_s, "Head: seconds without heartbeat before a node is dead");
  app->add_option("--max-body-bytes", f->max_body_bytes,
                  "Head: largest request body accepted (package uploads); more gets 413")
      ->capture_default_str();
  app->add_option("--num-cpus", f->num_cpus, "Agent: CPUs to offer (default: detected)");
  app->add_option("--num-gpus", f->num_gpus, "Agent: GPUs to offer (default: detected)");
  app->add_option("--memory", f->memory, "Agent: memory to offer, bytes (default: detected)");
  app->add_option("--resources", f->resources_json, "Agent: custom resources as JSON, e.g. '{\"TPU\": 4}'");
  app->add_option("--advertise-address", f->advertise, "Agent: the IP other nodes reach this one at");
  app->add_option("--metrics-port", f->metrics_port,
                  "Agent: serve Prometheus metrics on GET /metrics at this port, all addresses, no auth "
                  "(0: off; the head serves its own on the dashboard port)")
      ->capture_default_str();
  app->add_flag("--block", f->block, "Stay in the foreground (containers, tests)");
  return {app, [f](const Passthrough& passthrough) {
            if (passthrough) {
              std::fprintf(stderr, "cohort start: unexpected arguments after --\n");
              return kExitUsage;
            }
            if (f->head == !f->address.empty()) {
              std::fprintf(stderr, "cohort start: give exactly one of --head or --address HOST:PORT\n");
              return kExitUsage;
            }
            if (f->metrics_port < 0 || f->metrics_port > 65535 || (f->head && f->metrics_port != 0)) {
              std::fprintf(stderr, f->head ? "cohort start: --metrics-port is for node agents; the head serves "
                                             "GET /metrics on its --dashboard-port\n"
                                           : "cohort start: --metrics-port must be 0-65535\n");
              return kExitUsage;
            }
            return f->head ? RunHead(*f) : RunAgent(*f);
          }};
}

Command AddStopCommand(CLI::App& root) {
  auto dir = std::make_shared<std::string>();
  CLI::App* app = root.add_subcommand("stop", "Stop the head and agents started with `cohort start` on this machine");
  app->add_option("--state-dir", *dir, "State directory (default ~/.cohort)");
  return {app, [dir](const Passthrough&) { return RunStop(*dir); }};
}

Command AddRunCommand(CLI::App& root) {
  auto f = std::make_shared<RunFlags>();
  CLI::App* app = root.add_subcommand(
      "run", "Run one job on an embedded cluster (a head and a local agent in this process), then exit");
  app->add_option("--workers", f->submit.workers, "Run the entrypoint as N gang-placed workers (torchrun env)");
  app->add_option("--cpus-per-worker", f->submit.cpus_per_worker, "CPUs per worker (default 1)");
  app->add_option("--gpus-per-worker", f->submit.gpus_per_worker, "GPUs per worker (default 0)");
  app->add_option("--max-failures", f->submit.max_failures, "Restart the group up to K times (-1: always)");
  auto* results_uri =
      app->add_option("--results-uri", f->submit.results_uri, "Upload the results here (file://, gs://, s3://)");
  app->add_option("--results-dir", f->results_dir,
                  "Results (and checkpoints) go to DIR/<job id>/ (default: ./cohort_results)")
      ->excludes(results_uri);
  app->add_option("--working-dir", f->submit.working_dir,
                  "Ship a copy of this directory to the workers as their cwd (default: they run in the current "
                  "directory)");
  app->add_option("--env", f->submit.env, "KEY=VALUE for the workers (repeatable)");
  app->add_option("--grad-compression", f->submit.grad_compression,
                  "Gradients on the wire between hosts: none, bf16, bf16-ef, fp16 or fp16-ef (sets COHORT_GRAD_COMPRESSION)");
  app->add_option("--runtime-env-json", f->submit.runtime_env_json, "A Ray runtime_env object");
  app->add_option("--submission-id", f->submit.submission_id, "The job's id");
  app->add_option("--state-dir", f->state_dir, "Keep the embedded cluster's state here (default: a temp dir)");
  app->add_option("--num-cpus", f->num_cpus, "CPUs the local node offers (default: detected)");
  app->add_option("--num-gpus", f->num_gpus, "GPUs the local node offers (default: detected)");
  app->add_flag("--keep-state", f->keep_state, "Do not delete the temp state dir at the end");
  app->add_option("--dashboard-port", f->dashboard_port,
                  "Serve the dashboard and API on 127.0.0.1:PORT while the job runs (busy or 0: a free port)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  return {app, [f](const Passthrough& passthrough) { return RunEmbedded(*f, passthrough); }};
}

}  // namespace cohort::cli
