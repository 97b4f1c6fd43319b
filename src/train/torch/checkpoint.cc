// Checkpoints and results for torch modules; see include/cohort/train/torch.h.
// Directory handling (temp dir, atomic commit, newest complete) is torch-free
// in src/train/checkpoint_dir.cc; this file only (de)serialises tensors.
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cohort/common/atomic_file.h"
#include "cohort/train/checkpoint_dir.h"
#include "cohort/train/remote_checkpoint.h"
#include "cohort/train/torch.h"

namespace cohort::train {
namespace {

namespace fs = std::filesystem;

Status SaveModelTo(const std::string& path, torch::nn::Module& module) {
  torch::serialize::OutputArchive archive;
  module.save(archive);
  std::ostringstream bytes;
  archive.save_to(bytes);
  return WriteFileAtomically(path, bytes.str());
}

// A private local directory for staging uploads and downloads; removed on scope exit.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = (fs::temp_directory_path() / "cohort-ckpt-XXXXXX").string();
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Status SaveCheckpointLocal(const std::string& root, const CheckpointState& state,
                           torch::nn::Module& module, torch::optim::Optimizer& optimizer);
Result<std::optional<CheckpointState>> LoadCheckpointFrom(const CheckpointInfo& info,
                                                          torch::nn::Module& module,
                                                          torch::optim::Optimizer& optimizer);

}  // namespace

// Where the module's tensors are: a checkpoint written on one device loads
// onto the device the module is on now (a GPU run resumed on the CPU, a
// model trained on cuda:1 loaded by a rank on cuda:0).
static torch::Device ModuleDevice(torch::nn::Module& module) {
  for (const auto& p : module.parameters()) return p.device();
  for (const auto& b : module.buffers()) return b.device();
  return torch::kCPU;
}

Status LoadModel(const std::string& path, torch::nn::Module& module) {
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path, ModuleDevice(module));
    module.load(archive);
    return Status::Ok();
  } catch (const c10::Error& e) {
    return Status::InvalidArgument("cannot load model " + path + ": " + e.what_without_backtrace());
  }
}

Status SaveCheckpoint(const std::string& root, const CheckpointState& state,
                      torch::nn::Module& module, torch::optim::Optimizer& optimizer) {
  if (!IsStorageUri(root)) return SaveCheckpointLocal(root, state, module, optimizer);
  // Object storage: build the checkpoint locally, then upload it (manifest last).
  ScratchDir scratch;
  if (!scratch.ok()) return Status::IoError("cannot create a staging directory for " + root);
  COHORT_RETURN_IF_ERROR(SaveCheckpointLocal(scratch.path(), state, module, optimizer));
  return UploadCheckpoint(scratch.path() + "/" + CheckpointDirName(state.epoch), root, state.epoch);
}

Result<std::optional<CheckpointState>> LoadLatestCheckpoint(const std::string& root,
                                                            torch::nn::Module& module,
                                                            torch::optim::Optimizer& optimizer) {
  if (!IsStorageUri(root)) {
    COHORT_ASSIGN_OR_RETURN(std::optional<CheckpointInfo> info, FindLatestCheckpoint(root));
    if (!info) return std::optional<CheckpointState>();
    return LoadCheckpointFrom(*info, module, optimizer);
  }
  ScratchDir scratch;
  if (!scratch.ok()) return Status::IoError("cannot create a download directory for " + root);
  COHORT_ASSIGN_OR_RETURN(std::optional<CheckpointInfo> info,
                          FindLatestRemoteCheckpoint(root, scratch.path()));
  if (!info) return std::optional<CheckpointState>();
  return LoadCheckpointFrom(*info, module, optimizer);
}

namespace {

Status SaveCheckpointLocal(const std::string& root, const CheckpointState& state,
                           torch::nn::Module& module, torch::optim::Optimizer& optimizer) {
  nlohmann::json extra = nlohmann::json::object();
  if (!state.extra_json.empty()) {
    extra = nlohmann::json::parse(state.extra_json, nullptr, false);
    if (extra.is_discarded() || !extra.is_object())
      return Status::InvalidArgument("checkpoint extra state is not a JSON object");
  }
  nlohmann::json doc = {{"epoch", state.epoch}, {"format", 1}, {"extra", extra}};
  COHORT_ASSIGN_OR_RETURN(std::string tmp_dir, BeginCheckpoint(root, state.epoch));
  try {
    COHORT_RETURN_IF_ERROR(SaveModelTo(tmp_dir + "/model.pt", module));
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    archive.save_to(tmp_dir + "/optimizer.pt");
  } catch (const c10::Error& e) {
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);
    return Status::IoError("cannot write checkpoint under " + root + ": " + e.what_without_backtrace());
  }
  return CommitCheckpoint(root, tmp_dir, state.epoch, doc.dump());
}

Result<std::optional<CheckpointState>> LoadCheckpointFrom(const CheckpointInfo& info_ref,
                                                          torch::nn::Module& module,
                                                          torch::optim::Optimizer& optimizer) {
  const CheckpointInfo* info = &info_ref;
  auto doc = nlohmann::json::parse(info->state_json, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("epoch"))
    return Status::InvalidArgument("checkpoint " + info->path + " has an unreadable state.json");
  COHORT_RETURN_IF_ERROR(LoadModel(info->path + "/model.pt", module));
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(info->path + "/optimizer.pt", ModuleDevice(module));
    optimizer.load(archive);
  } catch (const c10::Error& e) {
    return Status::InvalidArgument("cannot load optimizer state from " + info->path + ": " +
                                   e.what_without_backtrace());
  }
  CheckpointState state;
  state.epoch = doc["epoch"].get<int64_t>();
  state.extra_json = doc.value("extra", nlohmann::json::object()).dump();
  return std::optional<CheckpointState>(state);
}

}  // namespace

Status SaveResults(const std::string& dir, torch::nn::Module& module, const std::string& metrics_json) {
  if (IsStorageUri(dir)) {
    ScratchDir scratch;
    if (!scratch.ok()) return Status::IoError("cannot create a staging directory for " + dir);
    COHORT_RETURN_IF_ERROR(SaveResults(scratch.path(), module, metrics_json));
    return UploadDirectory(scratch.path(), dir, "metrics.json");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create results directory " + dir + ": " + ec.message());
  try {
    COHORT_RETURN_IF_ERROR(SaveModelTo(dir + "/model.pt", module));
  } catch (const c10::Error& e) {
    return Status::IoError("cannot write " + dir + "/model.pt: " + e.what_without_backtrace());
  }
  return WriteFileAtomic(dir + "/metrics.json", metrics_json);
}

}  // namespace cohort::train
