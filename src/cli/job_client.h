// JobClient: the CLI's client of the head's HTTP API (docs/api.md), plus the
// pieces of `cohort job ...` worth testing without a terminal: building the
// submit body, quoting the entrypoint, resolving address and token, and
// following a job (logs + progress) until it ends.
//
// Every call is one synchronous HTTP request (libcurl, storage/http). Errors
// are Statuses a user can act on:
//  - the head cannot be reached: Unavailable "cannot reach the cohort head at
//    URL: is it running? (cohort start --head)";
//  - 401/403: FailedPrecondition "the head refused the token: ...";
//  - any other non-200: the server's text body and " (HTTP <code>)", with
//    404 NotFound, 400/409/413 InvalidArgument/AlreadyExists, 5xx Unavailable.
// Thread-compatible (one client per thread; no shared state).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/progress.h"
#include "cohort/common/status.h"

namespace cohort::cli {

using Json = nlohmann::ordered_json;

inline constexpr const char* kDefaultAddress = "http://127.0.0.1:8265";

// Where the head is and how to authenticate, from flags and environment.
struct Connection {
  std::string address;    // "http://host:port", no trailing '/'
  std::string token;      // "" sends no Authorization header
  std::string state_dir;  // for the 401 hint
};

// address: flag, else $COHORT_ADDRESS, else kDefaultAddress ("host:port"
// gets "http://"). state dir: flag, else $COHORT_STATE_DIR, else ~/.cohort.
// token: flag, else $COHORT_TOKEN, else <state-dir>/token when readable.
Connection ResolveConnection(const std::string& address_flag, const std::string& token_flag,
                             const std::string& state_dir_flag);

struct MetricsPage {
  std::vector<Json> metrics;  // reports in arrival order
  int64_t next = 0;           // pass as `since` for newer ones
};

class JobClient {
 public:
  explicit JobClient(Connection connection) : conn_(std::move(connection)) {}

  // POST /api/jobs/ → the submission ID.
  Result<std::string> Submit(const Json& request);
  // GET /api/jobs/{id} → the job details object.
  Result<Json> Get(const std::string& id);
  // GET /api/jobs/ → array of job details.
  Result<Json> List();
  // POST /api/jobs/{id}/stop → whether the job was stopped by this call.
  Result<bool> Stop(const std::string& id);
  // DELETE /api/jobs/{id}.
  Status Delete(const std::string& id);
  // GET /api/jobs/{id}/logs → the whole log.
  Result<std::string> Logs(const std::string& id);
  // GET /api/jobs/{id}/metrics?since=N.
  Result<MetricsPage> Metrics(const std::string& id, int64_t since);
  // GET /api/cluster/status.
  Result<Json> ClusterStatus();
  // GET /api/version.
  Result<Json> Version();

  // Packages a local directory (cli/package.h), or takes a local .zip file
  // as is, and uploads it unless the head has it already (GET then PUT
  // /api/packages/gcs/<name>). Returns "gcs://<name>". `progress`, when
  // set, gets one human-readable line about what was done.
  Result<std::string> UploadPackage(const std::string& path,
                                    const std::function<void(const std::string&)>& progress = {});

  const Connection& connection() const { return conn_; }

 private:
  struct Reply {
    long status = 0;
    std::string body;
  };
  Result<Reply> Call(const std::string& method, const std::string& path,
                     const std::string& body = "", const std::string& content_type = "");
  // Call + require 200 + parse the body as JSON.
  Result<Json> CallJson(const std::string& method, const std::string& path,
                        const std::string& body = "");
  Status HttpError(const std::string& method, const std::string& path, const Reply& reply) const;

  Connection conn_;
};

// The entrypoint words re-joined into one shell string, POSIX-quoted the way
// Python's shlex.join does (safe words bare, others in single quotes).
std::string ShellJoin(const std::vector<std::string>& words);

// `cohort job submit`'s flags, before the working directory is uploaded.
struct SubmitOptions {
  std::vector<std::string> entrypoint;  // words
  std::string submission_id;
  std::string runtime_env_json;  // a JSON object, "" for none
  std::string working_dir;       // local dir/zip or a remote URI; "" keeps runtime_env's
  std::string metadata_json;     // a JSON object of strings, "" for none
  std::vector<std::string> env;  // KEY=VALUE, into runtime_env.env_vars
  std::optional<int> workers;
  std::optional<double> cpus_per_worker;
  std::optional<double> gpus_per_worker;
  std::string placement_strategy;  // "" or PACK / SPREAD
  std::optional<int> max_failures;
  std::string results_uri;
  std::optional<double> entrypoint_num_cpus;
  std::optional<double> entrypoint_num_gpus;
  std::optional<int64_t> entrypoint_memory;
};

// The POST /api/jobs/ body for `options` (validated: InvalidArgument with a
// message for the user). runtime_env.working_dir is left as given; the
// caller replaces a local path by UploadPackage's URI (see
// LocalWorkingDir).
Result<Json> BuildSubmitRequest(const SubmitOptions& options);

// The runtime env's working_dir when it names a local path (no "://"), else "".
std::string LocalWorkingDir(const Json& request);

// Terminal statuses: STOPPED, SUCCEEDED, FAILED.
bool IsTerminalStatus(const std::string& status);

struct FollowOptions {
  std::chrono::milliseconds poll_interval{500};
  bool show_progress = true;
  // Polled between requests; true ends following early (Ctrl-C).
  std::function<bool()> interrupted;
  // Give up after the head has been unreachable for this long.
  std::chrono::milliseconds unreachable_timeout{60000};
};

struct FollowResult {
  bool interrupted = false;
  std::string status;   // the final status ("" when interrupted)
  std::string message;  // the job's message
  Json details;         // the last job details seen
};

// Polls the job's details, log (printing only the new suffix) and metrics
// (feeding the progress line) every poll_interval until the job is terminal
// and its log drained, or until interrupted. Notes status changes (PENDING
// reasons, restarts) through printer.Note. Errors other than the head being
// briefly unreachable end it.
Result<FollowResult> FollowJob(JobClient& client, const std::string& id, ProgressPrinter& printer,
                               const FollowOptions& options);

// "Job raysubmit_x succeeded" / "Job raysubmit_x failed: <message>" /
// "Job raysubmit_x was stopped" (and the message, if any).
std::string FinalStatusLine(const std::string& id, const std::string& status,
                            const std::string& message);

// --- text helpers shared by the job and status commands ---------------------

// Rows as left-aligned columns two spaces apart (the first row is the header).
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);
// Unix milliseconds as local "YYYY-MM-DD HH:MM:SS"; "-" for 0 or missing.
std::string FormatTimeMs(int64_t unix_ms);
// A resource amount: "16", "0.5".
std::string FormatAmount(double v);
// Bytes as "512 B", "1.5 KiB", "62.7 GiB".
std::string FormatBytes(double bytes);
// A number field of a JSON object, or `fallback`.
double NumberField(const Json& j, const char* key, double fallback = 0);

}  // namespace cohort::cli
