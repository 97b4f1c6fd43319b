// Progress tracking and rendering; see cli/progress.h.
#include "cli/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace cohort::cli {
namespace {

using Json = nlohmann::ordered_json;

std::optional<double> Number(const Json& report, const char* key) {
  auto it = report.find(key);
  if (it == report.end() || !it->is_number()) return std::nullopt;
  double v = it->get<double>();
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<double> FirstNumber(const Json& report, std::initializer_list<const char*> keys) {
  for (const char* key : keys) {
    if (auto v = Number(report, key)) return v;
  }
  return std::nullopt;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The loss-like key of a report and its value (NaN for null: reports write
// NaN and infinities as null, and a NaN loss is worth showing).
std::optional<std::pair<std::string, double>> FindLoss(const Json& report) {
  auto value_of = [](const Json& v) -> std::optional<double> {
    if (v.is_null()) return std::nan("");
    if (v.is_number()) return v.get<double>();
    return std::nullopt;
  };
  for (const char* key : {"loss", "train_loss"}) {
    auto it = report.find(key);
    if (it == report.end()) continue;
    if (auto v = value_of(*it)) return std::make_pair(std::string("loss"), *v);
  }
  for (auto it = report.begin(); it != report.end(); ++it) {
    if (!EndsWith(it.key(), "loss")) continue;
    if (auto v = value_of(it.value())) return std::make_pair(it.key(), *v);
  }
  return std::nullopt;
}

std::string FormatCount(double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%g", v);
  }
  return buf;
}

std::string FormatLoss(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const double a = std::fabs(v);
  if (a == 0 || (a >= 1e-3 && a < 1e4)) {
    std::snprintf(buf, sizeof(buf), "%.4f", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.3e", v);
  }
  return buf;
}

}  // namespace

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  const long long total = std::llround(seconds);
  const long long h = total / 3600, m = total / 60 % 60, s = total % 60;
  char buf[64];
  if (h > 0) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", h, m, s);
  } else {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", m, s);
  }
  return buf;
}

std::string RenderProgress(const ProgressSnapshot& s, int bar_width) {
  if (s.empty()) return "";
  std::string out;
  if (s.epoch) {
    out += "epoch " + FormatCount(*s.epoch);
    if (s.epochs) out += "/" + FormatCount(*s.epochs);
  }
  if (s.step) {
    if (!out.empty()) out += ' ';
    out += "step " + FormatCount(*s.step);
    if (s.steps) out += "/" + FormatCount(*s.steps);
  }
  if (s.fraction) {
    const double f = std::clamp(*s.fraction, 0.0, 1.0);
    if (bar_width > 0) {
      int filled = static_cast<int>(std::floor(f * bar_width + 1e-9));
      filled = std::clamp(filled, 0, bar_width);
      out += " [";
      out.append(static_cast<size_t>(filled), '#');
      out.append(static_cast<size_t>(bar_width - filled), '-');
      out += ']';
    }
    char pct[16];
    std::snprintf(pct, sizeof(pct), " %d%%", static_cast<int>(std::floor(f * 100 + 1e-9)));
    out += pct;
  }
  if (s.eta_seconds) out += " ETA " + FormatDuration(*s.eta_seconds);
  if (s.loss) out += " " + s.loss_name + " " + FormatLoss(*s.loss);
  return out;
}

std::string RenderProgressFitted(const ProgressSnapshot& snapshot, int columns) {
  const size_t limit = static_cast<size_t>(std::max(columns - 1, 10));
  for (int bar = 20; bar >= 10; --bar) {
    std::string line = RenderProgress(snapshot, bar);
    if (line.size() <= limit) return line;
  }
  std::string line = RenderProgress(snapshot, 0);
  if (line.size() > limit) line.resize(limit);
  return line;
}

// --- ProgressTracker ---------------------------------------------------------

bool ProgressTracker::Add(const Json& report) {
  if (!report.is_object()) return false;
  int rank = 0;
  if (auto it = report.find("rank"); it != report.end() && it->is_number_integer()) {
    rank = it->get<int>();
  }
  const std::optional<double> epoch = Number(report, "epoch");
  const std::optional<double> epochs = FirstNumber(report, {"epochs", "num_epochs", "total_epochs"});
  const std::optional<double> step = Number(report, "step");
  const std::optional<double> steps = FirstNumber(report, {"steps", "total_steps", "num_steps"});
  const auto loss = FindLoss(report);
  const bool progress = epoch.has_value() || step.has_value();
  if (!progress && !loss && !epochs && !steps) return false;

  RankState& s = ranks_[rank];
  if (epoch && *epoch == 0) zero_based_epochs_ = true;
  if (epochs) s.epochs = epochs;
  if (steps) s.steps = steps;
  if (progress) {
    if (epoch) s.epoch = epoch;
    s.step = step;  // an epoch report without a step ends the epoch's steps
    s.step_in_report = step.has_value();
  }
  if (loss) {
    s.loss_name = loss->first;
    s.loss = loss->second;
  }
  if (progress) {
    auto t = Number(report, "time");
    auto f = Fraction(s);
    if (t && f) {
      s.last_time = *t;
      if (!s.first || !s.last || *f < s.last->second - 1e-9) {
        s.first = s.last = std::make_pair(*t, *f);  // a new run (or a restart)
      } else {
        s.last = std::make_pair(*t, *f);
      }
    }
  }
  return ranks_.begin()->first == rank;
}

std::optional<double> ProgressTracker::Fraction(const RankState& s) const {
  std::optional<double> f;
  if (s.epochs && *s.epochs > 0 && s.epoch) {
    if (s.step_in_report && s.step && s.steps && *s.steps > 0) {
      const double index = zero_based_epochs_ ? *s.epoch : *s.epoch - 1;
      f = (index + *s.step / *s.steps) / *s.epochs;
    } else {
      const double done = zero_based_epochs_ ? *s.epoch + 1 : *s.epoch;
      f = done / *s.epochs;
    }
  } else if (s.step_in_report && s.step && s.steps && *s.steps > 0) {
    f = *s.step / *s.steps;
  }
  if (f) f = std::clamp(*f, 0.0, 1.0);
  return f;
}

bool ProgressTracker::has_progress() const {
  for (const auto& [rank, s] : ranks_) {
    if (s.epoch || s.step) return true;
  }
  return false;
}

ProgressSnapshot ProgressTracker::Snapshot(double now) const {
  ProgressSnapshot out;
  // The lowest rank that has reported progress (its loss if it has one).
  const RankState* s = nullptr;
  for (const auto& [rank, state] : ranks_) {
    if (state.epoch || state.step) {
      s = &state;
      break;
    }
  }
  if (s == nullptr) return out;
  if (s->epoch) out.epoch = zero_based_epochs_ ? *s->epoch + 1 : *s->epoch;
  out.epochs = s->epochs;
  if (s->step_in_report && s->step) {
    out.step = s->step;
    out.steps = s->steps;
  }
  out.fraction = Fraction(*s);
  out.loss = s->loss;
  out.loss_name = s->loss_name;
  if (out.fraction && s->first && s->last) {
    const double f = *out.fraction;
    std::optional<double> rate;
    const auto [t0, f0] = *s->first;
    const auto [t1, f1] = *s->last;
    if (f1 > f0 && t1 > t0) {
      rate = (f1 - f0) / (t1 - t0);
    } else if (start_time_ && t1 > *start_time_ && f1 > 0) {
      rate = f1 / (t1 - *start_time_);
    }
    if (f >= 1.0) {
      out.eta_seconds = 0;
    } else if (rate && *rate > 0) {
      out.eta_seconds = std::max(0.0, (1.0 - f) / *rate - std::max(0.0, now - t1));
    }
  }
  return out;
}

// --- ProgressPrinter -----------------------------------------------------------

ProgressPrinter::ProgressPrinter(Writer writer, bool tty, int columns, bool plain_progress)
    : writer_(std::move(writer)), tty_(tty), columns_(columns > 0 ? columns : 80),
      plain_progress_(plain_progress) {}

ProgressPrinter ProgressPrinter::ForStdout(bool plain_progress) {
  bool tty = ::isatty(STDOUT_FILENO) == 1;
  if (const char* term = std::getenv("TERM"); term != nullptr && std::strcmp(term, "dumb") == 0) {
    tty = false;
  }
  int columns = 0;
  struct winsize ws {};
  if (tty && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) columns = ws.ws_col;
  if (columns == 0) {
    if (const char* c = std::getenv("COLUMNS")) columns = std::atoi(c);
  }
  if (columns <= 0) columns = 80;
  return ProgressPrinter(
      [](std::string_view text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      },
      tty, columns, plain_progress);
}

void ProgressPrinter::WriteRaw(std::string_view text) {
  if (text.empty()) return;
  writer_(text);
  at_line_start_ = text.back() == '\n';
}

void ProgressPrinter::EraseBar() {
  if (!tty_ || !bar_drawn_) return;
  writer_("\r\033[K");
  bar_drawn_ = false;
}

void ProgressPrinter::DrawBar() {
  if (!tty_ || !bar_active_ || bar_drawn_ || bar_line_.empty()) return;
  if (!at_line_start_) WriteRaw("\n");
  writer_(bar_line_);
  bar_drawn_ = true;
}

void ProgressPrinter::Log(std::string_view text) {
  if (text.empty()) return;
  if (!tty_ || !bar_active_) {
    WriteRaw(text);
    return;
  }
  held_.append(text);
  const size_t nl = held_.rfind('\n');
  if (nl == std::string::npos) return;  // wait for the end of the line
  EraseBar();
  WriteRaw(std::string_view(held_).substr(0, nl + 1));
  held_.erase(0, nl + 1);
  DrawBar();
}

void ProgressPrinter::Note(std::string_view line) {
  EraseBar();
  if (!at_line_start_) WriteRaw("\n");
  WriteRaw(line);
  if (line.empty() || line.back() != '\n') WriteRaw("\n");
  DrawBar();
}

void ProgressPrinter::Update(const ProgressTracker& tracker, double now) {
  ProgressSnapshot snap = tracker.Snapshot(now);
  if (snap.empty()) return;
  if (tty_) {
    std::string line = RenderProgressFitted(snap, columns_);
    bar_active_ = true;
    if (line == bar_line_ && bar_drawn_) return;
    EraseBar();
    bar_line_ = std::move(line);
    DrawBar();
    return;
  }
  if (!plain_progress_) return;
  const bool done = snap.fraction && *snap.fraction >= 1.0;
  const bool new_epoch = snap.epoch != plain_epoch_;
  const bool new_step = snap.step != plain_step_ && now - plain_time_ >= 10.0;
  if (plain_printed_ && !(new_epoch || new_step || (done && !plain_done_))) return;
  if (!at_line_start_) WriteRaw("\n");
  WriteRaw("progress: " + RenderProgress(snap, 0) + "\n");
  plain_epoch_ = snap.epoch;
  plain_step_ = snap.step;
  plain_time_ = now;
  plain_done_ = done;
  plain_printed_ = true;
}

void ProgressPrinter::Finish() {
  EraseBar();
  if (!held_.empty()) {
    WriteRaw(held_);
    held_.clear();
  }
  if (!at_line_start_) WriteRaw("\n");
  if (tty_ && bar_active_ && !bar_line_.empty()) WriteRaw(bar_line_ + "\n");  // the final state stays
  bar_active_ = false;
}

}  // namespace cohort::cli
