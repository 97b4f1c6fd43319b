// The head's small parts on their own: package checks (zip-slip, symlinks,
// names), the sticky state-store failure, per-job tokens, the work pool,
// Status -> HTTP status.
#include <gtest/gtest.h>
#include <zip.h>

#include <atomic>
#include <fstream>
#include <filesystem>
#include <thread>

#include "cluster_fixture.h"
#include "cohort/common/json.h"
#include "http_status.h"
#include "job_tokens.h"
#include "log_writer.h"
#include "package_store.h"
#include "work_pool.h"

namespace cohort::head {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

// A zip holding `entries` (name -> contents); `symlink` marks one as a link.
std::string MakeZip(const std::vector<std::pair<std::string, std::string>>& entries, const std::string& symlink = "") {
  const std::string path = (fs::temp_directory_path() / ("cohort_pkg_" + std::to_string(getpid()) + ".zip")).string();
  fs::remove(path);
  int err = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  for (const auto& [name, data] : entries) {
    zip_source_t* src = zip_source_buffer(za, data.data(), data.size(), 0);
    zip_int64_t idx = zip_file_add(za, name.c_str(), src, ZIP_FL_ENC_RAW);
    if (name == symlink) zip_file_set_external_attributes(za, idx, 0, ZIP_OPSYS_UNIX, (0120777u) << 16);
  }
  zip_close(za);
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::remove(path);
  return bytes;
}

TEST(PackageStoreTest, RefusesEntriesThatEscapeTheWorkingDir) {
  EXPECT_TRUE(ValidatePackageZip(MakeZip({{"train.py", "print(1)"}, {"data/x.txt", "x"}})).ok());
  EXPECT_FALSE(ValidatePackageZip(MakeZip({{"../evil", "x"}})).ok());
  EXPECT_FALSE(ValidatePackageZip(MakeZip({{"a/../../evil", "x"}})).ok());
  EXPECT_FALSE(ValidatePackageZip(MakeZip({{"/etc/evil", "x"}})).ok());
  EXPECT_FALSE(ValidatePackageZip(MakeZip({{"a\\b", "x"}})).ok());
  EXPECT_FALSE(ValidatePackageZip(MakeZip({{"link", "/etc"}}, "link")).ok());
  Status bad = ValidatePackageZip(MakeZip({{std::string("\xff/../x"), "x"}}));
  EXPECT_FALSE(bad.ok());
  EXPECT_TRUE(IsValidUtf8(bad.message()));
  EXPECT_FALSE(ValidatePackageZip("not a zip").ok());
  EXPECT_FALSE(ValidatePackageZip("").ok());
  EXPECT_FALSE(ValidPackageName("../x.zip"));
  EXPECT_FALSE(ValidPackageName(".zip"));
  EXPECT_FALSE(ValidPackageName("a b.zip"));
  EXPECT_TRUE(ValidPackageName("_ray_pkg_0123abcd.zip"));
}

TEST(PackageStoreTest, StoresAtomicallyAndReadsBack) {
  const fs::path dir = fs::temp_directory_path() / ("cohort_pkgs_" + std::to_string(getpid()));
  fs::remove_all(dir);
  PackageStore store(dir.string());
  const std::string zip = MakeZip({{"train.py", "print(1)"}});
  EXPECT_FALSE(store.Exists("_ray_pkg_a.zip"));
  ASSERT_TRUE(store.Put("_ray_pkg_a.zip", zip).ok());
  EXPECT_TRUE(store.Exists("_ray_pkg_a.zip"));
  std::string back;
  ASSERT_TRUE(store.Read("_ray_pkg_a.zip", &back).ok());
  EXPECT_EQ(back, zip);
  EXPECT_EQ(store.Read("../cohort.db", &back).code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Put("_ray_pkg_b.zip", "junk").code(), StatusCode::kInvalidArgument);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u) << "no temporary files left behind";
  fs::remove_all(dir);
}

using StateWriterTest = testing::ClusterFixture;

TEST_F(StateWriterTest, AFailedWriteIsStickyAndReportedByHealth) {
  auto a = Join("node-a", 2);
  const std::string id = Submit({{"entrypoint", "sleep 60"}});
  EXPECT_EQ(cluster_->Health().status, 200);
  cluster_->state_writer().TEST_FailWrites("disk full");
  // The next state change fails to persist: from then on, every mutation is
  // refused with the first error, and health says why.
  Exit(*a, id, 0, 0, 0);
  auto health = cluster_->Health();
  EXPECT_EQ(health.status, 503);
  EXPECT_NE(health.body.find("disk full"), std::string::npos) << health.body;
  auto submit = cluster_->Submit(json{{"entrypoint", "true"}}.dump());
  EXPECT_EQ(submit.status, 503);
  EXPECT_NE(submit.body.find("refuses changes until it is restarted"), std::string::npos) << submit.body;
  EXPECT_EQ(cluster_->PutPackage("_ray_pkg_x.zip", MakeZip({{"a", "b"}})).status, 503);
  EXPECT_EQ(cluster_->StopJob(id).status, 200);  // already terminal: nothing to change
  // Reads keep working.
  EXPECT_EQ(cluster_->GetJob(id).status, 200);
  EXPECT_EQ(cluster_->ListJobs().status, 200);
}

TEST(JobTokensTest, ATokenNamesItsJobAndCannotBeForged) {
  JobTokens tokens("0123456789abcdef0123456789abcdef");
  const std::string t = tokens.TokenFor("raysubmit_abc");
  EXPECT_EQ(tokens.JobOf(t), "raysubmit_abc");
  std::string forged = t;
  forged.back() = 'd';  // another job's name with this MAC
  EXPECT_EQ(tokens.JobOf(forged), std::nullopt);
  std::string flipped = t;
  flipped[20] = flipped[20] == 'a' ? 'b' : 'a';
  EXPECT_EQ(tokens.JobOf(flipped), std::nullopt);
  EXPECT_EQ(JobTokens("another-secret-another-secret-xx").JobOf(t), std::nullopt);
  EXPECT_EQ(tokens.JobOf(""), std::nullopt);
  EXPECT_EQ(tokens.JobOf("cohort-job."), std::nullopt);
  EXPECT_TRUE(JobTokenMayAccess("j1", "GET", "/api/jobs/j1"));
  EXPECT_TRUE(JobTokenMayAccess("j1", "GET", "/api/jobs/j1/logs"));
  EXPECT_TRUE(JobTokenMayAccess("j1", "GET", "/api/jobs/j1/metrics"));
  EXPECT_FALSE(JobTokenMayAccess("j1", "GET", "/api/jobs/j2"));
  EXPECT_FALSE(JobTokenMayAccess("j1", "GET", "/api/jobs/"));
  EXPECT_FALSE(JobTokenMayAccess("j1", "POST", "/api/jobs/j1/stop"));
  EXPECT_FALSE(JobTokenMayAccess("j1", "DELETE", "/api/jobs/j1"));
}

TEST(JobTokensTest, TheSecretSurvivesARestart) {
  const fs::path dir = fs::temp_directory_path() / ("cohort_tokens_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto a = JobTokens::Load(dir.string());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = JobTokens::Load(dir.string());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->TokenFor("j"), b->TokenFor("j"));
  EXPECT_EQ(fs::status(dir / "job_secret").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  fs::remove_all(dir);
}

TEST(WorkPoolTest, RunsTasksAndRefusesBeyondItsQueue) {
  WorkPool pool(1, 2);
  std::atomic<bool> release{false};
  std::atomic<int> ran{0};
  ASSERT_TRUE(pool.TrySubmit([&] {
    while (!release) std::this_thread::sleep_for(1ms);
    ++ran;
  }));
  while (pool.queued() != 0) std::this_thread::sleep_for(1ms);  // the thread took it
  EXPECT_TRUE(pool.TrySubmit([&] { ++ran; }));
  EXPECT_TRUE(pool.TrySubmit([&] { throw std::runtime_error("a task that throws does not end the pool"); }));
  EXPECT_FALSE(pool.TrySubmit([&] { ++ran; })) << "queue of 2 is full";
  release = true;
  EXPECT_TRUE(pool.TrySubmit([&] { ++ran; }) || true);
  for (int i = 0; i < 1000 && ran < 2; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_GE(ran.load(), 2);
  pool.Stop();
  EXPECT_FALSE(pool.TrySubmit([] {}));
}

TEST(LogWriterTest, AppendsInOrderPerJobAndFlushWaitsForThem) {
  const fs::path dir = fs::temp_directory_path() / ("cohort_logwriter_" + std::to_string(getpid()));
  fs::remove_all(dir);
  auto store = std::move(LogStore::Open(dir.string())).value();
  {
    LogWriter writer(store.get());
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < 2000; ++i) writer.Append("job" + std::to_string(t), std::to_string(i) + "\n");
      });
    for (auto& th : threads) th.join();
    writer.Flush();
    for (int t = 0; t < 3; ++t) {
      auto text = store->ReadAll("job" + std::to_string(t));
      ASSERT_TRUE(text.ok());
      std::string expected;
      for (int i = 0; i < 2000; ++i) expected += std::to_string(i) + "\n";
      EXPECT_EQ(*text, expected) << "job" << t;
    }
    writer.Append("last", "written by the destructor\n");
  }
  EXPECT_EQ(*store->ReadAll("last"), "written by the destructor\n");
  fs::remove_all(dir);
}

// Worker chunks with offsets: what the log holds is written once, across a
// "head restart" (a second writer over the same store), and acknowledged.
TEST(LogWriterTest, ChunksSentAgainAreWrittenOnceAndAcknowledged) {
  const fs::path dir = fs::temp_directory_path() / ("cohort_logwriter_marks_" + std::to_string(getpid()));
  fs::remove_all(dir);
  auto store = std::move(LogStore::Open(dir.string())).value();
  {
    LogWriter writer(store.get());
    writer.AppendChunk("n1", "j", 0, 0, 0, "a0\n");
    writer.AppendChunk("n1", "j", 0, 1, 0, "b0\n");
    writer.AppendChunk("n1", "j", 0, 0, 3, "a1\n");
    writer.AppendChunk("n1", "j", 0, 0, 0, "a0\n");  // again: dropped
    writer.Flush();
    EXPECT_EQ(*store->ReadAll("j"), "a0\nb0\na1\n");
    auto acks = writer.TakeAcks();
    ASSERT_EQ(acks.size(), 2u);
    EXPECT_EQ(acks[0].node_id, "n1");
    EXPECT_EQ(acks[0].rank, 0);
    EXPECT_EQ(acks[0].offset, 6u);
    EXPECT_EQ(acks[1].rank, 1);
    EXPECT_EQ(acks[1].offset, 3u);
    EXPECT_TRUE(writer.TakeAcks().empty());
  }
  {
    LogWriter restarted(store.get());  // knows the marks from the store only
    restarted.AppendChunk("n1", "j", 0, 0, 3, "a1\na2\n");  // overlaps: only "a2\n" is new
    restarted.AppendChunk("n1", "j", 0, 1, 0, "b0\n");       // all old
    restarted.AppendChunk("n1", "j", 0, 1, 10, "b9\n");      // a gap of 7 bytes
    restarted.AppendChunk("n2", "j", 1, 0, 0, "c0\n");       // a new attempt
    restarted.Append("j", "cohort: a note\n");                // not a chunk: as is
    restarted.Flush();
    EXPECT_EQ(*store->ReadAll("j"),
              "a0\nb0\na1\na2\n"
              "cohort: 7 bytes of rank 1's output (attempt 0) never reached the head\n"
              "b9\nc0\ncohort: a note\n");
    auto acks = restarted.TakeAcks();
    ASSERT_EQ(acks.size(), 3u);
    EXPECT_EQ(acks[0].node_id, "n1");
    EXPECT_EQ(acks[0].offset, 9u);   // attempt 0 rank 0
    EXPECT_EQ(acks[1].offset, 13u);  // attempt 0 rank 1
    EXPECT_EQ(acks[2].node_id, "n2");
    EXPECT_EQ(acks[2].attempt, 1);
  }
  auto marks = store->ReadMarks("j");
  ASSERT_TRUE(marks.ok());
  ASSERT_EQ(marks->size(), 3u);
  EXPECT_EQ((*marks)[0].offset, 9u);
  EXPECT_EQ((*marks)[1].rank, 1);
  EXPECT_EQ((*marks)[1].offset, 13u);
  EXPECT_EQ((*marks)[2].attempt, 1);
  ASSERT_TRUE(store->Remove("j").ok());
  EXPECT_TRUE(store->ReadMarks("j")->empty());
  fs::remove_all(dir);
}

TEST(HttpStatusTest, OneMappingForEveryCode) {
  EXPECT_EQ(HttpStatusOf(Status::Ok()), 200);
  EXPECT_EQ(HttpStatusOf(Status::InvalidArgument("x")), 400);
  EXPECT_EQ(HttpStatusOf(Status::AlreadyExists("x")), 400);
  EXPECT_EQ(HttpStatusOf(Status::FailedPrecondition("x")), 400);
  EXPECT_EQ(HttpStatusOf(Status::NotFound("x")), 404);
  EXPECT_EQ(HttpStatusOf(Status::Unavailable("x")), 503);
  EXPECT_EQ(HttpStatusOf(Status::DeadlineExceeded("x")), 504);
  EXPECT_EQ(HttpStatusOf(Status::IoError("x")), 500);
  EXPECT_EQ(HttpStatusOf(Status::Internal("x")), 500);
}

}  // namespace
}  // namespace cohort::head
