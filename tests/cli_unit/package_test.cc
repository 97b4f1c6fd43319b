// Tests for working-directory packaging: what is packaged (excludes, empty
// directories, symlinks, exec bits), that the content-hash name is stable
// and content-sensitive, and that the zip is deterministic and readable.
#include "cli/package.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>
#include <zip.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;

class PackageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/package_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    root_ = dir_ + "/work";
    fs::create_directories(root_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void Write(const std::string& rel, const std::string& content) {
    fs::path p = fs::path(root_) / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
  }

  void BuildTree() {
    Write("train.py", "print('hi')\n");
    Write("run.sh", "#!/bin/sh\necho run\n");
    ::chmod((root_ + "/run.sh").c_str(), 0755);
    Write("pkg/__init__.py", "");
    Write("pkg/model.py", "x = 1\n");
    Write("pkg/__pycache__/model.cpython-311.pyc", "junk");
    Write(".git/HEAD", "ref: refs/heads/main\n");
    Write("venv/bin/python", "junk");
    fs::create_directories(root_ + "/empty/inner");
    fs::create_directories(root_ + "/only_excluded/.git");
  }

  // name -> (content, unix mode) of every entry in a zip.
  static std::map<std::string, std::pair<std::string, uint32_t>> ReadZip(const std::string& bytes) {
    std::map<std::string, std::pair<std::string, uint32_t>> out;
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
    EXPECT_NE(src, nullptr);
    zip_t* za = zip_open_from_source(src, ZIP_RDONLY, &error);
    EXPECT_NE(za, nullptr) << zip_error_strerror(&error);
    if (za == nullptr) {
      zip_source_free(src);
      return out;
    }
    const zip_int64_t n = zip_get_num_entries(za, 0);
    for (zip_int64_t i = 0; i < n; ++i) {
      const char* name = zip_get_name(za, static_cast<zip_uint64_t>(i), 0);
      zip_uint8_t opsys;
      zip_uint32_t attr;
      zip_file_get_external_attributes(za, static_cast<zip_uint64_t>(i), 0, &opsys, &attr);
      std::string content;
      zip_file_t* f = zip_fopen_index(za, static_cast<zip_uint64_t>(i), 0);
      char buf[4096];
      zip_int64_t r;
      while (f != nullptr && (r = zip_fread(f, buf, sizeof(buf))) > 0) {
        content.append(buf, static_cast<size_t>(r));
      }
      if (f != nullptr) zip_fclose(f);
      out[name] = {content, attr >> 16};
    }
    zip_close(za);
    zip_error_fini(&error);
    return out;
  }

  std::string dir_;
  std::string root_;
};

TEST(Sha1HexTest, KnownVector) {
  EXPECT_EQ(Sha1Hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(Sha1Hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}

TEST(IsExcludedNameTest, RaysDefaultExcludes) {
  EXPECT_TRUE(IsExcludedName(".git"));
  EXPECT_TRUE(IsExcludedName("__pycache__"));
  EXPECT_TRUE(IsExcludedName(".venv"));
  EXPECT_FALSE(IsExcludedName(".gitignore"));
  EXPECT_FALSE(IsExcludedName("src"));
}

TEST_F(PackageTest, ScansFilesAndEmptyDirectoriesSortedWithoutExcludes) {
  BuildTree();
  Result<PackageContents> c = ScanDirectory(root_);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<std::string> paths;
  for (const PackageEntry& e : c->entries) paths.push_back(e.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"empty/inner/", "only_excluded/", "pkg/__init__.py",
                                             "pkg/model.py", "run.sh", "train.py"}));
  EXPECT_TRUE(std::regex_match(c->name, std::regex("_ray_pkg_[0-9a-f]{16}\\.zip"))) << c->name;
  EXPECT_EQ(c->total_bytes, std::string("print('hi')\n#!/bin/sh\necho run\nx = 1\n").size());
  for (const PackageEntry& e : c->entries) {
    EXPECT_EQ(e.executable, e.path == "run.sh") << e.path;
  }
}

TEST_F(PackageTest, NameDependsOnContentOnly) {
  BuildTree();
  const std::string name = ScanDirectory(root_)->name;
  // Same content, new mtimes, changed excluded files: same name.
  struct utimbuf times {1000000, 1000000};
  ::utime((root_ + "/train.py").c_str(), &times);
  Write(".git/HEAD", "ref: refs/heads/other\n");
  Write("pkg/__pycache__/new.pyc", "more junk");
  EXPECT_EQ(ScanDirectory(root_)->name, name);
  // The same tree elsewhere: same name.
  fs::copy(root_, dir_ + "/copy", fs::copy_options::recursive);
  EXPECT_EQ(ScanDirectory(dir_ + "/copy/")->name, name);
  // A content change, a new file, an exec bit: new names.
  Write("train.py", "print('bye')\n");
  const std::string changed = ScanDirectory(root_)->name;
  EXPECT_NE(changed, name);
  ::chmod((root_ + "/train.py").c_str(), 0755);
  EXPECT_NE(ScanDirectory(root_)->name, changed);
  Write("extra.txt", "");
  EXPECT_NE(ScanDirectory(root_)->name, changed);
}

TEST_F(PackageTest, ZipIsDeterministicAndHoldsTheTree) {
  BuildTree();
  Result<PackageContents> c = ScanDirectory(root_);
  ASSERT_TRUE(c.ok());
  Result<std::string> zip1 = ZipPackage(*c);
  ASSERT_TRUE(zip1.ok()) << zip1.status().ToString();
  struct utimbuf times {2000000, 2000000};
  ::utime((root_ + "/pkg/model.py").c_str(), &times);
  Result<std::string> zip2 = ZipPackage(*ScanDirectory(root_));
  ASSERT_TRUE(zip2.ok());
  EXPECT_EQ(*zip1, *zip2);
  EXPECT_EQ(zip1->substr(0, 2), "PK");

  auto entries = ReadZip(*zip1);
  ASSERT_EQ(entries.size(), 6u);
  EXPECT_EQ(entries["train.py"].first, "print('hi')\n");
  EXPECT_EQ(entries["train.py"].second & 0777, 0644u);
  EXPECT_EQ(entries["run.sh"].second & 0777, 0755u);
  EXPECT_EQ(entries["pkg/model.py"].first, "x = 1\n");
  EXPECT_EQ(entries["pkg/__init__.py"].first, "");
  EXPECT_TRUE(entries.count("empty/inner/"));
  EXPECT_TRUE(S_ISDIR(entries["empty/inner/"].second));
  EXPECT_FALSE(entries.count(".git/HEAD"));
}

TEST_F(PackageTest, EmptyDirectoryGivesAValidEmptyZip) {
  Result<PackageContents> c = ScanDirectory(root_);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->entries.empty());
  Result<std::string> zip = ZipPackage(*c);
  ASSERT_TRUE(zip.ok());
  EXPECT_EQ(zip->size(), 22u);
  EXPECT_TRUE(ReadZip(*zip).empty());
}

TEST_F(PackageTest, FollowsSymlinksAndSkipsLoops) {
  Write("data/a.txt", "A");
  ::symlink("data/a.txt", (root_ + "/link.txt").c_str());
  ::symlink("..", (root_ + "/data/up").c_str());            // a loop back to the root
  ::symlink("missing", (root_ + "/dangling").c_str());      // nothing there
  Result<PackageContents> c = ScanDirectory(root_);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<std::string> paths;
  for (const PackageEntry& e : c->entries) paths.push_back(e.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"data/a.txt", "link.txt"}));
  EXPECT_EQ(c->entries[1].content, "A");
}

TEST_F(PackageTest, RejectsMissingPathsFilesAndOversizedTrees) {
  EXPECT_EQ(ScanDirectory(dir_ + "/nope").status().code(), StatusCode::kInvalidArgument);
  Write("file.txt", "x");
  EXPECT_EQ(ScanDirectory(root_ + "/file.txt").status().code(), StatusCode::kInvalidArgument);
  Write("big.bin", std::string(2048, 'b'));
  PackageOptions small;
  small.max_bytes = 1024;
  Result<PackageContents> c = ScanDirectory(root_, small);
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("working directory"), std::string::npos);
}

TEST_F(PackageTest, UnreadableFileIsAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads everything";
  Write("secret.txt", "x");
  ::chmod((root_ + "/secret.txt").c_str(), 0);
  Result<PackageContents> c = ScanDirectory(root_);
  EXPECT_EQ(c.status().code(), StatusCode::kIoError);
  EXPECT_NE(c.status().message().find("secret.txt"), std::string::npos);
}

}  // namespace
}  // namespace cohort::cli
