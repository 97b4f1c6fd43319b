// fuzz_kubeconfig: the kubeconfig reader of the operator
// (k8s::LoadKubeconfig, include/cohort/k8s/kube_client.h), which
// `cohort operator --kubeconfig FILE` and DefaultConfig ($KUBECONFIG,
// ~/.kube/config) call.
//
// Input: the kubeconfig file (YAML). LoadKubeconfig takes a path, so the
// target writes the bytes into one memfd and passes its /proc/self/fd path.
// It also calls it with an explicit context name ("ctx"). Properties checked:
// the result is a config or InvalidArgument naming the file; a config has a
// server.
//
// LoadKubeconfig reads every field with its type checked (a mapping where a
// string is expected, "insecure-skip-tls-verify: maybe" are InvalidArgument),
// so any exception out of it, e.g. yaml-cpp's BadConversion, is a finding.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cohort/k8s/kube_client.h"
#include "fuzz_common.h"

namespace {

void Check(const cohort::Result<cohort::k8s::KubeConfig>& r, const std::string& path) {
  if (r.ok()) {
    FUZZ_CHECK(!r->server.empty(), "a kubeconfig without a server was accepted");
    return;
  }
  FUZZ_CHECK(r.status().code() == cohort::StatusCode::kInvalidArgument, r.status().ToString());
  FUZZ_CHECK(r.status().message().find(path) != std::string::npos, "the error does not name the file");
}

void Load(const std::string& path, const std::string& context) {
  Check(cohort::k8s::LoadKubeconfig(path, context), path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("kubeconfig", MFD_CLOEXEC);
  FUZZ_CHECK(fd >= 0, "memfd_create failed");
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
  Load(path, "");
  Load(path, "ctx");
  return 0;
}
