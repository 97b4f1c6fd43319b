// Progress of a training job from its metric reports, for `cohort job
// submit` / `cohort job logs --follow`:
//
//   epoch 3/10 [######--------------] 30% ETA 0:42 loss 0.5123
//
// ProgressTracker folds the job's reports ({"rank":R,"time":T,"epoch":E,
// "epochs":N,"step":S,"steps":M,"train_loss":...}, see cohort/train/report.h)
// into a ProgressSnapshot; RenderProgress turns a snapshot into that line
// (pure); ProgressPrinter interleaves log text and the line on a terminal
// (the line redrawn in place at the bottom) or, when the output is not a
// terminal, prints the line as a plain "progress: ..." line whenever the job
// moves on.
//
// How reports are read:
//  - Only the lowest rank that reports is followed (rank 0 normally).
//  - "epochs" (or "num_epochs"/"total_epochs") and "steps" (or
//    "total_steps"/"num_steps") are totals; "epoch" and "step" positions.
//  - A report with an epoch but no step means that epoch is complete:
//    epoch 3 of 10 is 30%. A report with a step inside an epoch means step S
//    of M of epoch E is done: ((E-1) + S/M) / N. Epochs count from 1 unless
//    the job ever reports epoch 0, then from 0.
//  - Without epoch totals, step/steps alone give the fraction.
//  - The loss shown is "loss", else "train_loss", else the first key ending
//    in "loss"; the last one seen is kept.
//  - ETA: the rate between the first and the latest report of the run (or
//    from SetStartTime's time when only one report is in); progress going
//    backwards (a restart from a checkpoint) starts a new run.
//
// Thread-compatible; ProgressPrinter writes through the given writer only.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace cohort::cli {

struct ProgressSnapshot {
  std::optional<double> epoch;   // as displayed (1-based)
  std::optional<double> epochs;
  std::optional<double> step;
  std::optional<double> steps;
  std::optional<double> fraction;     // 0..1 when totals are known
  std::optional<double> eta_seconds;  // when a rate is known
  std::string loss_name;              // "loss" for loss/train_loss, else the key
  std::optional<double> loss;

  bool empty() const { return !epoch && !step; }
};

// "0:42", "12:05", "1:02:03" (seconds rounded; negative as 0).
std::string FormatDuration(double seconds);

// The progress line. bar_width > 0 draws "[###---]" of that many cells;
// 0 leaves the bar out (plain output). "" for an empty snapshot.
std::string RenderProgress(const ProgressSnapshot& snapshot, int bar_width);

// Fits RenderProgress into `columns` (a terminal's width): shrinks the bar
// down to 10 cells, then drops it, then cuts the line.
std::string RenderProgressFitted(const ProgressSnapshot& snapshot, int columns);

class ProgressTracker {
 public:
  // Folds in one report (non-objects and reports without progress keys only
  // update the loss). Returns whether the followed progress changed.
  bool Add(const nlohmann::ordered_json& report);
  // Unix seconds at which the job started running: the origin of the rate
  // while only one report of the run is in.
  void SetStartTime(double unix_seconds) { start_time_ = unix_seconds; }

  bool has_progress() const;
  // The state as of `now` (unix seconds; the ETA counts down from the
  // latest report's time).
  ProgressSnapshot Snapshot(double now) const;

 private:
  struct RankState {
    std::optional<double> epoch, epochs, step, steps;
    bool step_in_report = false;  // the latest progress report had a step
    std::string loss_name;
    std::optional<double> loss;
    double last_time = 0;
    // (time, fraction) of the first and latest report of the current run.
    std::optional<std::pair<double, double>> first, last;
  };
  std::optional<double> Fraction(const RankState& s) const;

  std::map<int, RankState> ranks_;
  bool zero_based_epochs_ = false;
  std::optional<double> start_time_;
};

// Writes log text and the progress line to one output.
class ProgressPrinter {
 public:
  using Writer = std::function<void(std::string_view)>;
  // `tty`: redraw one line in place (columns wide); otherwise plain lines
  // (only if plain_progress; else no progress output at all).
  ProgressPrinter(Writer writer, bool tty, int columns, bool plain_progress = true);
  // For stdout: a terminal's width from TIOCGWINSZ (COLUMNS, else 80).
  static ProgressPrinter ForStdout(bool plain_progress = true);

  // Log text as it arrives (any chunking). With a bar on screen only whole
  // lines are written (the rest waits for its newline), below which the bar
  // is drawn again.
  void Log(std::string_view text);
  // A line of the CLI's own (not the job's), e.g. a status change.
  void Note(std::string_view line);
  // Redraws (terminal) or prints a plain line when the job moved on.
  void Update(const ProgressTracker& tracker, double now);
  // Clears the bar, writes any held partial log line and leaves the cursor
  // at the start of a line.
  void Finish();

  bool tty() const { return tty_; }

 private:
  void EraseBar();
  void DrawBar();
  void WriteRaw(std::string_view text);

  Writer writer_;
  bool tty_;
  int columns_;
  bool plain_progress_;
  bool at_line_start_ = true;  // the last byte written was '\n' (or nothing yet)
  bool bar_active_ = false;    // a progress line exists (terminal mode)
  bool bar_drawn_ = false;     // ... and is on screen now
  std::string bar_line_;
  std::string held_;           // partial log line waiting for its newline
  // Plain mode: what was printed last, and when.
  std::optional<double> plain_epoch_, plain_step_;
  double plain_time_ = 0;
  bool plain_done_ = false;
  bool plain_printed_ = false;
};

}  // namespace cohort::cli
