// Working_dir package naming and zip extraction (src/agent/package.h):
// every way out of the destination is refused, ordinary archives extract.
#include "package.h"

#include <sys/stat.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "fake_head.h"

namespace cohort::agent {
namespace {

namespace fs = std::filesystem;
using testing::MakeZip;
using testing::ReadFile;
using testing::TempDir;
using testing::ZipEntry;

TEST(PackageFileNameTest, AcceptsRayPackageUris) {
  Result<std::string> name = PackageFileName("gcs://_ray_pkg_0123abcd.zip");
  ASSERT_TRUE(name.ok()) << name.status().ToString();
  EXPECT_EQ(*name, "_ray_pkg_0123abcd.zip");
}

TEST(PackageFileNameTest, RejectsOtherSchemesAndPaths) {
  for (const char* uri : {"s3://bucket/x.zip", "gcs://", "gcs://../x.zip", "gcs://a/b.zip",
                          "gcs://.hidden", "/tmp/x.zip", "gcs://a b.zip"}) {
    EXPECT_EQ(PackageFileName(uri).status().code(), StatusCode::kInvalidArgument) << uri;
  }
}

TEST(ZipEntryNameTest, Rules) {
  for (const char* ok : {"a", "a/b.txt", "dir/", "./a", "a/./b", "a..b", "..a", "a/b.."}) {
    EXPECT_TRUE(CheckZipEntryName(ok).ok()) << ok;
  }
  for (const char* bad : {"", "/etc/passwd", "../evil", "a/../../evil", "a/..", "..", "./", "/"}) {
    EXPECT_FALSE(CheckZipEntryName(bad).ok()) << bad;
  }
  EXPECT_NE(CheckZipEntryName("../evil").message().find("'../evil'"), std::string::npos);
}

TEST(ZipSymlinkTest, Rules) {
  EXPECT_TRUE(CheckZipSymlink("link", "target").ok());
  EXPECT_TRUE(CheckZipSymlink("a/b/link", "../c/d").ok());
  EXPECT_TRUE(CheckZipSymlink("a/link", "..").ok());  // the root itself
  EXPECT_FALSE(CheckZipSymlink("link", "/etc").ok());
  EXPECT_FALSE(CheckZipSymlink("link", "..").ok());
  EXPECT_FALSE(CheckZipSymlink("a/link", "../..").ok());
  EXPECT_FALSE(CheckZipSymlink("a/link", "b/../../../x").ok());
  EXPECT_FALSE(CheckZipSymlink("link", "").ok());
  // "up" -> "." looks harmless, but "up/../x" from it then escapes for real.
  EXPECT_TRUE(CheckZipSymlink("d/l", "../up", {"up"}).ok());  // a link to a link is fine
  EXPECT_FALSE(CheckZipSymlink("l", "up/../../x", {"up"}).ok());
  EXPECT_FALSE(CheckZipSymlink("l", "up/x", {"up"}).ok());
}

TEST(ExtractZipTest, ExtractsFilesDirectoriesModesAndInnerSymlinks) {
  TempDir dir;
  MakeZip(dir.path() + "/ok.zip", {{"top.txt", "top\n"},
                                   {"empty/", ""},
                                   {"a/b/c.txt", "deep"},
                                   {"a/link", "b/c.txt", true},
                                   {"a/b/up", "../../top.txt", true}});
  std::string dest = dir.path() + "/out";
  Status s = ExtractZip(dir.path() + "/ok.zip", dest);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(ReadFile(dest + "/top.txt"), "top\n");
  EXPECT_EQ(ReadFile(dest + "/a/b/c.txt"), "deep");
  EXPECT_TRUE(fs::is_directory(dest + "/empty"));
  EXPECT_TRUE(fs::is_symlink(dest + "/a/link"));
  EXPECT_EQ(ReadFile(dest + "/a/link"), "deep");
  EXPECT_EQ(ReadFile(dest + "/a/b/up"), "top\n");
}

TEST(ExtractZipTest, KeepsTheExecutableBit) {
  TempDir dir;
  std::string zip_path = dir.path() + "/x.zip";
  {
    int err = 0;
    zip_t* z = zip_open(zip_path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
    ASSERT_NE(z, nullptr);
    static const char kScript[] = "#!/bin/sh\necho hi\n";
    zip_source_t* src = zip_source_buffer(z, kScript, sizeof(kScript) - 1, 0);
    zip_int64_t idx = zip_file_add(z, "run.sh", src, 0);
    zip_file_set_external_attributes(z, idx, 0, ZIP_OPSYS_UNIX, (S_IFREG | 0755u) << 16);
    zip_close(z);
  }
  ASSERT_TRUE(ExtractZip(zip_path, dir.path() + "/out").ok());
  struct stat st;
  ASSERT_EQ(::stat((dir.path() + "/out/run.sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
}

struct BadZip {
  const char* what;
  std::vector<ZipEntry> entries;
  const char* message;  // part of the error
};

TEST(ExtractZipTest, RefusesEveryWayOut) {
  const std::vector<BadZip> cases = {
      {"dot-dot", {{"ok", "x"}, {"../evil", "x"}}, "'../evil'"},
      {"nested dot-dot", {{"a/../../evil", "x"}}, "'a/../../evil'"},
      {"absolute", {{"/tmp/evil", "x"}}, "absolute"},
      {"absolute symlink", {{"l", "/etc", true}}, "outside"},
      {"escaping symlink", {{"a/l", "../../x", true}}, "outside"},
      {"write through a symlink", {{"d", "sub", true}, {"sub/", ""}, {"d/f", "x"}}, "also a directory"},
      {"symlink under a symlink", {{"a", "sub", true}, {"sub/", ""}, {"a/l", "x", true}},
       "not a directory"},
      {"link through a link", {{"up", ".", true}, {"l", "up/../x", true}}, "another symlink"},
      {"duplicate", {{"f", "1"}, {"f", "2"}}, "twice"},
  };
  for (const BadZip& c : cases) {
    TempDir dir;
    std::string zip = MakeZip(dir.path() + "/bad.zip", c.entries);
    ASSERT_FALSE(zip.empty()) << c.what;
    fs::create_directories(dir.path() + "/sub");
    Status s = ExtractZip(dir.path() + "/bad.zip", dir.path() + "/sub/out");
    if (c.entries.size() == 2 && c.entries[0].name == c.entries[1].name && s.ok()) {
      continue;  // libzip itself refuses duplicate names when writing
    }
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.what << ": " << s.ToString();
    EXPECT_NE(s.message().find(c.message), std::string::npos) << c.what << ": " << s.message();
    EXPECT_FALSE(fs::exists(dir.path() + "/evil")) << c.what;
    EXPECT_FALSE(fs::exists(dir.path() + "/sub/evil")) << c.what;
  }
}

TEST(ExtractZipTest, NotAZip) {
  TempDir dir;
  std::string path = dir.path() + "/junk.zip";
  FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("this is not a zip", f);
  std::fclose(f);
  Status s = ExtractZip(path, dir.path() + "/out");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
}

}  // namespace
}  // namespace cohort::agent
