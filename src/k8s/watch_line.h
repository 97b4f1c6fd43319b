// One line of a Kubernetes watch stream decoded the way KubeClient::Watch
// does it; a private header so that tests/k8s and fuzz/fuzz_k8s_json.cc run
// the real decoding. Watch calls it from inside libcurl's write callback,
// where an exception must never escape: it does not throw.
#pragma once

#include <string>

#include "cohort/common/status.h"
#include "cohort/k8s/kube_client.h"

namespace cohort::k8s {

struct WatchLine {
  enum class Kind {
    kBlank,  // only whitespace: skipped
    kEvent,  // `event` holds an event for the handler
    kEnd,    // the watch ends with `status`
  };
  Kind kind = Kind::kBlank;
  // kEvent: `type` is a string other than ERROR, `object` a JSON object.
  WatchEvent event;
  // kEnd: Internal "<what>: bad event line: ..." for a line that is not JSON,
  // not an object, or lacks a string type or an object; for an ERROR event,
  // the ApiError of its Status object's code (500 when it has none in
  // 100..599): 410 is IsGone. An ERROR event whose object is not an object
  // is Internal.
  Status status;
};

// `what` ("watch <path>") starts the error messages.
WatchLine DecodeWatchLine(const std::string& line, const std::string& what) noexcept;

}  // namespace cohort::k8s
