// Tests for StateStore (src/head/state/state_store.cc): CRUD of every table,
// list order, status history, metrics paging, reopen, schema versioning, error
// messages, kill -9 durability of committed writes, and readers running while
// a writer commits.
#include "cohort/head/state_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

namespace cohort::head {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cohort_state_store_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/state/state.db";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<StateStore> OpenOrDie(const StateStoreOptions& options = {}) {
    auto store = StateStore::Open(path_, options);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  // A single-row, single-column query on a raw connection (white-box checks).
  std::string RawQuery(const std::string& sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    std::string out;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
  }

  static std::string Record(const std::string& id, int n) { return json{{"submission_id", id}, {"n", n}}.dump(); }

  std::string dir_;
  std::string path_;
};

TEST_F(StateStoreTest, OpenCreatesPrivateWalDatabaseWithSchemaVersion) {
  auto store = OpenOrDie();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->path(), path_);
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(RawQuery("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(RawQuery("SELECT version FROM schema_version"), std::to_string(StateStore::CurrentSchemaVersion()));
  EXPECT_EQ(RawQuery("SELECT count(*) FROM schema_version"), "1");
  EXPECT_TRUE(store->CheckIntegrity().ok());
}

TEST_F(StateStoreTest, JobPutGetUpdateDelete) {
  auto store = OpenOrDie();
  auto missing = store->GetJob("nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  ASSERT_TRUE(store->PutJob("j1", "PENDING", 1000, std::nullopt, Record("j1", 1)).ok());
  auto got = store->GetJob("j1");
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, Record("j1", 1));
  EXPECT_EQ(RawQuery("SELECT quote(end_time_ms) FROM jobs WHERE submission_id='j1'"), "NULL");

  ASSERT_TRUE(store->PutJob("j1", "SUCCEEDED", 1000, 2000, Record("j1", 2)).ok());
  got = store->GetJob("j1");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, Record("j1", 2));
  EXPECT_EQ(RawQuery("SELECT status || ',' || end_time_ms FROM jobs WHERE submission_id='j1'"), "SUCCEEDED,2000");

  ASSERT_TRUE(store->DeleteJob("j1").ok());
  got = store->GetJob("j1");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  Status again = store->DeleteJob("j1");
  EXPECT_EQ(again.code(), StatusCode::kNotFound);
  EXPECT_EQ(again.message(), "Job j1 does not exist");
}

TEST_F(StateStoreTest, ListJobsKeepsSubmissionOrderAcrossUpdatesAndDeletes) {
  auto store = OpenOrDie();
  for (std::string id : {"c", "a", "b"}) ASSERT_TRUE(store->PutJob(id, "PENDING", 1, std::nullopt, Record(id, 0)).ok());
  ASSERT_TRUE(store->PutJob("a", "RUNNING", 1, std::nullopt, Record("a", 1)).ok());  // update keeps place
  auto jobs = store->ListJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 3u);
  EXPECT_EQ((*jobs)[0].first, "c");
  EXPECT_EQ((*jobs)[1].first, "a");
  EXPECT_EQ((*jobs)[1].second, Record("a", 1));
  EXPECT_EQ((*jobs)[2].first, "b");

  ASSERT_TRUE(store->DeleteJob("b").ok());
  ASSERT_TRUE(store->PutJob("d", "PENDING", 1, std::nullopt, Record("d", 0)).ok());
  ASSERT_TRUE(store->PutJob("b", "PENDING", 1, std::nullopt, Record("b", 0)).ok());  // re-created: goes last
  jobs = store->ListJobs();
  ASSERT_TRUE(jobs.ok());
  std::vector<std::string> ids;
  for (auto& [id, record] : *jobs) ids.push_back(id);
  EXPECT_EQ(ids, (std::vector<std::string>{"c", "a", "d", "b"}));
}

TEST_F(StateStoreTest, RejectsBadArguments) {
  auto store = OpenOrDie();
  EXPECT_EQ(store->PutJob("", "PENDING", 1, std::nullopt, "{}").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->PutJob("j", "PENDING", 1, std::nullopt, "{not json").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->PutJob("j", "PENDING", 1, std::nullopt, "[1,2]").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->PutNode("n", "a:1", "ALIVE", 1, 1, "").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->AppendMetrics("j", {{0, 1.0, "3"}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->KvPut("", "v").code(), StatusCode::kInvalidArgument);
  auto jobs = store->ListJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_TRUE(jobs->empty());
}

TEST_F(StateStoreTest, JobEventsAreAnOrderedHistoryPerJob) {
  auto store = OpenOrDie();
  ASSERT_TRUE(store->PutJobAndEvent("j1", "PENDING", 10, std::nullopt, Record("j1", 0), 10, "submitted").ok());
  ASSERT_TRUE(store->PutJobAndEvent("j2", "PENDING", 11, std::nullopt, Record("j2", 0), 11, "submitted").ok());
  ASSERT_TRUE(store->AppendJobEvent("j1", 20, "RUNNING", "placed on node-1").ok());
  ASSERT_TRUE(store->PutJobAndEvent("j1", "FAILED", 10, 30, Record("j1", 1), 30, "rank 1 exited 3").ok());

  auto events = store->ListJobEvents("j1");
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ((*events)[0].status, "PENDING");
  EXPECT_EQ((*events)[0].time_ms, 10);
  EXPECT_EQ((*events)[0].message, "submitted");
  EXPECT_EQ((*events)[1].status, "RUNNING");
  EXPECT_EQ((*events)[2].status, "FAILED");
  EXPECT_EQ((*events)[2].message, "rank 1 exited 3");
  EXPECT_LT((*events)[0].seq, (*events)[1].seq);
  EXPECT_LT((*events)[1].seq, (*events)[2].seq);
  auto got = store->GetJob("j1");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, Record("j1", 1));

  auto none = store->ListJobEvents("unknown");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  // Deleting a job removes its history and metrics but not other jobs'.
  ASSERT_TRUE(store->AppendMetrics("j1", {{0, 1.5, R"({"loss": 1})"}}).ok());
  ASSERT_TRUE(store->AppendMetrics("j2", {{0, 1.5, R"({"loss": 2})"}}).ok());
  ASSERT_TRUE(store->DeleteJob("j1").ok());
  events = store->ListJobEvents("j1");
  ASSERT_TRUE(events.ok());
  EXPECT_TRUE(events->empty());
  auto metrics = store->ListMetrics("j1", 0, 0);
  ASSERT_TRUE(metrics.ok());
  EXPECT_TRUE(metrics->rows.empty());
  EXPECT_EQ(store->ListJobEvents("j2")->size(), 1u);
  EXPECT_EQ(store->ListMetrics("j2", 0, 0)->rows.size(), 1u);
}

TEST_F(StateStoreTest, NodesUpsertKeepsFirstSeen) {
  auto store = OpenOrDie();
  ASSERT_TRUE(store->PutNode("node-b", "10.0.0.2:7000", "ALIVE", 200, 200, R"({"CPU": 8})").ok());
  ASSERT_TRUE(store->PutNode("node-a", "10.0.0.1:7000", "ALIVE", 100, 100, R"({"CPU": 4})").ok());
  ASSERT_TRUE(store->PutNode("node-b", "10.0.0.9:7000", "DEAD", 999, 500, R"({"CPU": 16})").ok());

  auto nodes = store->ListNodes();
  ASSERT_TRUE(nodes.ok());
  ASSERT_EQ(nodes->size(), 2u);
  EXPECT_EQ((*nodes)[0].node_id, "node-a");
  EXPECT_EQ((*nodes)[1].node_id, "node-b");
  const NodeRecord& b = (*nodes)[1];
  EXPECT_EQ(b.address, "10.0.0.9:7000");
  EXPECT_EQ(b.state, "DEAD");
  EXPECT_EQ(b.first_seen_ms, 200);  // kept from the first insert
  EXPECT_EQ(b.last_seen_ms, 500);
  EXPECT_EQ(b.info_json, R"({"CPU": 16})");

  ASSERT_TRUE(store->DeleteNode("node-a").ok());
  EXPECT_EQ(store->DeleteNode("node-a").code(), StatusCode::kNotFound);
  EXPECT_EQ(store->ListNodes()->size(), 1u);
}

TEST_F(StateStoreTest, MetricsPageWithSinceAndNext) {
  auto store = OpenOrDie();
  // 25 reports for job a in batches of 5, interleaved with job b's.
  for (int batch = 0; batch < 5; ++batch) {
    std::vector<MetricsReport> reports;
    for (int i = 0; i < 5; ++i) {
      int n = batch * 5 + i;
      reports.push_back({n % 2, 1000.0 + n + 0.25, json{{"step", n}}.dump()});
    }
    ASSERT_TRUE(store->AppendMetrics("a", reports).ok());
    ASSERT_TRUE(store->AppendMetrics("b", {{0, 1.0, R"({"other": true})"}}).ok());
  }
  ASSERT_TRUE(store->AppendMetrics("a", {}).ok());  // empty batch is fine

  std::vector<int> steps;
  int64_t since = 0;
  int pages = 0;
  while (true) {
    auto page = store->ListMetrics("a", since, 10);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    if (page->rows.empty()) {
      EXPECT_EQ(page->next_seq, since);
      break;
    }
    ++pages;
    EXPECT_LE(page->rows.size(), 10u);
    for (const MetricsRow& row : page->rows) {
      EXPECT_GT(row.seq, since);
      int step = json::parse(row.json)["step"];
      EXPECT_EQ(row.rank, step % 2);
      EXPECT_DOUBLE_EQ(row.time_s, 1000.0 + step + 0.25);
      steps.push_back(step);
    }
    EXPECT_EQ(page->next_seq, page->rows.back().seq);
    since = page->next_seq;
  }
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(steps.size(), 25u);
  for (int i = 0; i < 25; ++i) EXPECT_EQ(steps[i], i);

  auto all = store->ListMetrics("a", 0, 0);  // 0 = no limit
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->rows.size(), 25u);
  // New reports show up after the cursor.
  ASSERT_TRUE(store->AppendMetrics("a", {{1, 2000.0, R"({"step": 25})"}}).ok());
  auto newer = store->ListMetrics("a", since, 10);
  ASSERT_TRUE(newer.ok());
  ASSERT_EQ(newer->rows.size(), 1u);
  EXPECT_EQ(json::parse(newer->rows[0].json)["step"], 25);
}

TEST_F(StateStoreTest, MetricsBatchIsAllOrNothing) {
  auto store = OpenOrDie();
  Status s = store->AppendMetrics("a", {{0, 1.0, R"({"ok": 1})"}, {1, 1.0, "not json"}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s.message();
  EXPECT_TRUE(store->ListMetrics("a", 0, 0)->rows.empty());
}

TEST_F(StateStoreTest, KvPutGetDelete) {
  auto store = OpenOrDie();
  auto missing = store->KvGet("session");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  ASSERT_TRUE(store->KvPut("session", "session_2026_01_01_1").ok());
  ASSERT_TRUE(store->KvPut("session", "session_2026_01_02_2").ok());
  EXPECT_EQ(store->KvGet("session")->value(), "session_2026_01_02_2");

  const std::string binary("\0\x01\xff\0tail", 8);
  ASSERT_TRUE(store->KvPut("token_hash", binary).ok());
  EXPECT_EQ(store->KvGet("token_hash")->value(), binary);
  ASSERT_TRUE(store->KvPut("empty", "").ok());
  auto empty = store->KvGet("empty");
  ASSERT_TRUE(empty.ok() && empty->has_value());
  EXPECT_EQ(**empty, "");

  ASSERT_TRUE(store->KvDelete("session").ok());
  ASSERT_TRUE(store->KvDelete("session").ok());  // absent is fine
  EXPECT_FALSE(store->KvGet("session")->has_value());
}

TEST_F(StateStoreTest, ReopenKeepsEverything) {
  {
    auto store = OpenOrDie();
    ASSERT_TRUE(store->PutJobAndEvent("j1", "RUNNING", 5, std::nullopt, Record("j1", 7), 5, "started").ok());
    ASSERT_TRUE(store->PutJob("j2", "SUCCEEDED", 6, 9, Record("j2", 8)).ok());
    ASSERT_TRUE(store->PutNode("n1", "h:1", "ALIVE", 1, 2, "{}").ok());
    ASSERT_TRUE(store->AppendMetrics("j1", {{0, 3.5, R"({"loss": 0.5})"}}).ok());
    ASSERT_TRUE(store->KvPut("k", "v").ok());
  }
  auto store = OpenOrDie();
  ASSERT_NE(store, nullptr);
  auto jobs = store->ListJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0], std::make_pair(std::string("j1"), Record("j1", 7)));
  EXPECT_EQ((*jobs)[1], std::make_pair(std::string("j2"), Record("j2", 8)));
  EXPECT_EQ(store->ListJobEvents("j1")->at(0).message, "started");
  EXPECT_EQ(store->ListNodes()->at(0).address, "h:1");
  EXPECT_EQ(store->ListMetrics("j1", 0, 0)->rows.at(0).json, R"({"loss": 0.5})");
  EXPECT_EQ(store->KvGet("k")->value(), "v");
  EXPECT_EQ(RawQuery("SELECT count(*) FROM schema_version"), "1");
  // A new job after reopen still lists after the old ones.
  ASSERT_TRUE(store->PutJob("j0", "PENDING", 1, std::nullopt, Record("j0", 0)).ok());
  EXPECT_EQ(store->ListJobs()->back().first, "j0");
}

TEST_F(StateStoreTest, NewerSchemaVersionIsRefused) {
  { OpenOrDie(); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE schema_version SET version = 999", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = StateStore::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find(path_), std::string::npos);
  EXPECT_NE(store.status().message().find("999"), std::string::npos);
}

TEST_F(StateStoreTest, ErrorsNameThePathAndSqliteMessage) {
  // Parent "directory" is a file.
  std::ofstream(dir_ + "/file") << "x";
  auto bad = StateStore::Open(dir_ + "/file/state.db");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kIoError);
  EXPECT_NE(bad.status().message().find(dir_ + "/file/state.db"), std::string::npos) << bad.status().message();

  // Not a database.
  std::ofstream(dir_ + "/garbage.db") << std::string(4096, 'g');
  auto garbage = StateStore::Open(dir_ + "/garbage.db");
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find(dir_ + "/garbage.db"), std::string::npos);
  EXPECT_NE(garbage.status().message().find("not a database"), std::string::npos) << garbage.status().message();

  // Another connection holds the write lock longer than busy_timeout_ms.
  StateStoreOptions options;
  options.busy_timeout_ms = 100;
  auto store = OpenOrDie(options);
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  Status s = store->PutJob("j", "PENDING", 1, std::nullopt, "{}");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find(path_), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("locked"), std::string::npos) << s.message();
  ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  // The failed write left nothing behind and the store still works.
  EXPECT_TRUE(store->PutJob("j", "PENDING", 1, std::nullopt, "{}").ok());
}

TEST_F(StateStoreTest, FullSynchronousModeWorks) {
  StateStoreOptions options;
  options.synchronous_full = true;
  auto store = OpenOrDie(options);
  ASSERT_TRUE(store->PutJob("j", "PENDING", 1, std::nullopt, "{}").ok());
  EXPECT_TRUE(store->GetJob("j")->has_value());
}

// kill -9 durability: a child process commits job updates (each a PutJobAndEvent
// transaction) and reports each commit on a pipe; the parent kills it at a
// random moment, reopens, and checks that every reported commit is there, that
// job rows and their histories agree (atomicity), and that the file is intact.
TEST_F(StateStoreTest, KillNineKeepsEveryCommittedWrite) {
  constexpr int kWritesPerRound = 1000;
  constexpr int kJobs = 37;
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  { ASSERT_NE(OpenOrDie(), nullptr); }  // schema exists before the first kill
  int64_t committed_before = 0;  // events that survived earlier rounds

  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const int first = round * kWritesPerRound;
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(pipe_fds[0]);
      auto store = StateStore::Open(path_);
      if (!store.ok()) ::_exit(2);
      for (int i = first; i < first + kWritesPerRound; ++i) {
        std::string id = "job-" + std::to_string(i % kJobs);
        Status s = (*store)->PutJobAndEvent(id, "RUNNING", i, std::nullopt, json{{"n", i}}.dump(), i,
                                            "update " + std::to_string(i));
        if (!s.ok()) ::_exit(3);
        int32_t committed = i + 1;
        if (::write(pipe_fds[1], &committed, sizeof committed) != sizeof committed) ::_exit(4);
      }
      while (true) ::pause();  // wait for the kill so every round ends the same way
    }
    ::close(pipe_fds[1]);
    const int kill_after = first + std::uniform_int_distribution<int>(1, kWritesPerRound)(rng);
    int32_t reported = first;
    int32_t value = 0;
    while (reported < kill_after) {
      ssize_t n = ::read(pipe_fds[0], &value, sizeof value);
      if (n != sizeof value) break;
      reported = value;
    }
    ::usleep(std::uniform_int_distribution<int>(0, 300)(rng));  // land anywhere in a transaction
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL) << "child status " << wstatus;
    // Everything the child wrote to the pipe before dying was committed first.
    while (::read(pipe_fds[0], &value, sizeof value) == sizeof value) reported = value;
    ::close(pipe_fds[0]);
    ASSERT_GT(reported, first);

    auto store = OpenOrDie();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->CheckIntegrity().ok()) << store->CheckIntegrity().ToString();
    EXPECT_EQ(RawQuery("PRAGMA integrity_check"), "ok");
    // The writes that survived are exactly a prefix [first, first + c) of this
    // round's, with c >= reported; earlier rounds' writes are untouched.
    std::vector<int64_t> this_round;
    int64_t earlier = 0;
    for (int j = 0; j < kJobs; ++j) {
      std::string id = "job-" + std::to_string(j);
      auto events = store->ListJobEvents(id);
      ASSERT_TRUE(events.ok());
      for (const JobEvent& e : *events) {
        if (e.time_ms >= first) {
          this_round.push_back(e.time_ms);
          EXPECT_EQ(e.message, "update " + std::to_string(e.time_ms));
        } else {
          ++earlier;
        }
      }
      auto record = store->GetJob(id);
      ASSERT_TRUE(record.ok());
      if (events->empty()) {
        EXPECT_FALSE(record->has_value()) << id;
        continue;
      }
      ASSERT_TRUE(record->has_value()) << id;
      // Job row and its history were committed together.
      EXPECT_EQ(json::parse(**record)["n"].get<int64_t>(), events->back().time_ms) << id;
    }
    EXPECT_EQ(earlier, committed_before);
    std::sort(this_round.begin(), this_round.end());
    ASSERT_GE(static_cast<int64_t>(this_round.size()), reported - first) << "lost reported commits";
    ASSERT_LE(this_round.size(), static_cast<size_t>(kWritesPerRound));
    for (size_t k = 0; k < this_round.size(); ++k) ASSERT_EQ(this_round[k], first + static_cast<int64_t>(k));
    committed_before += static_cast<int64_t>(this_round.size());
  }
}

// One writer thread commits while readers on the same store and on a second
// connection (another StateStore on the same file) list continuously; nobody
// sees an error and counts only grow.
TEST_F(StateStoreTest, ConcurrentReadersWhileWriting) {
  auto store = OpenOrDie();
  auto other = OpenOrDie();
  ASSERT_NE(store, nullptr);
  ASSERT_NE(other, nullptr);
  constexpr int kWrites = 300;
  std::atomic<bool> done{false};
  std::atomic<int> errors{0};

  std::thread writer([&] {
    for (int i = 0; i < kWrites; ++i) {
      std::string id = "job-" + std::to_string(i);
      if (!store->PutJob(id, "RUNNING", i, std::nullopt, Record(id, i)).ok()) ++errors;
      if (!store->AppendMetrics("m", {{0, 1.0 * i, json{{"i", i}}.dump()}, {1, 1.0 * i, "{}"}}).ok()) ++errors;
    }
    done = true;
  });
  auto reader = [&](StateStore* s) {
    size_t last_jobs = 0;
    size_t last_metrics = 0;
    while (!done) {
      auto jobs = s->ListJobs();
      auto metrics = s->ListMetrics("m", 0, 0);
      if (!jobs.ok() || !metrics.ok()) {
        ++errors;
        continue;
      }
      EXPECT_GE(jobs->size(), last_jobs);
      EXPECT_GE(metrics->rows.size(), last_metrics);
      EXPECT_EQ(metrics->rows.size() % 2, 0u);  // a batch is seen whole or not at all
      last_jobs = jobs->size();
      last_metrics = metrics->rows.size();
    }
  };
  std::thread same_store_reader(reader, store.get());
  std::thread other_conn_reader(reader, other.get());
  std::thread other_conn_writer([&] {
    for (int i = 0; !done; ++i) {
      if (!other->KvPut("k", std::to_string(i)).ok()) ++errors;
    }
  });
  writer.join();
  same_store_reader.join();
  other_conn_reader.join();
  other_conn_writer.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(other->ListJobs()->size(), static_cast<size_t>(kWrites));
  EXPECT_EQ(other->ListMetrics("m", 0, 0)->rows.size(), static_cast<size_t>(2 * kWrites));
  EXPECT_TRUE(other->CheckIntegrity().ok());
}

}  // namespace
}  // namespace cohort::head
