// The BlobStore contract as a typed, parameterised GoogleTest suite: every
// backend must pass it. blob_store_contract_test.cc runs it over file:// and
// mem://; a backend's own test can run it too:
//
//   struct MyEnv {
//     static constexpr const char* kName = "gcs";
//     std::shared_ptr<BlobStore> store;  // set by SetUp
//     std::string bucket;                // set by SetUp
//     std::string key_prefix;            // set by SetUp: "" or e.g. "t123/" to isolate tests
//     void SetUp();                      // may GTEST_SKIP() or fail
//     void TearDown();
//   };
//   INSTANTIATE_TYPED_TEST_SUITE_P(Gcs, BlobStoreContractTest, ::testing::Types<MyEnv>);
//
// Header-only; include it in exactly one test file per binary. Tests run on
// the main thread, some start their own threads.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cohort/storage/blob_store.h"
#include "cohort/storage/crc32c.h"
#include "storage/storage_testing.h"

namespace cohort::storage::testing {

template <typename Env>
class BlobStoreContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_.SetUp();
    if (::testing::Test::IsSkipped() || ::testing::Test::HasFatalFailure()) return;
    ASSERT_NE(env_.store, nullptr);
    ASSERT_FALSE(scratch_.path().empty());
  }
  void TearDown() override { env_.TearDown(); }

  BlobStore& store() { return *env_.store; }
  const std::string& bucket() const { return env_.bucket; }
  std::string K(const std::string& name) const { return env_.key_prefix + name; }

  ObjectInfo Put(const std::string& name, std::string_view data, bool create_only = false) {
    PutOptions options;
    options.create_only = create_only;
    Result<ObjectInfo> r = store().PutBuffer(bucket(), K(name), data, options);
    EXPECT_TRUE(r.ok()) << name << ": " << r.status().ToString();
    return r.ok() ? *r : ObjectInfo{};
  }
  std::string Get(const std::string& name, uint64_t offset = 0,
                  std::optional<uint64_t> length = std::nullopt) {
    GetOptions options;
    options.offset = offset;
    options.length = length;
    Result<std::string> r = store().GetToBuffer(bucket(), K(name), options);
    EXPECT_TRUE(r.ok()) << name << ": " << r.status().ToString();
    return r.ok() ? *r : std::string("<error>");
  }
  // Every page of a listing, concatenated; also counts the pages.
  ListResult ListAllPages(const std::string& prefix, const std::string& delimiter,
                          int page_size, int* pages = nullptr) {
    ListOptions options;
    options.prefix = K(prefix);
    options.delimiter = delimiter;
    options.max_results = page_size;
    ListResult all;
    int n = 0;
    while (true) {
      Result<ListResult> page = store().List(bucket(), options);
      EXPECT_TRUE(page.ok()) << page.status().ToString();
      if (!page.ok()) break;
      ++n;
      EXPECT_LE(page->objects.size() + page->prefixes.size(), static_cast<size_t>(page_size));
      for (auto& o : page->objects) all.objects.push_back(o);
      for (auto& p : page->prefixes) all.prefixes.push_back(p);
      if (page->next_page_token.empty()) break;
      options.page_token = page->next_page_token;
      if (n > 10000) {
        ADD_FAILURE() << "listing does not end";
        break;
      }
    }
    if (pages != nullptr) *pages = n;
    return all;
  }
  std::vector<std::string> Keys(const ListResult& r) const {
    std::vector<std::string> out;
    for (const ObjectInfo& o : r.objects) out.push_back(o.key.substr(env_.key_prefix.size()));
    return out;
  }
  std::vector<std::string> Prefixes(const ListResult& r) const {
    std::vector<std::string> out;
    for (const std::string& p : r.prefixes) out.push_back(p.substr(env_.key_prefix.size()));
    return out;
  }

  Env env_;
  ScratchDir scratch_;
};

TYPED_TEST_SUITE_P(BlobStoreContractTest);

TYPED_TEST_P(BlobStoreContractTest, PutGetStat) {
  ObjectInfo put = this->Put("a/hello.txt", "hello world");
  EXPECT_EQ(put.key, this->K("a/hello.txt"));
  EXPECT_EQ(put.size_bytes, 11u);
  EXPECT_EQ(put.crc32c, "yZRlqg==");
  EXPECT_EQ(this->Get("a/hello.txt"), "hello world");
  Result<ObjectInfo> st = this->store().Stat(this->bucket(), this->K("a/hello.txt"));
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->key, this->K("a/hello.txt"));
  EXPECT_EQ(st->size_bytes, 11u);
  EXPECT_EQ(st->crc32c, "yZRlqg==");
  if (put.generation != 0) {
    EXPECT_EQ(st->generation, put.generation);
  }
}

TYPED_TEST_P(BlobStoreContractTest, OverwriteReplacesContent) {
  ObjectInfo v1 = this->Put("k", "version one");
  ObjectInfo v2 = this->Put("k", "v2");
  EXPECT_EQ(this->Get("k"), "v2");
  EXPECT_EQ(v2.size_bytes, 2u);
  if (v1.generation != 0) {
    EXPECT_NE(v1.generation, v2.generation);
  }
}

TYPED_TEST_P(BlobStoreContractTest, EmptyAndBinaryObjects) {
  ObjectInfo empty = this->Put("empty", "");
  EXPECT_EQ(empty.size_bytes, 0u);
  EXPECT_EQ(empty.crc32c, "AAAAAA==");
  EXPECT_EQ(this->Get("empty"), "");
  std::string bytes;
  for (int i = 0; i < 512; ++i) bytes.push_back(static_cast<char>(i % 256));
  ObjectInfo bin = this->Put("bin", bytes);
  EXPECT_EQ(bin.crc32c, Crc32cToBase64(Crc32c(bytes)));
  EXPECT_EQ(this->Get("bin"), bytes);
}

TYPED_TEST_P(BlobStoreContractTest, CreateOnlyFailsWhenTheObjectExists) {
  this->Put("once", "first", /*create_only=*/true);
  PutOptions options;
  options.create_only = true;
  Result<ObjectInfo> again = this->store().PutBuffer(this->bucket(), this->K("once"), "second", options);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition) << again.status().ToString();
  EXPECT_NE(again.status().message().find("already exists"), std::string::npos)
      << again.status().ToString();
  EXPECT_EQ(this->Get("once"), "first");
  // A plain put still overwrites.
  this->Put("once", "third");
  EXPECT_EQ(this->Get("once"), "third");
}

TYPED_TEST_P(BlobStoreContractTest, CreateOnlyRaceHasOneWinner) {
  constexpr int kThreads = 6;
  std::atomic<int> wins{0}, precondition{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      PutOptions options;
      options.create_only = true;
      Result<ObjectInfo> r = this->store().PutBuffer(this->bucket(), this->K("race"),
                                                     "writer " + std::to_string(t), options);
      if (r.ok())
        ++wins;
      else if (r.status().code() == StatusCode::kFailedPrecondition)
        ++precondition;
      else
        ++other;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wins.load(), 1);
  EXPECT_EQ(precondition.load(), kThreads - 1);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(this->Get("race").rfind("writer ", 0), 0u);
}

TYPED_TEST_P(BlobStoreContractTest, RangedReads) {
  const std::string data = "0123456789abcdefghij";
  this->Put("r", data);
  EXPECT_EQ(this->Get("r", 0, 5), "01234");
  EXPECT_EQ(this->Get("r", 10), "abcdefghij");
  EXPECT_EQ(this->Get("r", 10, 3), "abc");
  EXPECT_EQ(this->Get("r", 15, 100), "fghij");  // clipped at the end
  EXPECT_EQ(this->Get("r", 20), "");            // at the end: empty
  EXPECT_EQ(this->Get("r", 3, 0), "");
  GetOptions beyond;
  beyond.offset = 21;
  EXPECT_FALSE(this->store().GetToBuffer(this->bucket(), this->K("r"), beyond).ok());
}

TYPED_TEST_P(BlobStoreContractTest, GetToFileWholeAndRange) {
  const std::string data = PatternBytes(3 * 1024 * 1024 + 17, 7);
  this->Put("big/obj", data);
  std::string local = this->scratch_ / "sub/dir/out.bin";  // parents are created
  uint64_t last_done = 0, last_total = 0;
  int calls = 0;
  GetOptions options;
  options.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last_done);
    last_done = done;
    last_total = total;
    ++calls;
  };
  Result<ObjectInfo> info = this->store().GetToFile(this->bucket(), this->K("big/obj"), local, options);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->size_bytes, data.size());
  EXPECT_EQ(ReadLocalFile(local), data);
  EXPECT_GE(calls, 1);
  EXPECT_EQ(last_done, data.size());
  EXPECT_EQ(last_total, data.size());

  GetOptions range;
  range.offset = 1000;
  range.length = 2 * 1024 * 1024;
  info = this->store().GetToFile(this->bucket(), this->K("big/obj"), local, range);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(ReadLocalFile(local), data.substr(1000, 2 * 1024 * 1024));
  // Only the file itself is left in the directory: no temp files.
  int entries = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(this->scratch_ / "sub/dir", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++entries;
  EXPECT_EQ(entries, 1);
}

TYPED_TEST_P(BlobStoreContractTest, GetToFileOfAMissingObjectLeavesNoFile) {
  std::string local = this->scratch_ / "missing.bin";
  Result<ObjectInfo> r = this->store().GetToFile(this->bucket(), this->K("no/such"), local, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(local));
  EXPECT_TRUE(std::filesystem::is_empty(this->scratch_.path()));
  // An existing local file is left alone.
  WriteLocalFile(local, "keep me");
  r = this->store().GetToFile(this->bucket(), this->K("no/such"), local, {});
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(ReadLocalFile(local), "keep me");
}

TYPED_TEST_P(BlobStoreContractTest, PutFileStreamsWithProgress) {
  const std::string data = PatternBytes(3 * 1024 * 1024 + 512 * 1024 + 3, 11);
  std::string local = this->scratch_ / "upload.bin";
  WriteLocalFile(local, data);
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  PutOptions options;
  options.progress = [&](uint64_t done, uint64_t total) { calls.emplace_back(done, total); };
  Result<ObjectInfo> info = this->store().PutFile(this->bucket(), this->K("up/file.bin"), local, options);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->size_bytes, data.size());
  EXPECT_EQ(info->crc32c, Crc32cToBase64(Crc32c(data)));
  ASSERT_FALSE(calls.empty());
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_GE(calls[i].first, calls[i - 1].first);
  EXPECT_EQ(calls.back().first, data.size());
  EXPECT_EQ(calls.back().second, data.size());
  EXPECT_EQ(this->Get("up/file.bin"), data);
}

TYPED_TEST_P(BlobStoreContractTest, PutFileOfAMissingLocalFileFails) {
  std::string local = this->scratch_ / "nope.bin";
  Result<ObjectInfo> r = this->store().PutFile(this->bucket(), this->K("x"), local, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_NE(r.status().message().find(local), std::string::npos) << r.status().ToString();
  EXPECT_EQ(this->store().Stat(this->bucket(), this->K("x")).status().code(), StatusCode::kNotFound);
}

TYPED_TEST_P(BlobStoreContractTest, MissingObjectsAreNotFound) {
  Result<ObjectInfo> st = this->store().Stat(this->bucket(), this->K("absent"));
  EXPECT_EQ(st.status().code(), StatusCode::kNotFound) << st.status().ToString();
  Result<std::string> get = this->store().GetToBuffer(this->bucket(), this->K("absent"), {});
  EXPECT_EQ(get.status().code(), StatusCode::kNotFound) << get.status().ToString();
  EXPECT_NE(get.status().message().find("absent"), std::string::npos) << get.status().ToString();
}

TYPED_TEST_P(BlobStoreContractTest, DeleteIsIdempotent) {
  this->Put("d/x", "1");
  EXPECT_TRUE(this->store().Delete(this->bucket(), this->K("d/x")).ok());
  EXPECT_EQ(this->store().Stat(this->bucket(), this->K("d/x")).status().code(), StatusCode::kNotFound);
  Status again = this->store().Delete(this->bucket(), this->K("d/x"));
  EXPECT_TRUE(again.ok()) << again.ToString();
  Status never = this->store().Delete(this->bucket(), this->K("never/existed"));
  EXPECT_TRUE(never.ok()) << never.ToString();
}

TYPED_TEST_P(BlobStoreContractTest, ListIsSortedByBytes) {
  // '-' (0x2d) < '.' (0x2e) < '/' (0x2f) < '0' < 'B' < 'a': file-system walk order differs.
  // (No "l/a" object: on file:// it would have to be a file and a directory.)
  for (const char* k : {"l/a/c/d", "l/a.txt", "l/a/b", "l/a-b", "l/a0", "l/B"}) this->Put(k, k);
  ListResult all = this->ListAllPages("l/", "", 1000);
  std::vector<std::string> want = {"l/B", "l/a-b", "l/a.txt", "l/a/b", "l/a/c/d", "l/a0"};
  EXPECT_EQ(this->Keys(all), want);
  EXPECT_TRUE(all.prefixes.empty());
  for (const ObjectInfo& o : all.objects) {
    EXPECT_EQ(o.size_bytes, o.key.size() - this->K("").size());  // content = key
    if (!o.crc32c.empty()) {
      EXPECT_EQ(o.crc32c, Crc32cToBase64(Crc32c(o.key.substr(this->K("").size()))));
    }
  }
}

TYPED_TEST_P(BlobStoreContractTest, ListWithDelimiterGroupsPrefixes) {
  for (const char* k : {"t/x", "t/dir/a", "t/dir/b/c", "t/dir2/z", "t/y", "t/dir.txt", "u/other"})
    this->Put(k, "v");
  ListResult r = this->ListAllPages("t/", "/", 1000);
  EXPECT_EQ(this->Keys(r), (std::vector<std::string>{"t/dir.txt", "t/x", "t/y"}));
  EXPECT_EQ(this->Prefixes(r), (std::vector<std::string>{"t/dir/", "t/dir2/"}));
  // Prefix ending inside a name.
  r = this->ListAllPages("t/di", "/", 1000);
  EXPECT_EQ(this->Keys(r), (std::vector<std::string>{"t/dir.txt"}));
  EXPECT_EQ(this->Prefixes(r), (std::vector<std::string>{"t/dir/", "t/dir2/"}));
  // One level down.
  r = this->ListAllPages("t/dir/", "/", 1000);
  EXPECT_EQ(this->Keys(r), (std::vector<std::string>{"t/dir/a"}));
  EXPECT_EQ(this->Prefixes(r), (std::vector<std::string>{"t/dir/b/"}));
  // No delimiter: everything under the prefix, including deeper keys.
  r = this->ListAllPages("t/dir", "", 1000);
  EXPECT_EQ(this->Keys(r), (std::vector<std::string>{"t/dir.txt", "t/dir/a", "t/dir/b/c", "t/dir2/z"}));
  // Nothing there: an empty listing, not an error.
  r = this->ListAllPages("nothing/here/", "/", 1000);
  EXPECT_TRUE(r.objects.empty());
  EXPECT_TRUE(r.prefixes.empty());
}

TYPED_TEST_P(BlobStoreContractTest, ListPagesCoverEverythingOnce) {
  std::vector<std::string> keys;
  for (int i = 0; i < 23; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "p/%s/f%02d", i % 3 == 0 ? "x" : "yy", i);
    keys.push_back(name);
  }
  keys.push_back("p/z");
  for (const std::string& k : keys) this->Put(k, "1");
  std::sort(keys.begin(), keys.end());
  for (int page_size : {1, 2, 5, 1000}) {
    int pages = 0;
    ListResult r = this->ListAllPages("p/", "", page_size, &pages);
    EXPECT_EQ(this->Keys(r), keys) << "page size " << page_size;
    if (page_size == 5) {
      EXPECT_GE(pages, 5);
    }
  }
  // With a delimiter the prefixes count as entries and never repeat across pages.
  for (int page_size : {1, 2, 3}) {
    ListResult r = this->ListAllPages("p/", "/", page_size);
    EXPECT_EQ(this->Keys(r), (std::vector<std::string>{"p/z"})) << "page size " << page_size;
    EXPECT_EQ(this->Prefixes(r), (std::vector<std::string>{"p/x/", "p/yy/"})) << "page size " << page_size;
  }
}

TYPED_TEST_P(BlobStoreContractTest, ConcurrentPutsOfDistinctKeys) {
  constexpr int kThreads = 6, kPerThread = 8;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string name = "c/t" + std::to_string(t) + "/k" + std::to_string(i);
        PutOptions options;
        Result<ObjectInfo> r = this->store().PutBuffer(this->bucket(), this->K(name), name, options);
        EXPECT_TRUE(r.ok()) << r.status().ToString();
      }
    });
  }
  for (auto& th : threads) th.join();
  ListResult r = this->ListAllPages("c/", "", 7);
  EXPECT_EQ(r.objects.size(), static_cast<size_t>(kThreads * kPerThread));
  for (const ObjectInfo& o : r.objects) EXPECT_EQ(this->Get(o.key.substr(this->K("").size())), o.key.substr(this->K("").size()));
}

TYPED_TEST_P(BlobStoreContractTest, ReadersNeverSeeATornOverwrite) {
  constexpr size_t kSize = 2 * 1024 * 1024 + 100;
  this->Put("torn", std::string(kSize, 'a'));
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; i < 12; ++i) {
      PutOptions options;
      Result<ObjectInfo> r = this->store().PutBuffer(this->bucket(), this->K("torn"),
                                                     std::string(kSize, static_cast<char>('b' + i % 20)), options);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
    }
    stop = true;
  });
  int reads = 0;
  while (!stop || reads < 3) {
    Result<std::string> r = this->store().GetToBuffer(this->bucket(), this->K("torn"), {});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->size(), kSize);
    ASSERT_EQ(r->find_first_not_of((*r)[0]), std::string::npos) << "mixed versions after read " << reads;
    ++reads;
  }
  writer.join();
}

REGISTER_TYPED_TEST_SUITE_P(BlobStoreContractTest, PutGetStat, OverwriteReplacesContent,
                            EmptyAndBinaryObjects, CreateOnlyFailsWhenTheObjectExists,
                            CreateOnlyRaceHasOneWinner, RangedReads, GetToFileWholeAndRange,
                            GetToFileOfAMissingObjectLeavesNoFile, PutFileStreamsWithProgress,
                            PutFileOfAMissingLocalFileFails, MissingObjectsAreNotFound,
                            DeleteIsIdempotent, ListIsSortedByBytes,
                            ListWithDelimiterGroupsPrefixes, ListPagesCoverEverythingOnce,
                            ConcurrentPutsOfDistinctKeys, ReadersNeverSeeATornOverwrite);

}  // namespace cohort::storage::testing
