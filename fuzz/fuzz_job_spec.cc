// fuzz_job_spec: the head's POST /api/jobs/ body parser and the job record's
// JSON forms (include/cohort/jobs/job.h, src/jobs/).
//
// Input: a submit body, optionally followed by a NUL byte and "log text"
// (arbitrary bytes; a JSON body can never contain a raw NUL). The target
//   1. calls ParseSubmitRequest(body) — the function the head runs on every
//      submit — and checks that an error message is valid UTF-8 (the head
//      sends it back as the 400 body and logs it);
//   2. on success checks the documented round trips
//        ParseSubmitRequest(JobSpecToJson(s).dump()) == s
//        JobSpecFromJson(JobSpecToJson(s)) == s
//        JobRecordFromJson(parse(JobRecordToJson(r).dump())) == r
//      for a fresh record and after a PENDING -> RUNNING -> (restart) ->
//      FAILED lifecycle whose messages come from the log text
//      (FailedEntrypointMessage, Transition's UTF-8 repair), and that
//      JobDetailsJson(r).dump() succeeds (it is what GET /api/jobs/{id} sends);
//   3. checks the record invariants of job.h that the lifecycle must keep.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cohort/jobs/job.h"
#include "fuzz_common.h"

namespace {

using cohort::jobs::JobRecord;
using cohort::jobs::JobSpec;
using cohort::jobs::JobStatus;
using nlohmann::json;

void CheckRecordRoundTrip(const JobRecord& record, const char* when) {
  std::string text = cohort::jobs::JobRecordToJson(record).dump();
  auto back = cohort::jobs::JobRecordFromJson(json::parse(text));
  FUZZ_CHECK(back.ok(), std::string(when) + ": JobRecordFromJson refused its own output: " +
                            back.status().ToString() + "\n  " + text);
  FUZZ_CHECK(*back == record, std::string(when) + ": record round trip changed the record:\n  " + text +
                                  "\n  " + cohort::jobs::JobRecordToJson(*back).dump());
  (void)cohort::jobs::JobDetailsJson(record).dump();
}

void CheckInvariants(const JobRecord& r, const char* when) {
  FUZZ_CHECK(!r.message.empty(), std::string(when) + ": empty message");
  FUZZ_CHECK(cohort::fuzz::IsValidUtf8(r.message), std::string(when) + ": message is not UTF-8");
  FUZZ_CHECK(r.end_time_ms.has_value() == cohort::jobs::IsTerminal(r.status),
             std::string(when) + ": end_time_ms set iff terminal");
  FUZZ_CHECK(!r.end_time_ms || *r.end_time_ms >= r.start_time_ms, std::string(when) + ": end before start");
  FUZZ_CHECK(r.status == JobStatus::kFailed || !r.error_type, std::string(when) + ": error_type while not FAILED");
  FUZZ_CHECK(r.status == JobStatus::kPending || r.pending_reason.empty(),
             std::string(when) + ": pending_reason while not PENDING");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view body = input;
  std::string_view log_text;
  if (size_t nul = input.find('\0'); nul != std::string_view::npos) {
    body = input.substr(0, nul);
    log_text = input.substr(nul + 1);
  }

  auto parsed = cohort::jobs::ParseSubmitRequest(body);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == cohort::StatusCode::kInvalidArgument, parsed.status().ToString());
    FUZZ_CHECK(cohort::fuzz::IsValidUtf8(parsed.status().message()),
               "error message is not UTF-8: " + parsed.status().message());
    return 0;
  }
  const JobSpec& spec = *parsed;
  FUZZ_CHECK(!spec.submission_id.empty(), "no submission id");

  // The spec's own JSON form parses back to the same spec.
  json spec_json = cohort::jobs::JobSpecToJson(spec);
  std::string spec_text = spec_json.dump();
  auto again = cohort::jobs::ParseSubmitRequest(spec_text);
  FUZZ_CHECK(again.ok(), "JobSpecToJson output refused: " + again.status().ToString() + "\n  " + spec_text);
  FUZZ_CHECK(*again == spec, "spec round trip through the submit body changed it:\n  " + spec_text);
  auto from_json = cohort::jobs::JobSpecFromJson(spec_json);
  FUZZ_CHECK(from_json.ok() && *from_json == spec, "JobSpecFromJson(JobSpecToJson(s)) != s:\n  " + spec_text);

  // A record through its lifecycle, persisted at every step.
  JobRecord record = cohort::jobs::NewJobRecord(spec, 1000);
  CheckInvariants(record, "new");
  CheckRecordRoundTrip(record, "new");
  (void)record.spec.entrypoint_resources.ToDemand().ToString();

  FUZZ_CHECK(cohort::jobs::Transition(record, JobStatus::kRunning, "", 2000).ok(), "PENDING -> RUNNING refused");
  record.workers.push_back({0, "node-1", "RUNNING", 4242, std::nullopt});
  record.driver_node_id = "node-1";
  record.internal["rendezvous_port"] = 29500;
  CheckInvariants(record, "running");
  CheckRecordRoundTrip(record, "running");

  if (cohort::jobs::CanRestart(record)) {
    std::string why = cohort::jobs::FailedEntrypointMessage(1, log_text);
    FUZZ_CHECK(cohort::jobs::Transition(record, JobStatus::kPending, why, 3000).ok(), "restart refused");
    FUZZ_CHECK(record.attempt == 1 && record.workers.empty(), "restart did not bump attempt / clear workers");
    record.pending_reason = std::string(log_text.substr(0, 64));
    if (!cohort::fuzz::IsValidUtf8(record.pending_reason)) record.pending_reason = "waiting";
    CheckInvariants(record, "restarted");
    CheckRecordRoundTrip(record, "restarted");
    FUZZ_CHECK(cohort::jobs::Transition(record, JobStatus::kRunning, log_text, 4000).ok(), "rerun refused");
  }
  std::string failed = cohort::jobs::FailedEntrypointMessage(3, log_text);
  FUZZ_CHECK(cohort::jobs::Transition(record, JobStatus::kFailed, failed, 5000,
                                      cohort::jobs::kErrorEntrypointCommandError)
                 .ok(),
             "RUNNING -> FAILED refused");
  CheckInvariants(record, "failed");
  CheckRecordRoundTrip(record, "failed");
  // Terminal: nothing leaves it, and a refused transition changes nothing.
  JobRecord before = record;
  FUZZ_CHECK(!cohort::jobs::Transition(record, JobStatus::kRunning, log_text, 6000).ok(), "left a terminal status");
  FUZZ_CHECK(record == before, "a refused transition changed the record");
  return 0;
}
