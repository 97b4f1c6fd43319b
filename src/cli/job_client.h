// JobClient: the CLI's client of the head's HTTP API (docs/api.md), plus the
// pieces of `cohort job ...` worth testing without a terminal: building the
// submit body, quoting the entrypoint, resolving address and token, and
// following a job (logs + progress) until it ends.
//
// Every JobClient call is one synchronous HTTP request
// (cohort/net/http_client.h); FollowJob also holds the job's log-tail WebSocket
// (cohort/net/ws_client.h) open on a thread of its own. Errors are Statuses
// a user can act on:
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
#include <string_view>
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
  // GET /api/jobs/{id}/logs → the whole log (the head caps it at its last
  // 64 MiB). FollowJob streams instead (LogTailUrl).
  Result<std::string> Logs(const std::string& id);
  // "ws://host:port/api/jobs/{id}/logs/tail" for this connection's address;
  // InvalidArgument for an https:// address (no wss:// client).
  Result<std::string> LogTailUrl(const std::string& id) const;
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
  std::string grad_compression;  // "" or none / bf16 / bf16-ef / fp16 / fp16-ef: COHORT_GRAD_COMPRESSION
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

// The new bytes of a log stream that starts over at byte 0 on every
// connection (the head's logs/tail WebSocket relays the log from its
// beginning each time it is opened), given how many bytes were printed
// already. Next() passes on only what lies past printed(): as long as every
// connection replays the same append-only log (the head's LogStore), each
// byte is printed exactly once, with no gap, across any number of
// reconnections. Thread-compatible.
class LogOffsetFilter {
 public:
  explicit LogOffsetFilter(uint64_t printed = 0) : printed_(printed) {}
  // A new connection: the stream starts again at byte 0.
  void Restart() { position_ = 0; }
  // `chunk` is the stream's next bytes. Returns the part of it past
  // printed() (a suffix of chunk, often empty or all of it) and counts that
  // part as printed.
  std::string_view Next(std::string_view chunk);
  uint64_t printed() const { return printed_; }
  uint64_t position() const { return position_; }  // bytes seen on this connection

 private:
  uint64_t printed_ = 0;
  uint64_t position_ = 0;
};

struct FollowOptions {
  // How often the job's details (GET /api/jobs/{id}) and metrics are polled;
  // the log itself is streamed and printed as it arrives.
  std::chrono::milliseconds poll_interval{500};
  bool show_progress = true;
  // Checked at least every 50 ms; true ends following early (Ctrl-C).
  std::function<bool()> interrupted;
  // Give up after the head has been unreachable for this long: the status
  // polls failing, or the log stream broken and not reopened.
  std::chrono::milliseconds unreachable_timeout{60000};
  // Bytes at the start of the log not to print (already printed, e.g. by an
  // earlier FollowJob of the same job: pass its FollowResult::log_offset).
  uint64_t log_offset = 0;
  // Wait before reopening a broken log stream; doubles after each failed
  // try, up to 2 s, and starts over once new bytes arrive.
  std::chrono::milliseconds reconnect_delay{200};
  // Keep-alive of the log stream (WebSocketClient::SetIdleTimeout): a
  // connection silent for this long, pong included, counts as broken. After
  // the job has ended, a log stream that stays silent this long (while
  // connected) ends following with a note instead of waiting for ever.
  std::chrono::milliseconds stream_idle_timeout{30000};
};

struct FollowResult {
  bool interrupted = false;
  std::string status;   // the final status ("" when interrupted)
  std::string message;  // the job's message
  Json details;         // the last job details seen
  uint64_t log_offset = 0;  // bytes of the log printed, options.log_offset included
};

// Follows job `id` until it is terminal and its log drained, or until
// interrupted:
//  - The log comes from the WebSocket LogTailUrl(id) (token in the
//    Authorization header), read on a thread of its own: each TEXT frame is
//    printed (printer.Log) as it arrives, so the log is downloaded once, at
//    any size. The head closes the stream with code 1000 once the job is
//    terminal and the log drained; that is the log's end.
//  - Any other end of the stream (a connection error, a close with another
//    code, e.g. 1001 when the head restarts) reopens it after
//    reconnect_delay (with backoff). The reopened stream starts over at byte
//    0, so the bytes already printed are skipped by offset (LogOffsetFilter)
//    and printing resumes at the first new byte. One note says the stream
//    was interrupted. If it cannot be reopened for unreachable_timeout:
//    Unavailable "lost the log stream of job ... from the cohort head at ...".
//  - The job's details and metrics (the progress line) are polled every
//    poll_interval, separately. Status changes (PENDING reasons, restarts)
//    are noted through printer.Note. A head unreachable for longer than
//    unreachable_timeout ends following with Unavailable; a refused token,
//    an unknown job, or a refused WebSocket upgrade end it at once.
// Interrupting stops the stream within 50 ms, or up to 5 s while it is
// connecting to a head that does not answer.
Result<FollowResult> FollowJob(JobClient& client, const std::string& id, ProgressPrinter& printer,
                               const FollowOptions& options);

// "Job raysubmit_x succeeded" / "Job raysubmit_x failed: <message>" /
// "Job raysubmit_x was stopped" (and the message, if any).
std::string FinalStatusLine(const std::string& id, const std::string& status,
                            const std::string& message);

// What `cohort job results ID` prints for a job's details (GET /api/jobs/ID):
// the objects in its results_uri with sizes and CRC32C once verified; else
// what each node listed in its local results directory (and that a job on
// several nodes needs a results_uri to gather them); else why there is
// nothing yet. Text from the job (file names) is printed as JSON strings
// when it holds control characters.
std::string FormatJobResults(const std::string& id, const Json& details);

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
