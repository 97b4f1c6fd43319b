// Checkpoints and results in object storage through the torch API:
// SaveCheckpoint / LoadLatestCheckpoint / SaveResults with mem:// (the
// in-process store) and file:// roots. Round trip (parameters and optimizer
// momentum), newest epoch chosen, a checkpoint without MANIFEST.json (a
// crash mid-upload) or whose manifest lists a wrong size is skipped, results
// land as model.pt + metrics.json with metrics.json written last.
// Then end to end with real processes against s3rver (npm; skipped with a
// message when node/npm or the registry are missing): `cohort launch -n 2`
// of fashion_mnist with --checkpoint-dir / --results-dir on s3://, resumed
// with --resume, and the objects listed by `cohort storage ls -r`.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "cohort/storage/blob_store.h"
#include "cohort/train/remote_checkpoint.h"
#include "cohort/train/torch.h"
#include "storage/s3_testing.h"

namespace cohort::train {
namespace {

namespace fs = std::filesystem;
using storage::BlobStore;
using storage::ParseUri;
using storage::Uri;

torch::nn::Sequential TinyModel(uint64_t seed) {
  torch::manual_seed(seed);
  return torch::nn::Sequential(torch::nn::Linear(6, 5), torch::nn::ReLU(), torch::nn::Linear(5, 3));
}

double MaxDiff(torch::nn::Module& a, torch::nn::Module& b) {
  double worst = 0;
  auto pa = a.parameters(), pb = b.parameters();
  for (size_t i = 0; i < pa.size(); ++i) worst = std::max(worst, (pa[i] - pb[i]).abs().max().item<double>());
  return worst;
}

// One SGD step with momentum so that the optimizer has state worth saving.
void Step(torch::nn::Sequential& model, torch::optim::Optimizer& opt, uint64_t seed) {
  torch::manual_seed(seed);
  opt.zero_grad();
  auto out = model->forward(torch::randn({4, 6}));
  torch::nn::functional::cross_entropy(out, torch::tensor({0, 1, 2, 0})).backward();
  opt.step();
}

torch::optim::SGD MakeOpt(torch::nn::Module& model) {
  return torch::optim::SGD(model.parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
}

std::shared_ptr<BlobStore> StoreOf(const std::string& uri) {
  auto parsed = ParseUri(uri);
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
  auto store = storage::OpenStore(*parsed);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return *store;
}

// ---- mem:// and file:// roots ------------------------------------------------

class RemoteCheckpointTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const std::string unique = std::to_string(getpid()) + "_" + std::to_string(counter++);
    local_ = fs::temp_directory_path() / ("cohort_remote_ckpt_" + unique);
    fs::remove_all(local_);
    fs::create_directories(local_);
    if (GetParam() == "mem")
      base_ = "mem://ckpt-test/" + unique;
    else
      base_ = "file://" + (local_ / "store").string();
    root_ = base_ + "/ckpt";
  }
  void TearDown() override { fs::remove_all(local_); }

  // Object <root>/<rel>.
  Uri Obj(const std::string& rel) const { return *ParseUri(root_ + "/" + rel); }

  fs::path local_;      // scratch for this test (and the file:// store)
  std::string base_;    // a fresh prefix in the store
  std::string root_;    // checkpoint root URI under base_
};

TEST_P(RemoteCheckpointTest, RoundTripRestoresParametersAndMomentum) {
  auto model = TinyModel(7);
  auto opt = MakeOpt(*model);
  Step(model, opt, 1);
  ASSERT_TRUE(SaveCheckpoint(root_, {3, R"({"seed": 5})"}, *model, opt).ok());

  // What landed: the checkpoint's files and a manifest describing them.
  auto store = StoreOf(root_);
  auto manifest_text = store->GetToBuffer(Obj("checkpoint_000003/MANIFEST.json").bucket,
                                          Obj("checkpoint_000003/MANIFEST.json").key, {});
  ASSERT_TRUE(manifest_text.ok()) << manifest_text.status().ToString();
  auto manifest = nlohmann::json::parse(*manifest_text);
  EXPECT_EQ(manifest["epoch"].get<int64_t>(), 3);
  std::set<std::string> names;
  for (const auto& f : manifest["files"]) {
    names.insert(f["name"].get<std::string>());
    auto st = store->Stat(Obj("checkpoint_000003/" + f["name"].get<std::string>()).bucket,
                          Obj("checkpoint_000003/" + f["name"].get<std::string>()).key);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    EXPECT_EQ(st->size_bytes, f["size_bytes"].get<uint64_t>());
  }
  EXPECT_TRUE(names.count("model.pt") && names.count("optimizer.pt") && names.count("state.json"))
      << *manifest_text;

  auto restored = TinyModel(99);
  auto restored_opt = MakeOpt(*restored);
  ASSERT_GT(MaxDiff(*model, *restored), 0.0);
  auto loaded = LoadLatestCheckpoint(root_, *restored, restored_opt);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->epoch, 3);
  EXPECT_NE((*loaded)->extra_json.find("\"seed\":5"), std::string::npos) << (*loaded)->extra_json;
  EXPECT_EQ(MaxDiff(*model, *restored), 0.0);
  // Momentum restored: the next step from both is identical (without the
  // momentum buffers the restored model would take a plain gradient step).
  Step(model, opt, 2);
  Step(restored, restored_opt, 2);
  EXPECT_EQ(MaxDiff(*model, *restored), 0.0);
}

TEST_P(RemoteCheckpointTest, NoCheckpointUnderAnEmptyRoot) {
  auto model = TinyModel(7);
  auto opt = MakeOpt(*model);
  auto loaded = LoadLatestCheckpoint(root_, *model, opt);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_FALSE(loaded->has_value());
}

TEST_P(RemoteCheckpointTest, NewestOfTwoEpochsIsChosen) {
  auto first = TinyModel(7);
  auto first_opt = MakeOpt(*first);
  Step(first, first_opt, 1);
  ASSERT_TRUE(SaveCheckpoint(root_, {1, "{}"}, *first, first_opt).ok());
  auto second = TinyModel(8);
  auto second_opt = MakeOpt(*second);
  Step(second, second_opt, 1);
  ASSERT_TRUE(SaveCheckpoint(root_, {2, "{}"}, *second, second_opt).ok());

  auto restored = TinyModel(99);
  auto restored_opt = MakeOpt(*restored);
  auto loaded = LoadLatestCheckpoint(root_, *restored, restored_opt);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->epoch, 2);
  EXPECT_EQ(MaxDiff(*second, *restored), 0.0);
  EXPECT_GT(MaxDiff(*first, *restored), 0.0);
}

TEST_P(RemoteCheckpointTest, CheckpointWithoutManifestIsSkipped) {
  auto old = TinyModel(7);
  auto old_opt = MakeOpt(*old);
  ASSERT_TRUE(SaveCheckpoint(root_, {1, "{}"}, *old, old_opt).ok());
  auto good = TinyModel(8);
  auto good_opt = MakeOpt(*good);
  Step(good, good_opt, 1);
  ASSERT_TRUE(SaveCheckpoint(root_, {2, "{}"}, *good, good_opt).ok());

  // Epoch 3 crashed mid-upload: its files went up, its manifest never did.
  auto crashed = TinyModel(9);
  auto crashed_opt = MakeOpt(*crashed);
  const fs::path staged = local_ / "staged";
  ASSERT_TRUE(SaveCheckpoint(staged.string(), {3, "{}"}, *crashed, crashed_opt).ok());
  auto store = StoreOf(root_);
  int uploaded = 0;
  for (const auto& entry : fs::directory_iterator(staged / CheckpointDirName(3))) {
    const Uri obj = Obj(CheckpointDirName(3) + "/" + entry.path().filename().string());
    auto put = store->PutFile(obj.bucket, obj.key, entry.path().string(), {});
    ASSERT_TRUE(put.ok()) << put.status().ToString();
    ++uploaded;
  }
  ASSERT_GE(uploaded, 3);
  ASSERT_FALSE(store->Stat(Obj("checkpoint_000003/MANIFEST.json").bucket,
                           Obj("checkpoint_000003/MANIFEST.json").key).ok());
  ASSERT_TRUE(store->Stat(Obj("checkpoint_000003/model.pt").bucket, Obj("checkpoint_000003/model.pt").key).ok());

  auto restored = TinyModel(99);
  auto restored_opt = MakeOpt(*restored);
  auto loaded = LoadLatestCheckpoint(root_, *restored, restored_opt);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->epoch, 2);
  EXPECT_EQ(MaxDiff(*good, *restored), 0.0);
}

TEST_P(RemoteCheckpointTest, ManifestListingAWrongSizeIsSkipped) {
  auto good = TinyModel(8);
  auto good_opt = MakeOpt(*good);
  Step(good, good_opt, 1);
  ASSERT_TRUE(SaveCheckpoint(root_, {2, "{}"}, *good, good_opt).ok());
  auto bad = TinyModel(9);
  auto bad_opt = MakeOpt(*bad);
  ASSERT_TRUE(SaveCheckpoint(root_, {3, "{}"}, *bad, bad_opt).ok());

  // Epoch 3's manifest now claims model.pt is one byte longer than the object.
  auto store = StoreOf(root_);
  const Uri manifest_uri = Obj("checkpoint_000003/MANIFEST.json");
  auto text = store->GetToBuffer(manifest_uri.bucket, manifest_uri.key, {});
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  auto manifest = nlohmann::json::parse(*text);
  bool changed = false;
  for (auto& f : manifest["files"])
    if (f["name"] == "model.pt") {
      f["size_bytes"] = f["size_bytes"].get<uint64_t>() + 1;
      changed = true;
    }
  ASSERT_TRUE(changed) << *text;
  ASSERT_TRUE(store->PutBuffer(manifest_uri.bucket, manifest_uri.key, manifest.dump(), {}).ok());

  auto restored = TinyModel(99);
  auto restored_opt = MakeOpt(*restored);
  auto loaded = LoadLatestCheckpoint(root_, *restored, restored_opt);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->epoch, 2);
  EXPECT_EQ(MaxDiff(*good, *restored), 0.0);
}

TEST_P(RemoteCheckpointTest, SaveResultsWritesModelThenMetrics) {
  auto model = TinyModel(7);
  const std::string results = base_ + "/results";
  const std::string metrics = R"({"test_accuracy": 0.5})";
  ASSERT_TRUE(SaveResults(results, *model, metrics).ok());

  auto store = StoreOf(results);
  const Uri model_uri = *ParseUri(results + "/model.pt");
  const Uri metrics_uri = *ParseUri(results + "/metrics.json");
  auto got_metrics = store->GetToBuffer(metrics_uri.bucket, metrics_uri.key, {});
  ASSERT_TRUE(got_metrics.ok()) << got_metrics.status().ToString();
  EXPECT_EQ(*got_metrics, metrics);
  auto model_info = store->Stat(model_uri.bucket, model_uri.key);
  ASSERT_TRUE(model_info.ok()) << model_info.status().ToString();
  auto metrics_info = store->Stat(metrics_uri.bucket, metrics_uri.key);
  ASSERT_TRUE(metrics_info.ok()) << metrics_info.status().ToString();
  // Generations count up per write in mem://; file:// reports the mtime (ns).
  if (GetParam() == "mem")
    EXPECT_GT(metrics_info->generation, model_info->generation) << "metrics.json must be written last";
  else
    EXPECT_GE(metrics_info->generation, model_info->generation) << "metrics.json must be written last";

  // Nothing else (no staging leftovers) under the results prefix.
  storage::ListOptions list;
  list.prefix = model_uri.key.substr(0, model_uri.key.rfind('/') + 1);
  auto listed = store->List(model_uri.bucket, list);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->objects.size(), 2u);

  // The uploaded model.pt loads back into the same parameters.
  const std::string local_model = (local_ / "model.pt").string();
  ASSERT_TRUE(store->GetToFile(model_uri.bucket, model_uri.key, local_model, {}).ok());
  auto loaded = TinyModel(99);
  ASSERT_TRUE(LoadModel(local_model, *loaded).ok());
  EXPECT_EQ(MaxDiff(*model, *loaded), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Schemes, RemoteCheckpointTest, ::testing::Values("mem", "file"),
                         [](const auto& info) { return info.param; });

// ---- end to end: cohort launch + fashion_mnist against s3rver ----------------

namespace t = storage::testing;
const std::string kBin = COHORT_BIN_DIR;
const std::string kData = "/usr/share/datasets/fashion-mnist";
constexpr char kBucket[] = "test-bucket";

class S3TrainingE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = new std::string;
    if (!fs::exists(kData + "/train-images-idx3-ubyte.gz")) {
      *skip_reason_ = "dataset-fashion-mnist is not installed (scripts/setup installs it)";
      return;
    }
    const std::string tools = t::EnsureS3Tools(skip_reason_);
    if (tools.empty()) return;
    server_ = new t::S3rver(tools, kBucket);
    if (!server_->running()) {
      *skip_reason_ = server_->error();
      FAIL() << *skip_reason_;
    }
    port_ = server_->port();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete skip_reason_;
    skip_reason_ = nullptr;
  }
  void SetUp() override {
    if (server_ == nullptr || !server_->running()) GTEST_SKIP() << *skip_reason_;
  }

  // The environment every command below runs with.
  static std::string Env() {
    return "NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost AWS_ENDPOINT_URL=http://127.0.0.1:" +
           std::to_string(port_) +
           " AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1 "
           "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 COHORT_COMM_TIMEOUT_MS=60000 ";
  }
  // Runs cmd (through the shell) with Env(); stdout and stderr together.
  static t::CommandResult Run(const std::string& cmd) {
    return t::RunCommand("env -u AWS_ENDPOINT_URL_S3 -u AWS_SESSION_TOKEN -u AWS_PROFILE " + Env() + cmd +
                         " 2>&1");
  }

  static inline std::string* skip_reason_ = nullptr;
  static inline t::S3rver* server_ = nullptr;
  static inline int port_ = 0;
};

TEST_F(S3TrainingE2E, CheckpointsAndResultsGoToS3AndTheRunResumesFromThem) {
  const std::string train = kBin + "/cohort launch -n 2 -- " + kBin +
                            "/fashion_mnist --train-subset 2048 --lr 0.05 --threads 1 "
                            "--checkpoint-dir s3://test-bucket/run1/ckpt --results-dir s3://test-bucket/run1/results";
  auto first = Run(train + " --epochs 1");
  ASSERT_EQ(first.exit_code, 0) << first.out;
  EXPECT_NE(first.out.find("epoch=1/1"), std::string::npos) << first.out;
  EXPECT_NE(first.out.find("results written to s3://test-bucket/run1/results"), std::string::npos) << first.out;

  auto resumed = Run(train + " --epochs 2 --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("resuming from checkpoint after epoch 1"), std::string::npos) << resumed.out;
  EXPECT_EQ(resumed.out.find("epoch=1/2"), std::string::npos) << "epoch 1 ran again:\n" << resumed.out;
  EXPECT_NE(resumed.out.find("epoch=2/2"), std::string::npos) << resumed.out;

  auto ls = Run(kBin + "/cohort storage ls -r s3://test-bucket/run1/");
  ASSERT_EQ(ls.exit_code, 0) << ls.out;
  for (const char* obj : {"s3://test-bucket/run1/ckpt/checkpoint_000001/MANIFEST.json",
                          "s3://test-bucket/run1/ckpt/checkpoint_000001/model.pt",
                          "s3://test-bucket/run1/ckpt/checkpoint_000002/MANIFEST.json",
                          "s3://test-bucket/run1/ckpt/checkpoint_000002/model.pt",
                          "s3://test-bucket/run1/ckpt/checkpoint_000002/optimizer.pt",
                          "s3://test-bucket/run1/ckpt/checkpoint_000002/state.json",
                          "s3://test-bucket/run1/results/model.pt", "s3://test-bucket/run1/results/metrics.json"})
    EXPECT_NE(ls.out.find(obj), std::string::npos) << obj << " not listed:\n" << ls.out;

  // The results are those of the resumed two-epoch run.
  auto cat = Run(kBin + "/cohort storage cat s3://test-bucket/run1/results/metrics.json");
  ASSERT_EQ(cat.exit_code, 0) << cat.out;
  auto metrics = nlohmann::json::parse(cat.out, nullptr, false);
  ASSERT_TRUE(metrics.is_object()) << cat.out;
  EXPECT_EQ(metrics["epochs"].size(), 2u);
  EXPECT_EQ(metrics["world_size"].get<int>(), 2);
}

}  // namespace
}  // namespace cohort::train
