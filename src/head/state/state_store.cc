// StateStore: SQLite (WAL) persistence of the head's state. See state_store.h
// for the durability contract and the schema in words.
//
// Implementation notes:
//   * One connection, opened SQLITE_OPEN_NOMUTEX; mu_ serializes every use of it
//     (including the cached statements, which are not re-entrant).
//   * Every write runs inside BEGIN IMMEDIATE ... COMMIT. IMMEDIATE takes the
//     write lock up front, so the busy handler (busy_timeout) covers lock waits;
//     a deferred transaction that reads first and then writes could instead fail
//     at once with SQLITE_BUSY_SNAPSHOT when another connection committed between.
//   * Prepared statements are cached by their SQL text and reset after each use
//     (Stmt below), so a statement is compiled once per store.
#include "cohort/head/state_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <iterator>
#include <nlohmann/json.hpp>
#include <system_error>

namespace cohort::head {
namespace {

// Migration hook: each entry brings the schema from version-1 to version. To
// change the schema, append an entry (ALTER TABLE / CREATE ... / data fix-ups);
// never edit a shipped one. Open() runs the missing ones in one transaction.
struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE jobs(
  submission_id TEXT PRIMARY KEY NOT NULL,
  status        TEXT NOT NULL,
  start_time_ms INTEGER NOT NULL,
  end_time_ms   INTEGER,
  record_json   TEXT NOT NULL,
  created_seq   INTEGER NOT NULL UNIQUE);
CREATE TABLE job_events(
  seq           INTEGER PRIMARY KEY AUTOINCREMENT,
  submission_id TEXT NOT NULL,
  time_ms       INTEGER NOT NULL,
  status        TEXT NOT NULL,
  message       TEXT NOT NULL);
CREATE INDEX job_events_by_job ON job_events(submission_id, seq);
CREATE TABLE nodes(
  node_id       TEXT PRIMARY KEY NOT NULL,
  address       TEXT NOT NULL,
  first_seen_ms INTEGER NOT NULL,
  last_seen_ms  INTEGER NOT NULL,
  state         TEXT NOT NULL,
  info_json     TEXT NOT NULL);
CREATE TABLE metrics(
  seq           INTEGER PRIMARY KEY AUTOINCREMENT,
  submission_id TEXT NOT NULL,
  rank          INTEGER NOT NULL,
  time_s        REAL NOT NULL,
  json          TEXT NOT NULL);
CREATE INDEX metrics_by_job ON metrics(submission_id, seq);
CREATE TABLE kv(
  key   TEXT PRIMARY KEY NOT NULL,
  value BLOB NOT NULL);
)sql"},
};

constexpr int kCurrentSchemaVersion = kMigrations[std::size(kMigrations) - 1].version;

StatusCode CodeFor(int rc) {
  switch (rc & 0xff) {  // primary code of an extended one
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return StatusCode::kUnavailable;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_PROTOCOL:
      return StatusCode::kIoError;
    case SQLITE_TOOBIG:
      return StatusCode::kInvalidArgument;
    default:
      return StatusCode::kInternal;
  }
}

// The first line of a statement, shortened: enough to name it in an error.
std::string Abbrev(std::string_view sql) {
  while (!sql.empty() && (sql.front() == '\n' || sql.front() == ' ')) sql.remove_prefix(1);
  sql = sql.substr(0, sql.find('\n'));
  if (sql.size() > 60) return std::string(sql.substr(0, 57)) + "...";
  return std::string(sql);
}

std::string ColumnText(sqlite3_stmt* s, int i) {
  const unsigned char* p = sqlite3_column_text(s, i);
  if (p == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(s, i)));
}

Status CheckJson(std::string_view what, const std::string& text, bool must_be_object) {
  if (!nlohmann::json::accept(text)) {
    return Status::InvalidArgument(std::string(what) + " is not valid JSON");
  }
  size_t first = text.find_first_not_of(" \t\r\n");
  if (must_be_object && text[first] != '{') {  // accept() saw a value, so first is valid
    return Status::InvalidArgument(std::string(what) + " must be a JSON object");
  }
  return Status::Ok();
}

Status CheckId(std::string_view what, const std::string& id) {
  if (id.empty()) return Status::InvalidArgument(std::string(what) + " must not be empty");
  return Status::Ok();
}

}  // namespace

// One use of a cached prepared statement: bind, step, read columns; the
// destructor resets it and clears its bindings for the next user.
// REQUIRES: the store's mu_ held for the Stmt's whole life.
class StateStore::Stmt {
 public:
  Stmt(StateStore* store, std::string_view sql, sqlite3_stmt* stmt) : store_(store), sql_(sql), s_(stmt) {}
  ~Stmt() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Status Bind(int i, std::string_view text) {
    return Check(sqlite3_bind_text(s_, i, text.data() ? text.data() : "", static_cast<int>(text.size()),
                                   SQLITE_TRANSIENT));
  }
  Status BindBlob(int i, std::string_view bytes) {
    if (bytes.empty()) return Check(sqlite3_bind_zeroblob(s_, i, 0));
    return Check(sqlite3_bind_blob(s_, i, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT));
  }
  Status Bind(int i, int64_t v) { return Check(sqlite3_bind_int64(s_, i, v)); }
  Status Bind(int i, double v) { return Check(sqlite3_bind_double(s_, i, v)); }
  Status Bind(int i, std::optional<int64_t> v) {
    return v ? Bind(i, *v) : Check(sqlite3_bind_null(s_, i));
  }

  // true: a row is ready; false: done.
  Result<bool> Step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return store_->Error(Abbrev(sql_), rc);
  }
  // Steps a statement that returns no rows.
  Status Run() {
    COHORT_ASSIGN_OR_RETURN(bool row, Step());
    (void)row;
    return Status::Ok();
  }

  sqlite3_stmt* get() const { return s_; }

 private:
  Status Check(int rc) { return rc == SQLITE_OK ? Status::Ok() : store_->Error(Abbrev(sql_), rc); }

  StateStore* store_;
  std::string_view sql_;
  sqlite3_stmt* s_;
};

StateStore::StateStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}

StateStore::~StateStore() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [sql, stmt] : stmts_) sqlite3_finalize(stmt);
  stmts_.clear();
  // The last connection to close checkpoints the WAL into the main file.
  sqlite3_close_v2(db_);
}

int StateStore::CurrentSchemaVersion() { return kCurrentSchemaVersion; }

Result<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path, const StateStoreOptions& options) {
  const std::string where = "state db " + path;
  if (path.empty()) return Status::InvalidArgument("state db path must not be empty");

  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::filesystem::create_directories(parent, ec);
    if (ec) return Status::IoError(where + ": cannot create directory " + parent.string() + ": " + ec.message());
  }
  // Create the file ourselves so it is 0600 (it holds the token hash); SQLite
  // gives the -wal and -shm files the main file's permissions.
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status::IoError(where + ": cannot open: " + std::error_code(errno, std::generic_category()).message());
  }
  ::close(fd);

  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return Status(CodeFor(rc), where + ": open: " + msg);
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, options.busy_timeout_ms);
  std::unique_ptr<StateStore> store(new StateStore(path, db));

  std::lock_guard<std::mutex> lock(store->mu_);
  // journal_mode answers with the mode now in force; "wal" or it did not work.
  {
    sqlite3_stmt* s = nullptr;
    rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &s, nullptr);
    if (rc != SQLITE_OK) return store->Error("PRAGMA journal_mode=WAL", rc);
    rc = sqlite3_step(s);
    std::string mode = rc == SQLITE_ROW ? ColumnText(s, 0) : "";
    Status st = rc == SQLITE_ROW ? Status::Ok() : store->Error("PRAGMA journal_mode=WAL", rc);
    sqlite3_finalize(s);
    COHORT_RETURN_IF_ERROR(st);
    if (mode != "wal") {
      return Status::FailedPrecondition(where + ": cannot switch to WAL journal mode (got '" + mode +
                                        "'); is the state dir on a network filesystem?");
    }
  }
  COHORT_RETURN_IF_ERROR(store->Exec(options.synchronous_full ? "PRAGMA synchronous=FULL"
                                                              : "PRAGMA synchronous=NORMAL"));
  COHORT_RETURN_IF_ERROR(store->Migrate());
  return store;
}

Status StateStore::Error(std::string_view what, int rc) const {
  // errmsg describes the connection's latest failure; errstr is the fallback.
  const char* msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  return Status(CodeFor(rc), "state db " + path_ + ": " + std::string(what) + ": " + msg);
}

Result<sqlite3_stmt*> StateStore::Prepare(std::string_view sql) {
  auto it = stmts_.find(std::string(sql));
  if (it != stmts_.end()) return it->second;
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt,
                              nullptr);
  if (rc != SQLITE_OK) return Error("prepare " + Abbrev(sql), rc);
  stmts_.emplace(std::string(sql), stmt);
  return stmt;
}

Status StateStore::Exec(std::string_view sql) {
  std::string text(sql);
  int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::Ok() : Error(Abbrev(sql), rc);
}

Status StateStore::Begin() {
  COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare("BEGIN IMMEDIATE"));
  return Stmt(this, "BEGIN IMMEDIATE", s).Run();
}

Status StateStore::Commit() {
  COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare("COMMIT"));
  return Stmt(this, "COMMIT", s).Run();
}

Status StateStore::InTransaction(const std::function<Status()>& body) {
  COHORT_RETURN_IF_ERROR(Begin());
  Status status = body();
  if (status.ok()) status = Commit();
  if (!status.ok()) Rollback();
  return status;
}

void StateStore::Rollback() {
  // A failed COMMIT may already have rolled back; ROLLBACK outside a
  // transaction is an error, so ask first.
  if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

Status StateStore::Migrate() {
  auto body = [&]() -> Status {
    COHORT_RETURN_IF_ERROR(Exec("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)"));
    int64_t version = 0;
    bool have_row = false;
    {
      COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare("SELECT version FROM schema_version"));
      Stmt q(this, "SELECT version FROM schema_version", s);
      COHORT_ASSIGN_OR_RETURN(have_row, q.Step());
      if (have_row) version = sqlite3_column_int64(s, 0);
    }
    if (version > kCurrentSchemaVersion) {
      return Status::FailedPrecondition("state db " + path_ + ": schema version " + std::to_string(version) +
                                        " is newer than this binary's " + std::to_string(kCurrentSchemaVersion) +
                                        "; run a newer cohort head");
    }
    for (const Migration& m : kMigrations) {
      if (m.version <= version) continue;
      COHORT_RETURN_IF_ERROR(
          Exec(m.sql).WithPrefix("migration to schema version " + std::to_string(m.version)));
    }
    if (version == kCurrentSchemaVersion && have_row) return Status::Ok();
    std::string sql = have_row ? "UPDATE schema_version SET version=" : "INSERT INTO schema_version VALUES(";
    sql += std::to_string(kCurrentSchemaVersion);
    if (!have_row) sql += ")";
    return Exec(sql);
  };
  return InTransaction(body);
}

// --- jobs ----------------------------------------------------------------------

namespace {
constexpr std::string_view kPutJobSql =
    "INSERT INTO jobs(submission_id, status, start_time_ms, end_time_ms, record_json, created_seq) "
    "VALUES(?1, ?2, ?3, ?4, ?5, (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM jobs)) "
    "ON CONFLICT(submission_id) DO UPDATE SET status = excluded.status, "
    "start_time_ms = excluded.start_time_ms, end_time_ms = excluded.end_time_ms, "
    "record_json = excluded.record_json";
constexpr std::string_view kAppendEventSql =
    "INSERT INTO job_events(submission_id, time_ms, status, message) VALUES(?1, ?2, ?3, ?4)";
}  // namespace

Status StateStore::PutJobLocked(const std::string& submission_id, const std::string& status,
                                int64_t start_time_ms, std::optional<int64_t> end_time_ms,
                                const std::string& record_json) {
  COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kPutJobSql));
  Stmt q(this, kPutJobSql, s);
  COHORT_RETURN_IF_ERROR(q.Bind(1, submission_id));
  COHORT_RETURN_IF_ERROR(q.Bind(2, status));
  COHORT_RETURN_IF_ERROR(q.Bind(3, start_time_ms));
  COHORT_RETURN_IF_ERROR(q.Bind(4, end_time_ms));
  COHORT_RETURN_IF_ERROR(q.Bind(5, record_json));
  return q.Run();
}

Status StateStore::AppendJobEventLocked(const std::string& submission_id, int64_t time_ms,
                                        const std::string& status, const std::string& message) {
  COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kAppendEventSql));
  Stmt q(this, kAppendEventSql, s);
  COHORT_RETURN_IF_ERROR(q.Bind(1, submission_id));
  COHORT_RETURN_IF_ERROR(q.Bind(2, time_ms));
  COHORT_RETURN_IF_ERROR(q.Bind(3, status));
  COHORT_RETURN_IF_ERROR(q.Bind(4, message));
  return q.Run();
}

Status StateStore::PutJob(const std::string& submission_id, const std::string& status, int64_t start_time_ms,
                          std::optional<int64_t> end_time_ms, const std::string& record_json) {
  COHORT_RETURN_IF_ERROR(CheckId("submission_id", submission_id));
  COHORT_RETURN_IF_ERROR(CheckJson("job record of " + submission_id, record_json, /*must_be_object=*/true));
  std::lock_guard<std::mutex> lock(mu_);
  return InTransaction(
      [&] { return PutJobLocked(submission_id, status, start_time_ms, end_time_ms, record_json); });
}

Status StateStore::PutJobAndEvent(const std::string& submission_id, const std::string& status,
                                  int64_t start_time_ms, std::optional<int64_t> end_time_ms,
                                  const std::string& record_json, int64_t event_time_ms,
                                  const std::string& message) {
  COHORT_RETURN_IF_ERROR(CheckId("submission_id", submission_id));
  COHORT_RETURN_IF_ERROR(CheckJson("job record of " + submission_id, record_json, /*must_be_object=*/true));
  std::lock_guard<std::mutex> lock(mu_);
  auto body = [&]() -> Status {
    COHORT_RETURN_IF_ERROR(PutJobLocked(submission_id, status, start_time_ms, end_time_ms, record_json));
    return AppendJobEventLocked(submission_id, event_time_ms, status, message);
  };
  return InTransaction(body);
}

Result<std::optional<std::string>> StateStore::GetJob(const std::string& submission_id) {
  static constexpr std::string_view kSql = "SELECT record_json FROM jobs WHERE submission_id = ?1";
  std::lock_guard<std::mutex> lock(mu_);
  COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
  Stmt q(this, kSql, s);
  COHORT_RETURN_IF_ERROR(q.Bind(1, submission_id));
  COHORT_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(ColumnText(s, 0));
}

Result<std::vector<std::pair<std::string, std::string>>> StateStore::ListJobs() {
  static constexpr std::string_view kSql = "SELECT submission_id, record_json FROM jobs ORDER BY created_seq";
  std::lock_guard<std::mutex> lock(mu_);
  COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
  Stmt q(this, kSql, s);
  std::vector<std::pair<std::string, std::string>> jobs;
  while (true) {
    COHORT_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    jobs.emplace_back(ColumnText(s, 0), ColumnText(s, 1));
  }
  return jobs;
}

Status StateStore::DeleteJob(const std::string& submission_id) {
  static constexpr std::string_view kJobSql = "DELETE FROM jobs WHERE submission_id = ?1";
  static constexpr std::string_view kEventsSql = "DELETE FROM job_events WHERE submission_id = ?1";
  static constexpr std::string_view kMetricsSql = "DELETE FROM metrics WHERE submission_id = ?1";
  std::lock_guard<std::mutex> lock(mu_);
  auto body = [&]() -> Status {
    for (std::string_view sql : {kJobSql, kEventsSql, kMetricsSql}) {
      COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(sql));
      Stmt q(this, sql, s);
      COHORT_RETURN_IF_ERROR(q.Bind(1, submission_id));
      COHORT_RETURN_IF_ERROR(q.Run());
      if (sql == kJobSql && sqlite3_changes(db_) == 0) {
        return Status::NotFound("Job " + submission_id + " does not exist");
      }
    }
    return Status::Ok();
  };
  return InTransaction(body);
}

// --- status history ---------------------------------------------------------------

Status StateStore::AppendJobEvent(const std::string& submission_id, int64_t time_ms, const std::string& status,
                                  const std::string& message) {
  COHORT_RETURN_IF_ERROR(CheckId("submission_id", submission_id));
  std::lock_guard<std::mutex> lock(mu_);
  return InTransaction([&] { return AppendJobEventLocked(submission_id, time_ms, status, message); });
}

Result<std::vector<JobEvent>> StateStore::ListJobEvents(const std::string& submission_id) {
  static constexpr std::string_view kSql =
      "SELECT seq, time_ms, status, message FROM job_events WHERE submission_id = ?1 ORDER BY seq";
  std::lock_guard<std::mutex> lock(mu_);
  COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
  Stmt q(this, kSql, s);
  COHORT_RETURN_IF_ERROR(q.Bind(1, submission_id));
  std::vector<JobEvent> events;
  while (true) {
    COHORT_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    events.push_back(JobEvent{sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1), ColumnText(s, 2),
                              ColumnText(s, 3)});
  }
  return events;
}

// --- nodes -----------------------------------------------------------------------

Status StateStore::PutNode(const std::string& node_id, const std::string& address, const std::string& state,
                           int64_t first_seen_ms, int64_t last_seen_ms, const std::string& info_json) {
  static constexpr std::string_view kSql =
      "INSERT INTO nodes(node_id, address, first_seen_ms, last_seen_ms, state, info_json) "
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6) "
      "ON CONFLICT(node_id) DO UPDATE SET address = excluded.address, last_seen_ms = excluded.last_seen_ms, "
      "state = excluded.state, info_json = excluded.info_json";
  COHORT_RETURN_IF_ERROR(CheckId("node_id", node_id));
  COHORT_RETURN_IF_ERROR(CheckJson("info of node " + node_id, info_json, /*must_be_object=*/false));
  std::lock_guard<std::mutex> lock(mu_);
  auto body = [&]() -> Status {
    COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
    Stmt q(this, kSql, s);
    COHORT_RETURN_IF_ERROR(q.Bind(1, node_id));
    COHORT_RETURN_IF_ERROR(q.Bind(2, address));
    COHORT_RETURN_IF_ERROR(q.Bind(3, first_seen_ms));
    COHORT_RETURN_IF_ERROR(q.Bind(4, last_seen_ms));
    COHORT_RETURN_IF_ERROR(q.Bind(5, state));
    COHORT_RETURN_IF_ERROR(q.Bind(6, info_json));
    return q.Run();
  };
  return InTransaction(body);
}

Result<std::vector<NodeRecord>> StateStore::ListNodes() {
  static constexpr std::string_view kSql =
      "SELECT node_id, address, state, first_seen_ms, last_seen_ms, info_json FROM nodes "
      "ORDER BY first_seen_ms, node_id";
  std::lock_guard<std::mutex> lock(mu_);
  COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
  Stmt q(this, kSql, s);
  std::vector<NodeRecord> nodes;
  while (true) {
    COHORT_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    nodes.push_back(NodeRecord{ColumnText(s, 0), ColumnText(s, 1), ColumnText(s, 2), sqlite3_column_int64(s, 3),
                               sqlite3_column_int64(s, 4), ColumnText(s, 5)});
  }
  return nodes;
}

Status StateStore::DeleteNode(const std::string& node_id) {
  static constexpr std::string_view kSql = "DELETE FROM nodes WHERE node_id = ?1";
  std::lock_guard<std::mutex> lock(mu_);
  auto body = [&]() -> Status {
    COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
    Stmt q(this, kSql, s);
    COHORT_RETURN_IF_ERROR(q.Bind(1, node_id));
    COHORT_RETURN_IF_ERROR(q.Run());
    if (sqlite3_changes(db_) == 0) return Status::NotFound("Node " + node_id + " does not exist");
    return Status::Ok();
  };
  return InTransaction(body);
}

// --- metrics ---------------------------------------------------------------------

Status StateStore::AppendMetrics(const std::string& submission_id, const std::vector<MetricsReport>& reports) {
  static constexpr std::string_view kSql =
      "INSERT INTO metrics(submission_id, rank, time_s, json) VALUES(?1, ?2, ?3, ?4)";
  COHORT_RETURN_IF_ERROR(CheckId("submission_id", submission_id));
  for (const MetricsReport& r : reports) {
    COHORT_RETURN_IF_ERROR(CheckJson("metrics report of job " + submission_id + " rank " + std::to_string(r.rank),
                                     r.json, /*must_be_object=*/true));
  }
  if (reports.empty()) return Status::Ok();
  std::lock_guard<std::mutex> lock(mu_);
  auto body = [&]() -> Status {
    COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
    for (const MetricsReport& r : reports) {
      Stmt q(this, kSql, s);
      COHORT_RETURN_IF_ERROR(q.Bind(1, submission_id));
      COHORT_RETURN_IF_ERROR(q.Bind(2, static_cast<int64_t>(r.rank)));
      COHORT_RETURN_IF_ERROR(q.Bind(3, r.time_s));
      COHORT_RETURN_IF_ERROR(q.Bind(4, r.json));
      COHORT_RETURN_IF_ERROR(q.Run());
    }
    return Status::Ok();
  };
  return InTransaction(body);
}

Result<MetricsPage> StateStore::ListMetrics(const std::string& submission_id, int64_t since_seq, size_t limit) {
  static constexpr std::string_view kSql =
      "SELECT seq, rank, time_s, json FROM metrics WHERE submission_id = ?1 AND seq > ?2 "
      "ORDER BY seq LIMIT ?3";
  std::lock_guard<std::mutex> lock(mu_);
  COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
  Stmt q(this, kSql, s);
  COHORT_RETURN_IF_ERROR(q.Bind(1, submission_id));
  COHORT_RETURN_IF_ERROR(q.Bind(2, since_seq));
  // A negative LIMIT means no limit in SQLite.
  COHORT_RETURN_IF_ERROR(q.Bind(3, limit == 0 ? int64_t{-1} : static_cast<int64_t>(limit)));
  MetricsPage page;
  page.next_seq = since_seq;
  while (true) {
    COHORT_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    page.rows.push_back(MetricsRow{sqlite3_column_int64(s, 0), static_cast<int32_t>(sqlite3_column_int64(s, 1)),
                                   sqlite3_column_double(s, 2), ColumnText(s, 3)});
    page.next_seq = page.rows.back().seq;
  }
  return page;
}

// --- kv ----------------------------------------------------------------------------

Status StateStore::KvPut(const std::string& key, std::string_view value) {
  static constexpr std::string_view kSql =
      "INSERT INTO kv(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value";
  COHORT_RETURN_IF_ERROR(CheckId("kv key", key));
  std::lock_guard<std::mutex> lock(mu_);
  auto body = [&]() -> Status {
    COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
    Stmt q(this, kSql, s);
    COHORT_RETURN_IF_ERROR(q.Bind(1, key));
    COHORT_RETURN_IF_ERROR(q.BindBlob(2, value));
    return q.Run();
  };
  return InTransaction(body);
}

Result<std::optional<std::string>> StateStore::KvGet(const std::string& key) {
  static constexpr std::string_view kSql = "SELECT value FROM kv WHERE key = ?1";
  std::lock_guard<std::mutex> lock(mu_);
  COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
  Stmt q(this, kSql, s);
  COHORT_RETURN_IF_ERROR(q.Bind(1, key));
  COHORT_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::optional<std::string>();
  const void* p = sqlite3_column_blob(s, 0);
  int n = sqlite3_column_bytes(s, 0);
  if (p == nullptr || n <= 0) return std::optional<std::string>(std::string());
  return std::optional<std::string>(std::string(static_cast<const char*>(p), static_cast<size_t>(n)));
}

Status StateStore::KvDelete(const std::string& key) {
  static constexpr std::string_view kSql = "DELETE FROM kv WHERE key = ?1";
  std::lock_guard<std::mutex> lock(mu_);
  auto body = [&]() -> Status {
    COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
    Stmt q(this, kSql, s);
    COHORT_RETURN_IF_ERROR(q.Bind(1, key));
    return q.Run();
  };
  return InTransaction(body);
}

// --- integrity -------------------------------------------------------------------

Status StateStore::CheckIntegrity() {
  static constexpr std::string_view kSql = "PRAGMA integrity_check";
  std::lock_guard<std::mutex> lock(mu_);
  COHORT_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(kSql));
  Stmt q(this, kSql, s);
  std::string report;
  while (true) {
    COHORT_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    if (!report.empty()) report += "; ";
    report += ColumnText(s, 0);
  }
  if (report == "ok") return Status::Ok();
  return Status::IoError("state db " + path_ + ": integrity_check failed: " + report);
}

}  // namespace cohort::head
