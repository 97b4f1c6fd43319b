// StateStore: the head's durable state in one SQLite database (WAL mode).
//
// What lives here: every job record the head has accepted (as the JSON the job
// manager produces), each job's status history, the nodes the head has seen,
// the metrics reports workers sent, and a small key/value table for things like
// the cluster session name or the token hash. Log text does NOT live here; it
// is in files under <state-dir>/logs (see log_store.h).
//
// Who calls it: the head's managers (job manager, node registry, REST handlers).
// Thread affinity: meant to be used from the head's event loop, but every method
// takes an internal mutex, so calls from other threads (gRPC, HTTP) are safe.
// Each StateStore owns one SQLite connection; two StateStores (or two processes)
// may open the same file: WAL lets readers run while one writer commits, and a
// second writer waits up to busy_timeout_ms before failing with Unavailable.
//
// Durability (decided here, relied on by the head's restart story):
//   * journal_mode=WAL, synchronous=NORMAL by default. Every public method that
//     writes commits its own transaction before it returns OK. In WAL mode a
//     committed transaction has been write(2)-n into the -wal file, so it
//     survives kill -9 of the head process (the OS still holds the pages); on
//     the next Open SQLite replays the WAL. What NORMAL gives up: after an OS
//     crash or power loss, the last transactions before the crash may be lost
//     (the database stays consistent, it just rolls back to an earlier commit).
//     FULL would fsync the WAL on every commit (a job status change costs one
//     fsync, ~1-10 ms on disks); StateStoreOptions::synchronous_full turns it
//     on for deployments that must survive power loss of the head machine.
//   * Batches (AppendMetrics, PutJobAndEvent, DeleteJob) are one transaction:
//     after a crash either all of it is there or none of it.
//
// Errors: every error names the database path, the statement that failed and
// SQLite's own message, e.g.
//   "state db /var/cohort/state.db: INSERT INTO jobs ...: database is locked".
// SQLITE_BUSY/LOCKED map to Unavailable, disk/I/O/corruption to IoError,
// anything else to Internal. JSON arguments must parse (InvalidArgument).
//
// Schema (version 1; see kMigrations in state_store.cc for the exact DDL):
//   schema_version(version)          one row; the migration hook reads it
//   jobs(submission_id PK, status, start_time_ms, end_time_ms NULL,
//        record_json, created_seq UNIQUE)   created_seq = list order
//   job_events(seq PK AUTOINCREMENT, submission_id, time_ms, status, message)
//   nodes(node_id PK, address, first_seen_ms, last_seen_ms, state, info_json)
//   metrics(seq PK AUTOINCREMENT, submission_id, rank, time_s, json)
//        index (submission_id, seq)
//   kv(key PK, value BLOB)
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cohort/common/status.h"

struct sqlite3;       // keeps <sqlite3.h> out of this header
struct sqlite3_stmt;

namespace cohort::head {

struct StateStoreOptions {
  // FULL fsyncs the WAL at every commit: survives power loss, costs an fsync per
  // write. NORMAL (default) survives process death (kill -9), not power loss.
  bool synchronous_full = false;
  // How long a write waits for another connection's write lock before the call
  // fails with Unavailable.
  int busy_timeout_ms = 5000;
};

// One entry of a job's status history, oldest first.
struct JobEvent {
  int64_t seq = 0;  // global, increasing; orders events across jobs too
  int64_t time_ms = 0;  // Unix epoch milliseconds
  std::string status;   // e.g. "PENDING", "RUNNING", "SUCCEEDED"
  std::string message;
};

struct NodeRecord {
  std::string node_id;
  std::string address;
  std::string state;         // e.g. "ALIVE", "DEAD"
  int64_t first_seen_ms = 0;  // Unix epoch milliseconds
  int64_t last_seen_ms = 0;
  std::string info_json;      // caller's JSON (resources, labels, ...)
};

// A metrics report as a worker sent it; `json` holds the user's fields
// (e.g. {"epoch": 1, "val_loss": 0.53}) and must be a JSON value.
struct MetricsReport {
  int32_t rank = 0;
  double time_s = 0;  // Unix epoch seconds, as reported
  std::string json;
};

struct MetricsRow {
  int64_t seq = 0;  // the cursor: global, increasing, never reused
  int32_t rank = 0;
  double time_s = 0;
  std::string json;
};

struct MetricsPage {
  std::vector<MetricsRow> rows;  // seq ascending (arrival order)
  // Pass as since_seq to get only newer rows: the last row's seq, or the
  // since_seq given when no rows came back.
  int64_t next_seq = 0;
};

class StateStore {
 public:
  // Opens (creating if needed, with mode 0600 and missing parent directories)
  // the database at `path`, switches it to WAL, and brings the schema up to the
  // current version. FailedPrecondition if the file was written by a newer
  // schema version or the filesystem cannot do WAL (e.g. some network mounts).
  static Result<std::unique_ptr<StateStore>> Open(const std::string& path,
                                                  const StateStoreOptions& options = {});
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  const std::string& path() const { return path_; }
  // The schema version this binary writes (and the file now has).
  static int CurrentSchemaVersion();

  // --- jobs -------------------------------------------------------------------
  // Inserts or replaces the job `submission_id`. The first insert gives it the
  // next created_seq (list order); updates keep it. end_time_ms nullopt = NULL.
  Status PutJob(const std::string& submission_id, const std::string& status, int64_t start_time_ms,
                std::optional<int64_t> end_time_ms, const std::string& record_json);
  // PutJob plus AppendJobEvent(submission_id, event_time_ms, status, message) in
  // one transaction, so a status change and its history entry survive together.
  Status PutJobAndEvent(const std::string& submission_id, const std::string& status,
                        int64_t start_time_ms, std::optional<int64_t> end_time_ms,
                        const std::string& record_json, int64_t event_time_ms,
                        const std::string& message);
  // The record_json last stored, or nullopt if there is no such job.
  Result<std::optional<std::string>> GetJob(const std::string& submission_id);
  // (submission_id, record_json) for every job, in submission order.
  Result<std::vector<std::pair<std::string, std::string>>> ListJobs();
  // Deletes the job row, its status history and its metrics (one transaction).
  // Log files are not touched (Ray keeps logs). NotFound if no such job.
  Status DeleteJob(const std::string& submission_id);

  // --- status history --------------------------------------------------------
  Status AppendJobEvent(const std::string& submission_id, int64_t time_ms, const std::string& status,
                        const std::string& message);
  // Oldest first; empty for an unknown job.
  Result<std::vector<JobEvent>> ListJobEvents(const std::string& submission_id);

  // --- nodes -----------------------------------------------------------------
  // Inserts or updates. On update first_seen_ms keeps the stored (first) value.
  Status PutNode(const std::string& node_id, const std::string& address, const std::string& state,
                 int64_t first_seen_ms, int64_t last_seen_ms, const std::string& info_json);
  // Ordered by first_seen_ms, then node_id.
  Result<std::vector<NodeRecord>> ListNodes();
  Status DeleteNode(const std::string& node_id);  // NotFound if absent

  // --- metrics ---------------------------------------------------------------
  // Appends all reports for `submission_id` in one transaction, in order.
  Status AppendMetrics(const std::string& submission_id, const std::vector<MetricsReport>& reports);
  // Rows of `submission_id` with seq > since_seq, oldest first, at most `limit`
  // rows (0 = no limit).
  Result<MetricsPage> ListMetrics(const std::string& submission_id, int64_t since_seq, size_t limit);

  // --- small key/value things (session name, token hash, ...) ------------------
  Status KvPut(const std::string& key, std::string_view value);
  Result<std::optional<std::string>> KvGet(const std::string& key);
  Status KvDelete(const std::string& key);  // OK if absent

  // PRAGMA integrity_check; IoError with SQLite's report if it is not "ok".
  Status CheckIntegrity();

 private:
  class Stmt;  // RAII use of a cached prepared statement (state_store.cc)

  StateStore(std::string path, sqlite3* db);

  // All REQUIRE mu_ held.
  Result<sqlite3_stmt*> Prepare(std::string_view sql);
  Status Exec(std::string_view sql);  // one-off statements (DDL, pragmas)
  Status Error(std::string_view what, int rc) const;
  // Runs body() inside BEGIN IMMEDIATE ... COMMIT; rolls back if either fails.
  Status InTransaction(const std::function<Status()>& body);
  Status Begin();
  Status Commit();
  void Rollback();
  Status Migrate();
  Status PutJobLocked(const std::string& submission_id, const std::string& status,
                      int64_t start_time_ms, std::optional<int64_t> end_time_ms,
                      const std::string& record_json);
  Status AppendJobEventLocked(const std::string& submission_id, int64_t time_ms,
                              const std::string& status, const std::string& message);

  const std::string path_;
  std::mutex mu_;
  sqlite3* db_;  // GUARDED_BY(mu_); owned, closed by ~StateStore
  std::unordered_map<std::string, sqlite3_stmt*> stmts_;  // GUARDED_BY(mu_); SQL -> prepared
};

}  // namespace cohort::head
