// Status -> HTTP status, in one place. Every API answer of the head that is
// an error goes through HttpStatusOf, so a StatusCode means the same HTTP
// status on every route (docs/api.md, "Errors").
#pragma once

#include "cohort/common/status.h"

namespace cohort::head {

// kOk 200; kInvalidArgument, kFailedPrecondition, kAlreadyExists 400 (Ray's
// job API answers a duplicate submission_id and a delete of a running job
// with 400); kNotFound 404; kUnavailable 503; kDeadlineExceeded 504;
// kCancelled 499; kIoError, kInternal 500.
int HttpStatusOf(const Status& status);

}  // namespace cohort::head
