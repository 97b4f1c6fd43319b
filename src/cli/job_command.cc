// `cohort job submit|logs|status|stop|list|delete|metrics|results`: the Ray-style job
// CLI over the head's HTTP API (docs/api.md), through cli/job_client.h.
//
// `submit` packages and uploads a local working directory, submits, and
// (unless --no-wait) follows the job's log and progress until it ends,
// exiting 0 only if it succeeded (1 if it failed or was stopped; 130 when
// Ctrl-C stops the following, which leaves the job running).
// Main thread only; a SIGINT handler is installed only while following.
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/job_client.h"
#include "cli/progress.h"

namespace cohort::cli {
namespace {

constexpr int kExitInterrupted = 130;

volatile sig_atomic_t g_interrupted = 0;

void OnSigint(int) { g_interrupted = 1; }

// SIGINT sets g_interrupted (no SA_RESTART, so a blocking call returns) for
// the lifetime of this object; the previous handler comes back after.
class SigintGuard {
 public:
  SigintGuard() {
    g_interrupted = 0;
    struct sigaction sa {};
    sa.sa_handler = OnSigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, &previous_);
  }
  ~SigintGuard() { sigaction(SIGINT, &previous_, nullptr); }
  SigintGuard(const SigintGuard&) = delete;
  SigintGuard& operator=(const SigintGuard&) = delete;

 private:
  struct sigaction previous_ {};
};

bool Interrupted() { return g_interrupted != 0; }

struct ConnFlags {
  std::string address;
  std::string token;       // after ResolveTokenFlags: the token from any source, or ""
  std::string token_file;
  std::string state_dir;

  // " --address X" when the user gave one, for the commands we suggest.
  std::string AddressSuffix() const { return address.empty() ? "" : " --address " + address; }
};

void AddConnFlags(CLI::App* app, ConnFlags* f) {
  app->add_option("--address", f->address,
                  "Head URL (default: $COHORT_ADDRESS, else http://127.0.0.1:8265)");
  app->add_option("--token", f->token,
                  "Bearer token (default: $COHORT_TOKEN, else $COHORT_TOKEN_FILE, else "
                  "<state-dir>/token)");
  app->add_option("--token-file", f->token_file,
                  "Read the bearer token from the first line of this file (keeps it off the "
                  "command line)");
  app->add_option("--state-dir", f->state_dir,
                  "Local state directory (default: $COHORT_STATE_DIR, else ~/.cohort)");
}

JobClient MakeClient(const ConnFlags& f) {
  return JobClient(ResolveConnection(f.address, f.token, f.state_dir));
}

int Fail(const char* command, const Status& status) {
  std::fprintf(stderr, "cohort job %s: %s\n", command, status.message().c_str());
  return status.code() == StatusCode::kInvalidArgument && status.message().find("(HTTP") ==
                                                              std::string::npos
             ? kExitUsage
             : 1;
}

bool RejectPassthrough(const char* command, const Passthrough& passthrough) {
  if (!passthrough) return false;
  std::fprintf(stderr, "cohort job %s: unexpected arguments after --\n", command);
  return true;
}

void PrintInterruptHint(const std::string& id, const ConnFlags& conn) {
  std::printf(
      "\nStopped following; job %s keeps running.\n"
      "  cohort job logs %s --follow%s   to follow it again\n"
      "  cohort job stop %s%s            to stop it\n",
      id.c_str(), id.c_str(), conn.AddressSuffix().c_str(), id.c_str(),
      conn.AddressSuffix().c_str());
  std::fflush(stdout);
}

std::string JsonText(const Json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

// "2 x {CPU: 1, GPU: 1}"-style text of a scaling object, or "1".
std::string WorkersText(const Json& scaling) {
  if (!scaling.is_object()) return "1";
  std::string out = FormatAmount(NumberField(scaling, "num_workers", 1));
  auto res = scaling.find("resources_per_worker");
  if (res != scaling.end() && res->is_object() && !res->empty()) {
    std::string r;
    for (auto it = res->begin(); it != res->end(); ++it) {
      if (!it->is_number()) continue;
      if (!r.empty()) r += ", ";
      r += it.key() + ": " + FormatAmount(it->get<double>());
    }
    out += " x {" + r + "}";
  }
  return out;
}

// --- submit ------------------------------------------------------------------

struct SubmitFlags {
  ConnFlags conn;
  SubmitOptions options;
  int workers = 0;
  double cpus_per_worker = 1;
  double gpus_per_worker = 0;
  int max_failures = 0;
  double entrypoint_num_cpus = 0;
  double entrypoint_num_gpus = 0;
  int64_t entrypoint_memory = 0;
  bool no_wait = false;
  // Set after parsing: which of the optional flags were given.
  CLI::Option* workers_opt = nullptr;
  CLI::Option* cpus_opt = nullptr;
  CLI::Option* gpus_opt = nullptr;
  CLI::Option* max_failures_opt = nullptr;
  CLI::Option* ep_cpus_opt = nullptr;
  CLI::Option* ep_gpus_opt = nullptr;
  CLI::Option* ep_memory_opt = nullptr;
};

int RunSubmit(CLI::App* sub, SubmitFlags& f, const Passthrough& passthrough) {
  SubmitOptions o = f.options;
  o.entrypoint = sub->remaining();
  if (passthrough) {
    if (!o.entrypoint.empty()) o.entrypoint.push_back("--");
    o.entrypoint.insert(o.entrypoint.end(), passthrough->begin(), passthrough->end());
  }
  if (f.workers_opt->count() > 0) o.workers = f.workers;
  if (f.cpus_opt->count() > 0) o.cpus_per_worker = f.cpus_per_worker;
  if (f.gpus_opt->count() > 0) o.gpus_per_worker = f.gpus_per_worker;
  if (f.max_failures_opt->count() > 0) o.max_failures = f.max_failures;
  if (f.ep_cpus_opt->count() > 0) o.entrypoint_num_cpus = f.entrypoint_num_cpus;
  if (f.ep_gpus_opt->count() > 0) o.entrypoint_num_gpus = f.entrypoint_num_gpus;
  if (f.ep_memory_opt->count() > 0) o.entrypoint_memory = f.entrypoint_memory;

  Result<Json> request = BuildSubmitRequest(o);
  if (!request.ok()) {
    std::fprintf(stderr, "cohort job submit: %s\n", request.status().message().c_str());
    return kExitUsage;
  }
  JobClient client = MakeClient(f.conn);
  if (std::string local = LocalWorkingDir(*request); !local.empty()) {
    Result<std::string> uri = client.UploadPackage(local, [](const std::string& line) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    });
    if (!uri.ok()) return Fail("submit", uri.status());
    (*request)["runtime_env"]["working_dir"] = *uri;
  }
  Result<std::string> id = client.Submit(*request);
  if (!id.ok()) return Fail("submit", id.status());
  std::printf("Job '%s' submitted successfully\n", id->c_str());
  const std::string addr = f.conn.AddressSuffix();
  if (f.no_wait) {
    std::printf(
        "Next steps:\n"
        "  cohort job logs %s --follow%s   follow its log\n"
        "  cohort job status %s%s          its status\n"
        "  cohort job stop %s%s            stop it\n",
        id->c_str(), addr.c_str(), id->c_str(), addr.c_str(), id->c_str(), addr.c_str());
    return 0;
  }
  std::printf("Following the job until it exits (Ctrl-C stops following; --no-wait skips it):\n");
  std::fflush(stdout);

  SigintGuard sigint;
  ProgressPrinter printer = ProgressPrinter::ForStdout(/*plain_progress=*/true);
  FollowOptions follow;
  follow.interrupted = Interrupted;
  Result<FollowResult> result = FollowJob(client, *id, printer, follow);
  if (!result.ok()) return Fail("submit", result.status());
  if (result->interrupted) {
    PrintInterruptHint(*id, f.conn);
    return kExitInterrupted;
  }
  std::printf("%s\n", FinalStatusLine(*id, result->status, result->message).c_str());
  if (result->status == "SUCCEEDED") {
    // Where its results are, in one line.
    Result<Json> d = client.Get(*id);
    size_t files = 0, nodes = 0;
    if (d.ok())
      if (auto n = d->find("node_results"); n != d->end() && n->is_array())
        for (const Json& entry : *n)
          if (const double count = NumberField(entry, "file_count"); count > 0) {
            files += static_cast<size_t>(count);
            ++nodes;
          }
    if (nodes > 0)
      std::printf("results: %zu file(s) on %zu node(s) (list them: cohort job results %s%s)\n", files, nodes,
                  id->c_str(), addr.c_str());
  }
  std::fflush(stdout);
  return result->status == "SUCCEEDED" ? 0 : 1;
}

CLI::App* AddSubmit(CLI::App* job, std::shared_ptr<SubmitFlags> f) {
  CLI::App* sub = job->add_subcommand("submit", "Submit a job and follow it until it ends");
  AddConnFlags(sub, &f->conn);
  SubmitOptions& o = f->options;
  sub->add_option("--working-dir", o.working_dir,
                  "Local directory (or .zip) to upload and run the job in; or a remote URI");
  sub->add_option("--submission-id", o.submission_id, "The job's ID (default: chosen by the head)");
  sub->add_option("--runtime-env-json", o.runtime_env_json,
                  "Runtime environment as a JSON object (working_dir, env_vars, ...)");
  sub->add_option("--metadata-json", o.metadata_json, "Metadata: a JSON object of strings");
  sub->add_option("--env", o.env, "Environment variable KEY=VALUE for the job (repeatable)");
  sub->add_option("--grad-compression", o.grad_compression,
                  "Gradients on the wire between hosts: none, bf16, bf16-ef, fp16 or fp16-ef (sets COHORT_GRAD_COMPRESSION)");
  f->workers_opt = sub->add_option("--workers", f->workers,
                                   "Run the entrypoint as N gang-placed workers (torchrun env)");
  f->cpus_opt = sub->add_option("--cpus-per-worker", f->cpus_per_worker,
                                "CPUs per worker (default 1; needs --workers)");
  f->gpus_opt = sub->add_option("--gpus-per-worker", f->gpus_per_worker,
                                "GPUs per worker (default 0; needs --workers)");
  sub->add_option("--placement-strategy", o.placement_strategy,
                  "PACK (default) or SPREAD workers over nodes (needs --workers)");
  f->max_failures_opt = sub->add_option(
      "--max-failures", f->max_failures,
      "Restart the whole group up to K times after a failure (-1: unlimited; default 0)");
  sub->add_option("--results-uri", o.results_uri,
                  "Upload the job's results directory here when it succeeds (file://, gs://, s3://)");
  f->ep_cpus_opt = sub->add_option("--entrypoint-num-cpus", f->entrypoint_num_cpus,
                                   "CPUs for a single-process entrypoint (Ray's flag)");
  f->ep_gpus_opt = sub->add_option("--entrypoint-num-gpus", f->entrypoint_num_gpus,
                                   "GPUs for a single-process entrypoint (Ray's flag)");
  f->ep_memory_opt = sub->add_option("--entrypoint-memory", f->entrypoint_memory,
                                     "Memory in bytes for a single-process entrypoint");
  sub->add_flag("--no-wait", f->no_wait, "Return once the job is submitted");
  sub->prefix_command();  // the first positional starts the entrypoint
  sub->footer(
      "Usage: cohort job submit [options] -- COMMAND ARGS...\n"
      "The command words are joined with shell quoting. Without --no-wait the job's log\n"
      "and a progress line (epochs/steps it reports) follow until it ends; the exit code\n"
      "is 0 only if it succeeded. Ctrl-C stops following but not the job.");
  return sub;
}

// --- logs ------------------------------------------------------------------------

struct IdFlags {
  ConnFlags conn;
  std::string id;
  bool follow = false;
  bool json = false;
  bool no_wait = false;
  int64_t since = 0;
};

CLI::App* AddIdCommand(CLI::App* job, const char* name, const char* help, IdFlags* f) {
  CLI::App* sub = job->add_subcommand(name, help);
  AddConnFlags(sub, &f->conn);
  sub->add_option("id", f->id, "The job's submission ID")->required();
  return sub;
}

int RunLogs(const IdFlags& f) {
  JobClient client = MakeClient(f.conn);
  if (!f.follow) {
    Result<std::string> logs = client.Logs(f.id);
    if (!logs.ok()) return Fail("logs", logs.status());
    std::fwrite(logs->data(), 1, logs->size(), stdout);
    std::fflush(stdout);
    return 0;
  }
  SigintGuard sigint;
  ProgressPrinter printer = ProgressPrinter::ForStdout(/*plain_progress=*/false);
  FollowOptions follow;
  follow.interrupted = Interrupted;
  Result<FollowResult> result = FollowJob(client, f.id, printer, follow);
  if (!result.ok()) return Fail("logs", result.status());
  if (result->interrupted) {
    std::printf("\n");
    return kExitInterrupted;
  }
  return 0;
}

int RunStatus(const IdFlags& f) {
  JobClient client = MakeClient(f.conn);
  Result<Json> d = client.Get(f.id);
  if (!d.ok()) return Fail("status", d.status());
  if (f.json) {
    std::printf("%s\n", d->dump(2).c_str());
    return 0;
  }
  std::string out;
  out += "Job " + f.id + ": " + JsonText(*d, "status") + "\n";
  auto line = [&out](const std::string& label, const std::string& value) {
    if (!value.empty()) out += "  " + label + ": " + value + "\n";
  };
  line("message", JsonText(*d, "message"));
  line("pending", JsonText(*d, "pending_reason"));
  line("entrypoint", JsonText(*d, "entrypoint"));
  line("submitted", FormatTimeMs(static_cast<int64_t>(NumberField(*d, "start_time"))));
  if (NumberField(*d, "end_time") > 0) {
    line("ended", FormatTimeMs(static_cast<int64_t>(NumberField(*d, "end_time"))));
  }
  if (auto it = d->find("scaling"); it != d->end() && it->is_object()) {
    line("workers", WorkersText(*it));
  }
  if (auto it = d->find("attempt"); it != d->end() && it->is_number()) {
    std::string attempt = FormatAmount(it->get<double>());
    if (auto fl = d->find("failure"); fl != d->end() && fl->is_object()) {
      const double k = NumberField(*fl, "max_failures", 0);
      attempt += " (max failures " + (k < 0 ? std::string("unlimited") : FormatAmount(k)) + ")";
    }
    line("attempt", attempt);
  }
  line("results", JsonText(*d, "results_uri"));
  line("driver exit code", JsonText(*d, "driver_exit_code"));
  if (auto it = d->find("workers"); it != d->end() && it->is_array() && !it->empty()) {
    std::vector<std::vector<std::string>> rows = {{"RANK", "NODE", "STATUS", "PID", "EXIT"}};
    for (const Json& w : *it) {
      std::string exit_code = JsonText(w, "exit_code");
      rows.push_back({JsonText(w, "rank"), JsonText(w, "node_id"), JsonText(w, "status"),
                      JsonText(w, "pid"), exit_code.empty() ? "-" : exit_code});
    }
    std::string table = FormatTable(rows);
    out += "\n";
    size_t start = 0;
    while (start < table.size()) {
      size_t nl = table.find('\n', start);
      out += "  " + table.substr(start, nl - start + 1);
      start = nl + 1;
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

int RunStop(const IdFlags& f) {
  JobClient client = MakeClient(f.conn);
  Result<bool> stopped = client.Stop(f.id);
  if (!stopped.ok()) return Fail("stop", stopped.status());
  if (!*stopped) {
    Result<Json> d = client.Get(f.id);
    std::string status = d.ok() ? JsonText(*d, "status") : "";
    std::printf("Job %s was not running%s\n", f.id.c_str(),
                status.empty() ? "" : (" (status " + status + ")").c_str());
    return 0;
  }
  std::printf("Stopping job %s\n", f.id.c_str());
  std::fflush(stdout);
  if (f.no_wait) return 0;
  SigintGuard sigint;
  while (true) {
    Result<Json> d = client.Get(f.id);
    if (!d.ok()) return Fail("stop", d.status());
    const std::string status = JsonText(*d, "status");
    if (IsTerminalStatus(status)) {
      std::printf("%s\n", FinalStatusLine(f.id, status, JsonText(*d, "message")).c_str());
      return 0;
    }
    for (int i = 0; i < 20 && !Interrupted(); ++i) {
      struct timespec ts {0, 50 * 1000 * 1000};
      nanosleep(&ts, nullptr);
    }
    if (Interrupted()) return kExitInterrupted;
  }
}

int RunDelete(const IdFlags& f) {
  JobClient client = MakeClient(f.conn);
  Status s = client.Delete(f.id);
  if (!s.ok()) return Fail("delete", s);
  std::printf("Job %s deleted\n", f.id.c_str());
  return 0;
}

int RunMetrics(const IdFlags& f) {
  JobClient client = MakeClient(f.conn);
  Result<MetricsPage> page = client.Metrics(f.id, f.since);
  if (!page.ok()) return Fail("metrics", page.status());
  for (const Json& m : page->metrics) std::printf("%s\n", m.dump().c_str());
  return 0;
}

int RunResults(const IdFlags& f) {
  JobClient client = MakeClient(f.conn);
  Result<Json> d = client.Get(f.id);
  if (!d.ok()) return Fail("results", d.status());
  if (f.json) {
    Json out = Json::object();
    for (const char* key : {"submission_id", "status", "results_uri", "results_dir", "results", "node_results"})
      if (auto it = d->find(key); it != d->end()) out[key] = *it;
    std::printf("%s\n", out.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
    return 0;
  }
  const std::string text = FormatJobResults(f.id, *d);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

int RunList(const ConnFlags& conn, bool json) {
  JobClient client = MakeClient(conn);
  Result<Json> jobs = client.List();
  if (!jobs.ok()) return Fail("list", jobs.status());
  if (json) {
    std::printf("%s\n", jobs->dump(2).c_str());
    return 0;
  }
  std::vector<const Json*> sorted;
  for (const Json& j : *jobs) sorted.push_back(&j);
  std::stable_sort(sorted.begin(), sorted.end(), [](const Json* a, const Json* b) {
    return NumberField(*a, "start_time") < NumberField(*b, "start_time");
  });
  std::vector<std::vector<std::string>> rows = {
      {"SUBMISSION ID", "STATUS", "WORKERS", "SUBMITTED", "ENTRYPOINT"}};
  for (const Json* j : sorted) {
    std::string id = JsonText(*j, "submission_id");
    if (id.empty()) id = JsonText(*j, "job_id");
    std::string entrypoint = JsonText(*j, "entrypoint");
    if (entrypoint.size() > 60) entrypoint = entrypoint.substr(0, 57) + "...";
    auto scaling = j->find("scaling");
    rows.push_back({id, JsonText(*j, "status"),
                    scaling != j->end() ? WorkersText(*scaling) : "1",
                    FormatTimeMs(static_cast<int64_t>(NumberField(*j, "start_time"))),
                    entrypoint});
  }
  if (rows.size() == 1) {
    std::printf("No jobs.\n");
    return 0;
  }
  std::string table = FormatTable(rows);
  std::fwrite(table.data(), 1, table.size(), stdout);
  return 0;
}

}  // namespace

Command AddJobCommand(CLI::App& root) {
  CLI::App* job = root.add_subcommand("job", "Submit, follow and manage jobs on a cohort cluster");
  job->require_subcommand(1);

  auto submit_flags = std::make_shared<SubmitFlags>();
  CLI::App* submit = AddSubmit(job, submit_flags);

  auto logs_flags = std::make_shared<IdFlags>();
  CLI::App* logs = AddIdCommand(job, "logs", "Print a job's log", logs_flags.get());
  logs->add_flag("-f,--follow", logs_flags->follow, "Follow the log until the job ends");

  auto status_flags = std::make_shared<IdFlags>();
  CLI::App* status = AddIdCommand(job, "status", "Show a job's status", status_flags.get());
  status->add_flag("--json", status_flags->json, "Print the job details as JSON");

  auto stop_flags = std::make_shared<IdFlags>();
  CLI::App* stop = AddIdCommand(job, "stop", "Stop a job and wait until it has stopped",
                                stop_flags.get());
  stop->add_flag("--no-wait", stop_flags->no_wait, "Return once the stop is requested");

  auto delete_flags = std::make_shared<IdFlags>();
  CLI::App* del = AddIdCommand(job, "delete", "Delete a finished job's record and log",
                               delete_flags.get());

  auto metrics_flags = std::make_shared<IdFlags>();
  CLI::App* metrics = AddIdCommand(job, "metrics", "Print a job's metric reports (JSON lines)",
                                   metrics_flags.get());
  metrics->add_option("--since", metrics_flags->since, "Skip the first N reports");

  auto results_flags = std::make_shared<IdFlags>();
  CLI::App* results = AddIdCommand(
      job, "results",
      "List a job's results: the objects in its results URI, or what each node holds when it has none",
      results_flags.get());
  results->add_flag("--json", results_flags->json, "Print them as JSON");

  auto list_conn = std::make_shared<ConnFlags>();
  auto list_json = std::make_shared<bool>(false);
  CLI::App* list = job->add_subcommand("list", "List the cluster's jobs");
  AddConnFlags(list, list_conn.get());
  list->add_flag("--json", *list_json, "Print the job details as JSON");

  return Command{
      job, [=](const Passthrough& passthrough) -> int {
        // The token (flag, file or environment) of whichever subcommand was parsed.
        const std::pair<CLI::App*, ConnFlags*> conns[] = {
            {submit, &submit_flags->conn}, {logs, &logs_flags->conn},     {status, &status_flags->conn},
            {stop, &stop_flags->conn},     {del, &delete_flags->conn},    {metrics, &metrics_flags->conn},
            {results, &results_flags->conn}, {list, list_conn.get()}};
        for (const auto& [app, conn] : conns) {
          if (!app->parsed()) continue;
          auto token = ResolveTokenFlags(conn->token, conn->token_file);
          if (!token.ok()) return Fail(app->get_name().c_str(), token.status());
          conn->token = *token;
        }
        if (submit->parsed()) return RunSubmit(submit, *submit_flags, passthrough);
        if (logs->parsed()) {
          return RejectPassthrough("logs", passthrough) ? kExitUsage : RunLogs(*logs_flags);
        }
        if (status->parsed()) {
          return RejectPassthrough("status", passthrough) ? kExitUsage : RunStatus(*status_flags);
        }
        if (stop->parsed()) {
          return RejectPassthrough("stop", passthrough) ? kExitUsage : RunStop(*stop_flags);
        }
        if (del->parsed()) {
          return RejectPassthrough("delete", passthrough) ? kExitUsage : RunDelete(*delete_flags);
        }
        if (metrics->parsed()) {
          return RejectPassthrough("metrics", passthrough) ? kExitUsage
                                                           : RunMetrics(*metrics_flags);
        }
        if (results->parsed()) {
          return RejectPassthrough("results", passthrough) ? kExitUsage : RunResults(*results_flags);
        }
        if (list->parsed()) {
          return RejectPassthrough("list", passthrough) ? kExitUsage
                                                        : RunList(*list_conn, *list_json);
        }
        return kExitUsage;
      }};
}

}  // namespace cohort::cli
