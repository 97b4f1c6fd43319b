// mem:// specifics beyond the shared contract (blob_store_contract_test.cc):
// key rules, separate buckets, generations, and the per-process instance
// that OpenStore hands out (and SetStoreForScheme replaces).
#include <gtest/gtest.h>

#include <string>

#include "backends.h"
#include "cohort/storage/blob_store.h"

namespace cohort::storage {
namespace {

TEST(MemoryStoreTest, BadKeysAreRejected) {
  auto store = NewMemoryBlobStore();
  for (const std::string& key : {std::string(""), std::string("/abs"), std::string("a//b"),
                                 std::string("a/"), std::string("../x"), std::string("a/./b"),
                                 std::string("a\0b", 3)}) {
    Result<ObjectInfo> put = store->PutBuffer("b", key, "x", {});
    ASSERT_FALSE(put.ok()) << key;
    EXPECT_EQ(put.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(put.status().message().find("mem://b"), std::string::npos) << put.status().ToString();
  }
  EXPECT_EQ(store->PutBuffer("", "k", "x", {}).status().code(), StatusCode::kInvalidArgument);
}

TEST(MemoryStoreTest, BucketsAreSeparate) {
  auto store = NewMemoryBlobStore();
  ASSERT_TRUE(store->PutBuffer("b1", "k", "one", {}).ok());
  ASSERT_TRUE(store->PutBuffer("b2", "k", "two", {}).ok());
  EXPECT_EQ(store->GetToBuffer("b1", "k", {}).value(), "one");
  EXPECT_EQ(store->GetToBuffer("b2", "k", {}).value(), "two");
  EXPECT_EQ(store->Stat("b3", "k").status().code(), StatusCode::kNotFound);
  Result<ListResult> list = store->List("b3", {});
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->objects.empty());
}

TEST(MemoryStoreTest, GenerationsIncrease) {
  auto store = NewMemoryBlobStore();
  int64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    Result<ObjectInfo> r = store->PutBuffer("b", "k", std::to_string(i), {});
    ASSERT_TRUE(r.ok());
    EXPECT_GT(r->generation, last);
    last = r->generation;
    EXPECT_EQ(store->Stat("b", "k").value().generation, last);
  }
}

TEST(MemoryStoreTest, OpenStoreSharesOneInstancePerProcess) {
  Result<Uri> uri = ParseUri("mem://shared/obj");
  ASSERT_TRUE(uri.ok());
  auto a = OpenStore(*uri);
  auto b = OpenStore(*uri);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_EQ((*a)->scheme(), "mem");
  ASSERT_TRUE((*a)->PutBuffer("shared", "obj", "seen by all", {}).ok());
  EXPECT_EQ((*b)->GetToBuffer("shared", "obj", {}).value(), "seen by all");

  // SetStoreForScheme swaps in another one; nullptr restores the default.
  auto mine = NewMemoryBlobStore();
  SetStoreForScheme("mem", mine);
  EXPECT_EQ(OpenStore(*uri).value().get(), mine.get());
  SetStoreForScheme("mem", nullptr);
  auto fresh = OpenStore(*uri);
  ASSERT_TRUE(fresh.ok());
  EXPECT_NE(fresh->get(), mine.get());
}

TEST(MemoryStoreTest, UnknownSchemeIsAnError) {
  Uri u;
  u.scheme = "ftp";
  Result<std::shared_ptr<BlobStore>> store = OpenStore(u);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cohort::storage
