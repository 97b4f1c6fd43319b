// file:// specifics beyond the shared contract (blob_store_contract_test.cc):
// the on-disk layout, key rules, temp files, directories versus objects, the
// CRC32C xattr cache and its check on read, buckets as subdirectories.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

#include "backends.h"
#include "file/file_store.h"
#include "keys.h"
#include "storage/storage_testing.h"

namespace cohort::storage {
namespace {

namespace fs = std::filesystem;
using testing::ReadLocalFile;
using testing::ScratchDir;
using testing::WriteLocalFile;

class FileStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(root_.path().empty());
    store_ = NewFileStore(root_.path());
  }
  ObjectInfo Put(const std::string& key, std::string_view data) {
    Result<ObjectInfo> r = store_->PutBuffer("", key, data, {});
    EXPECT_TRUE(r.ok()) << key << ": " << r.status().ToString();
    return r.ok() ? *r : ObjectInfo{};
  }
  std::vector<std::string> ListKeys(const std::string& prefix, const std::string& delimiter = "") {
    ListOptions options;
    options.prefix = prefix;
    options.delimiter = delimiter;
    Result<ListResult> r = store_->List("", options);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    std::vector<std::string> out;
    if (!r.ok()) return out;
    for (const auto& o : r->objects) out.push_back(o.key);
    for (const auto& p : r->prefixes) out.push_back(p);
    return out;
  }
  std::vector<std::string> FilesOnDisk() {
    std::vector<std::string> out;
    for (auto& e : fs::recursive_directory_iterator(root_.path()))
      if (e.is_regular_file()) out.push_back(fs::relative(e.path(), root_.path()).string());
    std::sort(out.begin(), out.end());
    return out;
  }

  ScratchDir root_;
  std::shared_ptr<BlobStore> store_;
};

TEST_F(FileStoreTest, KeysAreFilesUnderTheRoot) {
  Put("a/b/c.txt", "abc");
  EXPECT_EQ(ReadLocalFile(root_ / "a/b/c.txt"), "abc");
  EXPECT_EQ(FilesOnDisk(), (std::vector<std::string>{"a/b/c.txt"}));  // no temp files left
  struct stat st {};
  ASSERT_EQ(::stat((root_ / "a/b/c.txt").c_str(), &st), 0);
  Result<ObjectInfo> info = store_->Stat("", "a/b/c.txt");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->generation, static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec);
  EXPECT_FALSE(info->updated.empty());
}

TEST_F(FileStoreTest, BadKeysAreRejectedNamingTheUri) {
  const std::string nul("a\0b", 3);
  for (const std::string& key : {std::string(""), std::string("/abs"), std::string("a//b"),
                                 std::string("a/"), std::string(".."), std::string("../x"),
                                 std::string("a/../b"), std::string("a/./b"), std::string("."), nul,
                                 std::string(".x.tmp.123"), std::string("d/.y.tmp.abc"),
                                 std::string(1025, 'k')}) {
    Result<ObjectInfo> put = store_->PutBuffer("", key, "x", {});
    ASSERT_FALSE(put.ok()) << "put '" << key << "'";
    EXPECT_EQ(put.status().code(), StatusCode::kInvalidArgument) << put.status().ToString();
    EXPECT_NE(put.status().message().find("file://" + root_.path()), std::string::npos)
        << put.status().ToString();
    EXPECT_EQ(store_->Stat("", key).status().code(), StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(store_->GetToBuffer("", key, {}).status().code(), StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(store_->Delete("", key).code(), StatusCode::kInvalidArgument) << key;
  }
  EXPECT_TRUE(FilesOnDisk().empty());
  EXPECT_FALSE(fs::exists(fs::path(root_.path()).parent_path() / "x"));
  // A list prefix cannot climb out of the root either.
  ListOptions options;
  options.prefix = "../";
  EXPECT_EQ(store_->List("", options).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(FileStoreTest, TempFilesAreInvisible) {
  Put("d/x", "x");
  fs::create_directories(root_ / "only_temp");
  WriteLocalFile(root_ / "d/.x.tmp.0123456789abcdef", "partial");
  WriteLocalFile(root_ / "only_temp/.y.tmp.1", "partial");
  EXPECT_EQ(ListKeys(""), (std::vector<std::string>{"d/x"}));
  EXPECT_EQ(ListKeys("", "/"), (std::vector<std::string>{"d/"}));  // only_temp/ holds no object
  EXPECT_EQ(ListKeys("d/."), std::vector<std::string>{});
  EXPECT_EQ(store_->Stat("", "d/.x.tmp.0123456789abcdef").status().code(),
            StatusCode::kInvalidArgument);
  // Dot files that are not temp files are ordinary objects.
  Put("d/.hidden", "h");
  EXPECT_EQ(ListKeys("d/"), (std::vector<std::string>{"d/.hidden", "d/x"}));
}

TEST_F(FileStoreTest, DirectoriesAreNotObjects) {
  fs::create_directories(root_ / "empty/sub");
  Put("full/f", "f");
  EXPECT_EQ(ListKeys("", "/"), (std::vector<std::string>{"full/"}));
  EXPECT_EQ(ListKeys(""), (std::vector<std::string>{"full/f"}));
  EXPECT_EQ(store_->Stat("", "full").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetToBuffer("", "full", {}).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->Delete("", "full").ok());
  EXPECT_TRUE(fs::exists(root_ / "full/f"));
  // Writing over a directory, or under a file, fails cleanly.
  Result<ObjectInfo> over_dir = store_->PutBuffer("", "full", "x", {});
  EXPECT_FALSE(over_dir.ok());
  EXPECT_EQ(over_dir.status().code(), StatusCode::kFailedPrecondition) << over_dir.status().ToString();
  Result<ObjectInfo> under_file = store_->PutBuffer("", "full/f/g", "x", {});
  EXPECT_FALSE(under_file.ok());
  EXPECT_EQ(FilesOnDisk(), (std::vector<std::string>{"full/f"}));
}

TEST_F(FileStoreTest, DeleteLeavesDirectories) {
  Put("x/y/z", "1");
  ASSERT_TRUE(store_->Delete("", "x/y/z").ok());
  EXPECT_FALSE(fs::exists(root_ / "x/y/z"));
  EXPECT_TRUE(fs::is_directory(root_ / "x/y"));
  EXPECT_EQ(ListKeys("", "/"), std::vector<std::string>{});
}

TEST_F(FileStoreTest, FilesWrittenByOthersGetTheirCrcComputed) {
  fs::create_directories(root_ / "ext");
  WriteLocalFile(root_ / "ext/f", "hello world");
  Result<ObjectInfo> st = store_->Stat("", "ext/f");
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->crc32c, "yZRlqg==");
  EXPECT_EQ(st->size_bytes, 11u);
  // Listing does not read files: no cached CRC, no crc32c.
  ListOptions options;
  options.prefix = "ext/";
  Result<ListResult> list = store_->List("", options);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->objects.size(), 1u);
  EXPECT_EQ(list->objects[0].crc32c, "");
  EXPECT_EQ(store_->GetToBuffer("", "ext/f", {}).value(), "hello world");
}

TEST_F(FileStoreTest, PutCachesTheCrcAndListReportsIt) {
  Put("c/k", "123456789");
  char buf[100];
  ssize_t n = ::getxattr((root_ / "c/k").c_str(), kCrcXattr, buf, sizeof(buf));
  if (n < 0) GTEST_SKIP() << "no user xattrs on " << root_.path();
  EXPECT_NE(std::string(buf, static_cast<size_t>(n)).find("e3069283"), std::string::npos);
  ListOptions options;
  options.prefix = "c/";
  Result<ListResult> list = store_->List("", options);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->objects.size(), 1u);
  EXPECT_EQ(list->objects[0].crc32c, "4waSgw==");
  // A change by someone else (other size) invalidates the cache.
  WriteLocalFile(root_ / "c/k", "hello world");
  EXPECT_EQ(store_->Stat("", "c/k").value().crc32c, "yZRlqg==");
}

TEST_F(FileStoreTest, CorruptionIsCaughtOnWholeReads) {
  Put("c/obj", "the original content");
  char buf[100];
  if (::getxattr((root_ / "c/obj").c_str(), kCrcXattr, buf, sizeof(buf)) < 0)
    GTEST_SKIP() << "no user xattrs on " << root_.path();
  // Flip bytes in place, then restore the mtime: only the CRC can tell.
  struct stat st {};
  ASSERT_EQ(::stat((root_ / "c/obj").c_str(), &st), 0);
  {
    FILE* f = std::fopen((root_ / "c/obj").c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fputs("THE", f);
    std::fclose(f);
  }
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, (root_ / "c/obj").c_str(), times, 0), 0);
  Result<std::string> get = store_->GetToBuffer("", "c/obj", {});
  ASSERT_FALSE(get.ok());
  EXPECT_EQ(get.status().code(), StatusCode::kInternal) << get.status().ToString();
  EXPECT_NE(get.status().message().find("CRC32C mismatch"), std::string::npos);
  ScratchDir out;
  Result<ObjectInfo> to_file = store_->GetToFile("", "c/obj", out / "o", {});
  EXPECT_EQ(to_file.status().code(), StatusCode::kInternal);
  EXPECT_TRUE(fs::is_empty(out.path()));  // nothing partial left behind
  // A ranged read cannot check the whole object's CRC, and succeeds.
  GetOptions range;
  range.offset = 4;
  EXPECT_EQ(store_->GetToBuffer("", "c/obj", range).value(), "original content");
}

TEST_F(FileStoreTest, GenerationsDifferBetweenQuickPuts) {
  std::set<int64_t> generations;
  for (int i = 0; i < 20; ++i) generations.insert(Put("g", "same size").generation);
  EXPECT_EQ(generations.size(), 20u);
}

TEST_F(FileStoreTest, SymlinksToFilesAreObjectsButDirectoryLinksAreNotFollowed) {
  Put("real/f", "data");
  fs::create_directories(root_ / "links");
  fs::create_symlink(root_ / "real/f", root_ / "links/to_file");
  fs::create_directory_symlink(root_ / "real", root_ / "links/to_dir");
  fs::create_directory_symlink(root_ / "links", root_ / "links/loop");
  EXPECT_EQ(ListKeys("links/"), (std::vector<std::string>{"links/to_file"}));
  EXPECT_EQ(store_->GetToBuffer("", "links/to_file", {}).value(), "data");
}

TEST_F(FileStoreTest, BucketsAreSubdirectories) {
  ASSERT_TRUE(store_->PutBuffer("b1", "k", "one", {}).ok());
  ASSERT_TRUE(store_->PutBuffer("b2", "k", "two", {}).ok());
  EXPECT_EQ(ReadLocalFile(root_ / "b1/k"), "one");
  EXPECT_EQ(store_->GetToBuffer("b2", "k", {}).value(), "two");
  ListOptions options;
  Result<ListResult> list = store_->List("b1", options);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->objects.size(), 1u);
  EXPECT_EQ(list->objects[0].key, "k");
  EXPECT_EQ(store_->PutBuffer("../b", "k", "x", {}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(FileStoreTest, RootedAtSlashForFileUris) {
  Result<Uri> uri = ParseUri(root_ / "via/uri.txt");
  ASSERT_TRUE(uri.ok());
  Result<std::shared_ptr<BlobStore>> store = OpenStore(*uri);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->scheme(), "file");
  ASSERT_TRUE((*store)->PutBuffer(uri->bucket, uri->key, "via uri", {}).ok());
  EXPECT_EQ(ReadLocalFile(root_ / "via/uri.txt"), "via uri");
  Result<ObjectInfo> missing = (*store)->Stat("", uri->key + ".nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "file://" + root_.path() + "/via/uri.txt.nope: no such object");
}

TEST_F(FileStoreTest, ListPagingWithManyDirectories) {
  // Tokens that are prefixes skip the whole subtree on the next page.
  for (int d = 0; d < 5; ++d)
    for (int f = 0; f < 3; ++f) Put("m/d" + std::to_string(d) + "/f" + std::to_string(f), "x");
  ListOptions options;
  options.prefix = "m/";
  options.delimiter = "/";
  options.max_results = 2;
  std::vector<std::string> seen;
  while (true) {
    Result<ListResult> page = store_->List("", options);
    ASSERT_TRUE(page.ok());
    for (auto& p : page->prefixes) seen.push_back(p);
    EXPECT_TRUE(page->objects.empty());
    if (page->next_page_token.empty()) break;
    options.page_token = page->next_page_token;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"m/d0/", "m/d1/", "m/d2/", "m/d3/", "m/d4/"}));
}

TEST(KeysTest, TempFileNames) {
  EXPECT_TRUE(IsTempFileName(".a.tmp.1234"));
  EXPECT_TRUE(IsTempFileName(".model.pt.tmp.0123456789abcdef"));
  EXPECT_FALSE(IsTempFileName("a.tmp.1234"));
  EXPECT_FALSE(IsTempFileName(".hidden"));
  EXPECT_FALSE(IsTempFileName(".tmp"));
}

}  // namespace
}  // namespace cohort::storage
