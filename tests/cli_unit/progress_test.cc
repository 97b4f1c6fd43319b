// Tests for the progress line: rendering, folding reports into a snapshot
// (epochs, steps, ranks, restarts, ETA) and the printer's terminal / plain
// output.
#include "cli/progress.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace cohort::cli {
namespace {

using Json = nlohmann::ordered_json;

Json Report(int rank, double time, Json fields) {
  Json j = {{"rank", rank}, {"time", time}};
  for (auto& [k, v] : fields.items()) j[k] = v;
  return j;
}

TEST(FormatDurationTest, MinutesAndHours) {
  EXPECT_EQ(FormatDuration(0), "0:00");
  EXPECT_EQ(FormatDuration(42), "0:42");
  EXPECT_EQ(FormatDuration(41.6), "0:42");
  EXPECT_EQ(FormatDuration(725), "12:05");
  EXPECT_EQ(FormatDuration(3723), "1:02:03");
  EXPECT_EQ(FormatDuration(-5), "0:00");
  EXPECT_EQ(FormatDuration(NAN), "0:00");
}

TEST(RenderProgressTest, EpochLineWithBarEtaAndLoss) {
  ProgressSnapshot s;
  s.epoch = 3;
  s.epochs = 10;
  s.fraction = 0.3;
  s.eta_seconds = 42;
  s.loss_name = "loss";
  s.loss = 0.51234;
  EXPECT_EQ(RenderProgress(s, 10), "epoch 3/10 [###-------] 30% ETA 0:42 loss 0.5123");
  EXPECT_EQ(RenderProgress(s, 0), "epoch 3/10 30% ETA 0:42 loss 0.5123");
}

TEST(RenderProgressTest, StepsWithoutEpochsAndUnknownEta) {
  ProgressSnapshot s;
  s.step = 250;
  s.steps = 1000;
  s.fraction = 0.25;
  EXPECT_EQ(RenderProgress(s, 4), "step 250/1000 [#---] 25%");
}

TEST(RenderProgressTest, EpochWithoutTotalHasNoPercent) {
  ProgressSnapshot s;
  s.epoch = 7;
  s.loss_name = "val_loss";
  s.loss = 1.5e-5;
  EXPECT_EQ(RenderProgress(s, 20), "epoch 7 val_loss 1.500e-05");
}

TEST(RenderProgressTest, EmptySnapshotRendersNothing) {
  EXPECT_EQ(RenderProgress(ProgressSnapshot{}, 20), "");
}

TEST(RenderProgressTest, NeverShows100PercentEarlyAndNanLoss) {
  ProgressSnapshot s;
  s.epoch = 999;
  s.epochs = 1000;
  s.fraction = 0.999;
  s.loss_name = "loss";
  s.loss = std::nan("");
  EXPECT_EQ(RenderProgress(s, 0), "epoch 999/1000 99% loss nan");
}

TEST(RenderProgressFittedTest, ShrinksThenDropsTheBar) {
  ProgressSnapshot s;
  s.epoch = 3;
  s.epochs = 10;
  s.fraction = 0.3;
  s.eta_seconds = 42;
  s.loss_name = "loss";
  s.loss = 0.5;
  EXPECT_EQ(RenderProgressFitted(s, 120), RenderProgress(s, 20));
  const std::string narrow = RenderProgressFitted(s, 50);
  EXPECT_LE(narrow.size(), 49u);
  EXPECT_NE(narrow.find('['), std::string::npos) << narrow;
  const std::string tiny = RenderProgressFitted(s, 30);
  EXPECT_LE(tiny.size(), 29u);
  EXPECT_EQ(tiny.find('['), std::string::npos) << tiny;
}

TEST(ProgressTrackerTest, EpochReportsGiveFractionAndEta) {
  ProgressTracker t;
  EXPECT_FALSE(t.has_progress());
  EXPECT_TRUE(t.Add(Report(0, 100, {{"epoch", 1}, {"epochs", 10}, {"train_loss", 0.9}})));
  // One report and no start time: no rate yet.
  ProgressSnapshot s = t.Snapshot(100);
  EXPECT_EQ(*s.epoch, 1);
  EXPECT_DOUBLE_EQ(*s.fraction, 0.1);
  EXPECT_FALSE(s.eta_seconds.has_value());
  EXPECT_EQ(s.loss_name, "loss");
  EXPECT_DOUBLE_EQ(*s.loss, 0.9);

  t.Add(Report(0, 110, {{"epoch", 2}, {"epochs", 10}, {"train_loss", 0.7}}));
  s = t.Snapshot(110);
  EXPECT_DOUBLE_EQ(*s.fraction, 0.2);
  ASSERT_TRUE(s.eta_seconds.has_value());
  EXPECT_NEAR(*s.eta_seconds, 80, 1e-6);  // 0.8 left at 0.01/s
  EXPECT_NEAR(*t.Snapshot(115).eta_seconds, 75, 1e-6);  // counts down between reports
  EXPECT_NEAR(*t.Snapshot(500).eta_seconds, 0, 1e-6);   // never negative
  EXPECT_EQ(RenderProgress(t.Snapshot(110), 10),
            "epoch 2/10 [##--------] 20% ETA 1:20 loss 0.7000");
}

TEST(ProgressTrackerTest, StartTimeGivesAnEtaFromTheFirstReport) {
  ProgressTracker t;
  t.SetStartTime(90);
  t.Add(Report(0, 100, {{"epoch", 1}, {"epochs", 5}}));
  ProgressSnapshot s = t.Snapshot(100);
  ASSERT_TRUE(s.eta_seconds.has_value());
  EXPECT_NEAR(*s.eta_seconds, 40, 1e-6);  // 10 s per epoch, 4 to go
}

TEST(ProgressTrackerTest, StepsInsideEpochs) {
  ProgressTracker t;
  t.Add(Report(0, 10, {{"epoch", 2}, {"epochs", 4}, {"step", 50}, {"steps", 100}, {"loss", 1.0}}));
  ProgressSnapshot s = t.Snapshot(10);
  EXPECT_DOUBLE_EQ(*s.fraction, (1 + 0.5) / 4);
  EXPECT_EQ(*s.step, 50);
  EXPECT_EQ(RenderProgress(s, 0), "epoch 2/4 step 50/100 37% loss 1.0000");
  // The epoch's end report (no step) makes it 2 complete epochs; the step goes.
  t.Add(Report(0, 20, {{"epoch", 2}, {"epochs", 4}, {"val_loss", 0.8}}));
  s = t.Snapshot(20);
  EXPECT_DOUBLE_EQ(*s.fraction, 0.5);
  EXPECT_FALSE(s.step.has_value());
  EXPECT_EQ(s.loss_name, "val_loss");
}

TEST(ProgressTrackerTest, StepsOnlyWithAliases) {
  ProgressTracker t;
  t.Add(Report(0, 0, {{"step", 10}, {"total_steps", 40}}));
  t.Add(Report(0, 5, {{"step", 20}, {"total_steps", 40}}));
  ProgressSnapshot s = t.Snapshot(5);
  EXPECT_DOUBLE_EQ(*s.fraction, 0.5);
  EXPECT_NEAR(*s.eta_seconds, 10, 1e-6);
  EXPECT_EQ(RenderProgress(s, 0), "step 20/40 50% ETA 0:10");
}

TEST(ProgressTrackerTest, ZeroBasedEpochsAreShownFromOne) {
  ProgressTracker t;
  t.Add(Report(0, 0, {{"epoch", 0}, {"num_epochs", 4}}));
  ProgressSnapshot s = t.Snapshot(0);
  EXPECT_EQ(*s.epoch, 1);
  EXPECT_DOUBLE_EQ(*s.fraction, 0.25);
  t.Add(Report(0, 1, {{"epoch", 3}, {"num_epochs", 4}}));
  EXPECT_DOUBLE_EQ(*t.Snapshot(1).fraction, 1.0);
  EXPECT_EQ(*t.Snapshot(1).eta_seconds, 0);
}

TEST(ProgressTrackerTest, FollowsTheLowestRank) {
  ProgressTracker t;
  EXPECT_TRUE(t.Add(Report(1, 0, {{"epoch", 5}, {"epochs", 10}})));
  EXPECT_EQ(*t.Snapshot(0).epoch, 5);
  EXPECT_TRUE(t.Add(Report(0, 0, {{"epoch", 4}, {"epochs", 10}})));
  EXPECT_FALSE(t.Add(Report(1, 1, {{"epoch", 6}, {"epochs", 10}})));  // not followed
  EXPECT_EQ(*t.Snapshot(1).epoch, 4);
}

TEST(ProgressTrackerTest, ProgressGoingBackStartsANewRun) {
  // Repeated progress (no step back) stays in one run: rate over all of it.
  ProgressTracker same;
  same.Add(Report(0, 0, {{"epoch", 1}, {"epochs", 10}}));
  same.Add(Report(0, 100, {{"epoch", 2}, {"epochs", 10}}));
  same.Add(Report(0, 200, {{"epoch", 2}, {"epochs", 10}}));
  same.Add(Report(0, 210, {{"epoch", 3}, {"epochs", 10}}));
  EXPECT_NEAR(*same.Snapshot(210).eta_seconds, 0.7 / (0.2 / 210), 1e-6);
  // A restart from the epoch-1 checkpoint, now faster: the old rate is dropped.
  ProgressTracker r;
  r.Add(Report(0, 0, {{"epoch", 1}, {"epochs", 10}}));
  r.Add(Report(0, 100, {{"epoch", 2}, {"epochs", 10}}));
  r.Add(Report(0, 300, {{"epoch", 1}, {"epochs", 10}}));  // back: a new run
  r.Add(Report(0, 310, {{"epoch", 2}, {"epochs", 10}}));
  EXPECT_NEAR(*r.Snapshot(310).eta_seconds, 80, 1e-6);  // 10 s per epoch, 8 to go
}

TEST(ProgressTrackerTest, IgnoresReportsWithoutProgressKeysAndNonObjects) {
  ProgressTracker t;
  EXPECT_FALSE(t.Add(Json::array()));
  EXPECT_FALSE(t.Add(Report(0, 0, {{"samples_per_sec", 100}})));
  EXPECT_FALSE(t.has_progress());
  t.Add(Report(0, 0, {{"loss", nullptr}}));  // NaN reported as null
  EXPECT_FALSE(t.has_progress());
  t.Add(Report(0, 0, {{"epoch", "three"}}));  // not a number
  EXPECT_FALSE(t.has_progress());
  t.Add(Report(0, 1, {{"epoch", 1}}));
  EXPECT_TRUE(t.has_progress());
  ProgressSnapshot s = t.Snapshot(1);
  EXPECT_TRUE(std::isnan(*s.loss));
  EXPECT_FALSE(s.fraction.has_value());
}

struct Captured {
  std::string text;
  ProgressPrinter::Writer Writer() {
    return [this](std::string_view s) { text.append(s); };
  }
};

TEST(ProgressPrinterTest, TerminalKeepsTheBarBelowWholeLogLines) {
  Captured out;
  ProgressPrinter p(out.Writer(), /*tty=*/true, 80);
  p.Log("starting\n");
  EXPECT_EQ(out.text, "starting\n");
  ProgressTracker t;
  t.Add(Report(0, 0, {{"epoch", 1}, {"epochs", 4}, {"loss", 0.5}}));
  p.Update(t, 0);
  const std::string bar = RenderProgressFitted(t.Snapshot(0), 80);
  EXPECT_EQ(out.text, "starting\n" + bar);
  // A partial line waits for its newline; then it goes above the bar.
  p.Log("epoch=1 ");
  EXPECT_EQ(out.text, "starting\n" + bar);
  p.Log("loss=0.5\nnext");
  EXPECT_EQ(out.text, "starting\n" + bar + "\r\033[K" + "epoch=1 loss=0.5\n" + bar);
  // Redraw only when the line changes.
  p.Update(t, 0);
  EXPECT_EQ(out.text, "starting\n" + bar + "\r\033[K" + "epoch=1 loss=0.5\n" + bar);
  p.Finish();
  EXPECT_EQ(out.text, "starting\n" + bar + "\r\033[K" + "epoch=1 loss=0.5\n" + bar + "\r\033[K" +
                          "next\n" + bar + "\n");
}

TEST(ProgressPrinterTest, TerminalNoteAndBarAfterPartialLine) {
  Captured out;
  ProgressPrinter p(out.Writer(), /*tty=*/true, 80);
  p.Log("no newline yet");
  ProgressTracker t;
  t.Add(Report(0, 0, {{"step", 1}, {"steps", 2}}));
  p.Update(t, 0);
  const std::string bar = RenderProgressFitted(t.Snapshot(0), 80);
  EXPECT_EQ(out.text, "no newline yet\n" + bar);
  p.Note("Job x is pending");
  EXPECT_EQ(out.text, "no newline yet\n" + bar + "\r\033[K" + "Job x is pending\n" + bar);
}

TEST(ProgressPrinterTest, PlainOutputPrintsOneLinePerEpoch) {
  Captured out;
  ProgressPrinter p(out.Writer(), /*tty=*/false, 80);
  ProgressTracker t;
  p.Log("partial");
  t.Add(Report(0, 0, {{"epoch", 1}, {"epochs", 2}, {"train_loss", 0.25}}));
  p.Update(t, 0);
  p.Update(t, 1);  // nothing new
  EXPECT_EQ(out.text, "partial\nprogress: epoch 1/2 50% loss 0.2500\n");
  t.Add(Report(0, 10, {{"epoch", 2}, {"epochs", 2}, {"train_loss", 0.125}}));
  p.Update(t, 10);
  EXPECT_EQ(out.text,
            "partial\nprogress: epoch 1/2 50% loss 0.2500\n"
            "progress: epoch 2/2 100% ETA 0:00 loss 0.1250\n");
  p.Finish();
  EXPECT_EQ(out.text.find('\r'), std::string::npos);
}

TEST(ProgressPrinterTest, PlainOutputCanBeSilenced) {
  Captured out;
  ProgressPrinter p(out.Writer(), /*tty=*/false, 80, /*plain_progress=*/false);
  ProgressTracker t;
  t.Add(Report(0, 0, {{"epoch", 1}, {"epochs", 2}}));
  p.Update(t, 0);
  p.Log("log\n");
  p.Finish();
  EXPECT_EQ(out.text, "log\n");
}

TEST(ProgressPrinterTest, PlainStepsAreRateLimited) {
  Captured out;
  ProgressPrinter p(out.Writer(), /*tty=*/false, 80);
  ProgressTracker t;
  t.Add(Report(0, 0, {{"step", 1}, {"steps", 100}}));
  p.Update(t, 0);
  t.Add(Report(0, 1, {{"step", 2}, {"steps", 100}}));
  p.Update(t, 1);  // < 10 s later: skipped
  t.Add(Report(0, 11, {{"step", 12}, {"steps", 100}}));
  p.Update(t, 11);
  int lines = 0;
  for (char c : out.text) lines += c == '\n';
  EXPECT_EQ(lines, 2) << out.text;
}

}  // namespace
}  // namespace cohort::cli
