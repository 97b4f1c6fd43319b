// `cohort run` the way a new user runs it from a project directory: the
// entrypoint runs where the command is typed (relative paths work), the
// per-rank scratch dir is in COHORT_SCRATCH_DIR, results land in
// ./cohort_results/<job id>/ and survive the run, and a command that does not
// exist fails saying so.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "integration/cluster_harness.h"

namespace cohort::itest {
namespace {

bool Has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// `cohort run ARGS` in `dir`, with no token or state dir from the caller.
CmdResult RunIn(const std::string& dir, const std::string& args) {
  return Sh("cd " + ShellQuote(dir) + " && env -u COHORT_TOKEN -u COHORT_TOKEN_FILE -u COHORT_STATE_DIR " +
                ShellQuote(kCohort) + " run --dashboard-port 0 --num-cpus 2 " + args,
            120);
}

class CohortRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(c_.dir().empty());
    project_ = c_.dir() + "/project";
    fs::create_directories(project_ + "/bin");
    // What a trainer does: write its results into $COHORT_RESULTS_DIR.
    WriteFile(project_ + "/bin/train.sh",
              "#!/bin/sh\n"
              "echo \"rank $RANK cwd=$(pwd) scratch=$COHORT_SCRATCH_DIR\"\n"
              "test -d \"$COHORT_SCRATCH_DIR\" || { echo no scratch dir; exit 3; }\n"
              "mkdir -p \"$COHORT_RESULTS_DIR\" && echo 42 > \"$COHORT_RESULTS_DIR/answer-${RANK:-0}.txt\"\n");
    ::chmod((project_ + "/bin/train.sh").c_str(), 0755);
  }
  LocalCluster c_;  // only its temp dir
  std::string project_;
};

TEST_F(CohortRunTest, RunsWhereTheCommandIsTypedAndKeepsTheResults) {
  auto run = RunIn(project_, "--workers 2 --submission-id first-hour -- bin/train.sh");
  ASSERT_EQ(run.code, 0) << run.out;
  EXPECT_TRUE(Has(run.out, "rank 0 cwd=" + project_ + " ")) << run.out;
  EXPECT_TRUE(Has(run.out, "rank 1 cwd=" + project_ + " ")) << run.out;
  EXPECT_TRUE(Has(run.out, "/attempt-0/rank-1")) << "the scratch dir is per rank:\n" << run.out;
  const std::string results = project_ + "/cohort_results/first-hour";
  EXPECT_EQ(ReadFile(results + "/answer-0.txt"), "42\n");
  EXPECT_EQ(ReadFile(results + "/answer-1.txt"), "42\n");
  EXPECT_TRUE(Has(run.out, "results: " + results + "\n")) << run.out;
}

TEST_F(CohortRunTest, ResultsDirFlagAndAGeneratedId) {
  auto run = RunIn(project_, "--results-dir ../elsewhere -- bin/train.sh");
  ASSERT_EQ(run.code, 0) << run.out;
  // One folder per job, named after its (generated) id.
  std::vector<fs::path> jobs;
  for (const auto& e : fs::directory_iterator(c_.dir() + "/elsewhere")) jobs.push_back(e.path());
  ASSERT_EQ(jobs.size(), 1u) << run.out;
  EXPECT_EQ(jobs[0].filename().string().rfind("raysubmit_", 0), 0u) << jobs[0];
  EXPECT_EQ(ReadFile(jobs[0].string() + "/answer-0.txt"), "42\n");
  EXPECT_FALSE(fs::exists(project_ + "/cohort_results"));
  // A job that writes nothing says so instead of naming an empty folder.
  auto quiet = RunIn(project_, "-- true");
  ASSERT_EQ(quiet.code, 0) << quiet.out;
  EXPECT_TRUE(Has(quiet.out, "results: none (the job wrote nothing")) << quiet.out;
  // --results-dir and --results-uri do not go together.
  auto both = RunIn(project_, "--results-dir a --results-uri file:///tmp/b -- true");
  EXPECT_NE(both.code, 0) << both.out;
}

TEST_F(CohortRunTest, AMissingCommandSaysItWasNotFound) {
  auto run = RunIn(project_, "-- bin/no-such-trainer --epochs 1");
  EXPECT_EQ(run.code, 1) << run.out;
  EXPECT_TRUE(Has(run.out, "exited with code 127")) << run.out;
  EXPECT_TRUE(Has(run.out, "the entrypoint's command was not found")) << run.out;
}

}  // namespace
}  // namespace cohort::itest
