// Reporter: the metrics channel from a training rank to whoever launched it.
//
// Each Report() is one JSON object on one line,
//   {"rank":R,"time":<unix seconds>,"<name>":value,...}
// written with a single write(2) (so lines from several ranks appending to
// one file do not interleave). The destination comes from COHORT_REPORT_PATH:
// a Unix-domain stream socket (the launcher listening) is connected to, any
// other path is a file opened for append (created if needed); unset means
// stdout. The destination is opened on first use, and again after a failed
// write, so a report that cannot be delivered is a Status naming the path
// rather than a dead process. Called by the trainer's epoch loop; thread-safe
// (an internal mutex serializes the lines).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cohort/common/status.h"

namespace cohort::train {

inline constexpr const char* kReportPathEnv = "COHORT_REPORT_PATH";

class Reporter {
 public:
  // Destination from $COHORT_REPORT_PATH (stdout when unset or empty).
  static Reporter FromEnv(int rank);
  // Destination `path`: a Unix socket or a file; "" means stdout.
  static Reporter ForPath(std::string path, int rank);

  Reporter(Reporter&&) noexcept;
  Reporter& operator=(Reporter&&) noexcept;
  ~Reporter();

  // Opens the destination now instead of at the first report.
  Status Open();

  // One line {"rank":R,"time":T,"name":value,...}; NaN and infinities are
  // written as null. "rank" and "time" are reserved: a metric with either
  // name is InvalidArgument.
  Status Report(const std::vector<std::pair<std::string, double>>& metrics);

  // For callers that build their own object: `json_object_line` must parse as
  // one JSON object; it is re-serialized onto one line, with "rank" and
  // "time" put first when it lacks them.
  Status ReportJson(const std::string& json_object_line);

  int rank() const;
  // The path, or "<stdout>".
  std::string destination() const;

 private:
  struct State;
  explicit Reporter(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace cohort::train
