// The one place where gRPC status codes and cohort::Status map onto each other.
//
// Used by the gRPC glue in src/net/rpc/ only (this header includes gRPC).
// Pure functions; thread-safe.
#pragma once

#include <string_view>

#include <grpcpp/support/status.h>

#include "cohort/common/status.h"

namespace cohort::rpc {

// `what` names the call for the message, e.g. "GetPackage gcs://x.zip".
// OK maps to OK; UNAUTHENTICATED and PERMISSION_DENIED become
// FailedPrecondition (a configuration problem, retrying will not help).
Status FromGrpcStatus(const grpc::Status& status, std::string_view what);

grpc::Status ToGrpcStatus(const Status& status);

}  // namespace cohort::rpc
