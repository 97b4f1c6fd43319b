// Tests for LogStore (src/head/state/log_store.cc): offsets, whole-line reads,
// tail, the ReadAll cap, id validation, persistence, and concurrent appends and
// reads.
#include "cohort/head/log_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

namespace cohort::head {
namespace {

namespace fs = std::filesystem;

class LogStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cohort_log_store_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto store = LogStore::Open(dir_ + "/state/logs");
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }

  std::string ReadAllOrDie(const std::string& id) {
    auto all = store_->ReadAll(id);
    EXPECT_TRUE(all.ok()) << all.status().ToString();
    return all.ok() ? *all : "";
  }

  std::string dir_;
  std::unique_ptr<LogStore> store_;
};

TEST_F(LogStoreTest, AppendThenReadByOffsets) {
  EXPECT_TRUE(fs::is_directory(dir_ + "/state/logs"));
  ASSERT_TRUE(store_->Append("raysubmit_1", "hello\n").ok());
  ASSERT_TRUE(store_->Append("raysubmit_1", "world\n").ok());
  EXPECT_TRUE(fs::exists(dir_ + "/state/logs/raysubmit_1.log"));
  EXPECT_EQ(store_->PathFor("raysubmit_1").value(), dir_ + "/state/logs/raysubmit_1.log");
  EXPECT_EQ(store_->Size("raysubmit_1").value(), 12u);

  auto c1 = store_->Read("raysubmit_1", 0, 4);
  ASSERT_TRUE(c1.ok());
  EXPECT_EQ(c1->data, "hell");
  EXPECT_EQ(c1->next_offset, 4u);
  auto c2 = store_->Read("raysubmit_1", c1->next_offset, 100);
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->data, "o\nworld\n");
  EXPECT_EQ(c2->next_offset, 12u);
  auto end = store_->Read("raysubmit_1", 12, 100);
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(end->data, "");
  EXPECT_EQ(end->next_offset, 12u);
  auto past = store_->Read("raysubmit_1", 50, 100);
  ASSERT_TRUE(past.ok());
  EXPECT_EQ(past->data, "");
  EXPECT_EQ(past->next_offset, 50u);

  // Later appends show up from the saved offset.
  ASSERT_TRUE(store_->Append("raysubmit_1", "again\n").ok());
  auto c3 = store_->Read("raysubmit_1", c2->next_offset, 100);
  ASSERT_TRUE(c3.ok());
  EXPECT_EQ(c3->data, "again\n");
  EXPECT_EQ(ReadAllOrDie("raysubmit_1"), "hello\nworld\nagain\n");
}

TEST_F(LogStoreTest, MissingLogReadsAsEmpty) {
  EXPECT_EQ(store_->Size("never").value(), 0u);
  auto r = store_->Read("never", 0, 10);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->data, "");
  EXPECT_EQ(r->next_offset, 0u);
  EXPECT_EQ(store_->ReadAll("never").value(), "");
  EXPECT_EQ(store_->Tail("never", 5).value(), "");
  EXPECT_TRUE(store_->ReadLines("never", 0, 10, 100, true)->data.empty());
  EXPECT_TRUE(store_->Sync("never").ok());
  EXPECT_TRUE(store_->Remove("never").ok());
  EXPECT_FALSE(fs::exists(dir_ + "/state/logs/never.log"));
}

TEST_F(LogStoreTest, ReadLinesReturnsWholeLines) {
  ASSERT_TRUE(store_->Append("j", "l1\nl2\nl3\npart").ok());
  auto a = store_->ReadLines("j", 0, 2, 1024, false);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->data, "l1\nl2\n");
  EXPECT_EQ(a->next_offset, 6u);
  auto b = store_->ReadLines("j", a->next_offset, 10, 1024, false);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->data, "l3\n");  // "part" is held back
  auto c = store_->ReadLines("j", b->next_offset, 10, 1024, false);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->data, "");
  EXPECT_EQ(c->next_offset, b->next_offset);
  auto d = store_->ReadLines("j", b->next_offset, 10, 1024, true);  // job ended: drain
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->data, "part");
  EXPECT_EQ(d->next_offset, store_->Size("j").value());

  // max_bytes cuts at the last whole line that fits.
  auto e = store_->ReadLines("j", 0, 10, 7, false);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->data, "l1\nl2\n");

  EXPECT_EQ(store_->ReadLines("j", 0, 0, 10, false).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(LogStoreTest, ReadLinesSplitsOverlongLinesOnUtf8Boundaries) {
  // 'é' is 2 bytes, '€' is 3: a 5-byte budget must not end inside one.
  const std::string line = "ab\xc3\xa9\xe2\x82\xac" "cd\n";  // a b é € c d \n = 10 bytes
  ASSERT_TRUE(store_->Append("u", line).ok());
  std::string rebuilt;
  uint64_t offset = 0;
  for (int i = 0; i < 20 && offset < line.size(); ++i) {
    auto chunk = store_->ReadLines("u", offset, 10, 5, false);
    ASSERT_TRUE(chunk.ok());
    ASSERT_FALSE(chunk->data.empty()) << "stuck at " << offset;
    // No chunk ends with a lead byte or inside a sequence.
    unsigned char last = static_cast<unsigned char>(chunk->data.back());
    EXPECT_TRUE(last < 0x80 || (last & 0xC0) == 0x80) << "chunk ends in a lead byte";
    rebuilt += chunk->data;
    offset = chunk->next_offset;
  }
  EXPECT_EQ(rebuilt, line);
  auto first = store_->ReadLines("u", 0, 10, 5, false);
  EXPECT_EQ(first->data, "ab\xc3\xa9");  // 4 bytes: the 5th would split '€'
}

TEST_F(LogStoreTest, TailReturnsLastLines) {
  std::string text;
  for (int i = 1; i <= 100; ++i) text += "line " + std::to_string(i) + "\n";
  ASSERT_TRUE(store_->Append("t", text).ok());
  EXPECT_EQ(store_->Tail("t", 3).value(), "line 98\nline 99\nline 100\n");
  EXPECT_EQ(store_->Tail("t", 1).value(), "line 100\n");
  EXPECT_EQ(store_->Tail("t", 0).value(), "");
  EXPECT_EQ(store_->Tail("t", 1000).value(), text);
  // Without a trailing newline the partial last line counts as a line.
  ASSERT_TRUE(store_->Append("t", "partial").ok());
  EXPECT_EQ(store_->Tail("t", 2).value(), "line 100\npartial");
  // max_bytes bounds the scan; the cut-off first line is dropped.
  EXPECT_EQ(store_->Tail("t", 50, 20).value(), "line 100\npartial");

  // A log much bigger than the first 64 KiB window.
  std::string big;
  for (int i = 0; i < 20000; ++i) big += std::string(20, 'x') + std::to_string(i) + "\n";
  ASSERT_TRUE(store_->Append("big", big).ok());
  std::string tail = store_->Tail("big", 5000).value();
  EXPECT_EQ(std::count(tail.begin(), tail.end(), '\n'), 5000);
  EXPECT_EQ(tail.substr(0, 25), std::string(20, 'x') + "15000");
}

TEST_F(LogStoreTest, ReadAllIsCappedAndSaysSo) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += "row " + std::to_string(i) + "\n";
  ASSERT_TRUE(store_->Append("cap", text).ok());
  EXPECT_EQ(store_->ReadAll("cap", text.size()).value(), text);  // exactly at the cap: whole
  auto capped = store_->ReadAll("cap", 30);
  ASSERT_TRUE(capped.ok());
  const std::string note = "[cohort: log truncated: showing the last ";
  ASSERT_EQ(capped->substr(0, note.size()), note);
  std::string body = capped->substr(capped->find('\n') + 1);
  EXPECT_EQ(body.substr(0, 4), "row ");  // starts at a line boundary
  EXPECT_EQ(text.substr(text.size() - body.size()), body);
  EXPECT_NE(capped->find("of " + std::to_string(text.size()) + " bytes]"), std::string::npos);
}

TEST_F(LogStoreTest, BadJobIdsAreRejected) {
  const std::string long_id(LogStore::kMaxJobIdBytes + 1, 'a');
  for (std::string id : {std::string(""), std::string("a/b"), std::string(".."), std::string("../x"),
                         std::string("a..b"), std::string("."), std::string("/abs"), std::string("a\\b"),
                         std::string("x\ny"), std::string("nul\0", 4), long_id}) {
    SCOPED_TRACE("id '" + id + "'");
    EXPECT_EQ(LogStore::ValidateJobId(id).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->Append(id, "x\n").code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->Read(id, 0, 10).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->ReadLines(id, 0, 1, 10, true).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->ReadAll(id).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->Tail(id, 1).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->Size(id).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->Sync(id).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->Remove(id).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->PathFor(id).status().code(), StatusCode::kInvalidArgument);
  }
  // Nothing was created, neither under the root nor beside it.
  EXPECT_TRUE(fs::is_empty(dir_ + "/state/logs"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ + "/state"), fs::directory_iterator()), 1);
  // Ordinary ids are fine, dots included.
  for (std::string id : {std::string("raysubmit_AbC123"), std::string("my-job.v2"), std::string("job 1"),
                         std::string(LogStore::kMaxJobIdBytes, 'z')}) {
    EXPECT_TRUE(LogStore::ValidateJobId(id).ok()) << id;
  }
}

TEST_F(LogStoreTest, LogsPersistAcrossReopenAndRemove) {
  ASSERT_TRUE(store_->Append("p", "before\n").ok());
  ASSERT_TRUE(store_->Sync("p").ok());
  store_.reset();
  auto reopened = LogStore::Open(dir_ + "/state/logs");
  ASSERT_TRUE(reopened.ok());
  store_ = std::move(reopened).value();
  ASSERT_TRUE(store_->Append("p", "after\n").ok());
  EXPECT_EQ(ReadAllOrDie("p"), "before\nafter\n");

  store_->Close("p");
  ASSERT_TRUE(store_->Append("p", "reopened fd\n").ok());
  EXPECT_EQ(ReadAllOrDie("p"), "before\nafter\nreopened fd\n");

  ASSERT_TRUE(store_->Remove("p").ok());
  EXPECT_EQ(store_->Size("p").value(), 0u);
  ASSERT_TRUE(store_->Append("p", "fresh\n").ok());
  EXPECT_EQ(ReadAllOrDie("p"), "fresh\n");

  // The root vanishing under a running head is survived.
  fs::remove_all(dir_ + "/state/logs");
  ASSERT_TRUE(store_->Append("q", "new root\n").ok());
  EXPECT_EQ(ReadAllOrDie("q"), "new root\n");
}

TEST_F(LogStoreTest, ManyJobsBeyondTheOpenFileCache) {
  const int n = static_cast<int>(LogStore::kMaxOpenFiles) + 20;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(store_->Append("job" + std::to_string(i), "r" + std::to_string(round) + "\n").ok());
    }
  }
  for (int i = 0; i < n; ++i) EXPECT_EQ(ReadAllOrDie("job" + std::to_string(i)), "r0\nr1\n");
}

// Two writers append whole lines of different lengths to one log while a reader
// follows it with ReadLines; every line must come out whole, none lost.
TEST_F(LogStoreTest, ConcurrentAppendsKeepLinesWhole) {
  constexpr int kLinesPerWriter = 5000;
  auto line_for = [](int writer, int i) {
    // Writer 0 writes short lines, writer 1 long ones (> PIPE_BUF-ish sizes too).
    size_t len = writer == 0 ? 5 + i % 17 : 3000 + (i % 7) * 500;
    return "w" + std::to_string(writer) + ":" + std::to_string(i) + ":" + std::string(len, 'a' + writer) + "\n";
  };
  std::atomic<int> writers_done{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < kLinesPerWriter; ++i) {
        Status s = store_->Append("shared", line_for(w, i));
        if (!s.ok()) ADD_FAILURE() << s.ToString();
      }
      ++writers_done;
    });
  }
  std::string followed;
  std::thread follower([&] {
    uint64_t offset = 0;
    while (true) {
      bool finished = writers_done.load() == 2;
      auto chunk = store_->ReadLines("shared", offset, 10, 64 * 1024, finished);
      ASSERT_TRUE(chunk.ok()) << chunk.status().ToString();
      followed += chunk->data;
      offset = chunk->next_offset;
      if (finished && chunk->data.empty()) break;
    }
  });
  for (auto& t : writers) t.join();
  follower.join();

  std::string all = ReadAllOrDie("shared");
  EXPECT_EQ(followed, all);
  std::istringstream in(all);
  std::string line;
  std::map<int, int> next_index = {{0, 0}, {1, 0}};
  int count = 0;
  while (std::getline(in, line)) {
    ++count;
    ASSERT_GE(line.size(), 4u);
    int w = line[1] - '0';
    ASSERT_TRUE(w == 0 || w == 1) << line.substr(0, 40);
    size_t colon = line.find(':', 3);
    int i = std::stoi(line.substr(3, colon - 3));
    EXPECT_EQ(i, next_index[w]) << "writer " << w << " out of order";
    next_index[w] = i + 1;
    ASSERT_EQ(line + "\n", line_for(w, i)) << "torn line " << line.substr(0, 40);
  }
  EXPECT_EQ(count, 2 * kLinesPerWriter);
}

}  // namespace
}  // namespace cohort::head
