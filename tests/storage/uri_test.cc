// ParseUri / Uri::ToString / Uri::Child / IsRemoteUri.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "cohort/storage/blob_store.h"

namespace cohort::storage {
namespace {

Uri MustParse(const std::string& text) {
  Result<Uri> u = ParseUri(text);
  EXPECT_TRUE(u.ok()) << text << ": " << u.status().ToString();
  return u.ok() ? *u : Uri{};
}

TEST(UriTest, CloudSchemes) {
  Uri gs = MustParse("gs://bucket/a/b.txt");
  EXPECT_EQ(gs.scheme, "gs");
  EXPECT_EQ(gs.bucket, "bucket");
  EXPECT_EQ(gs.key, "a/b.txt");
  Uri s3 = MustParse("s3://my-bucket/dir/");
  EXPECT_EQ(s3.scheme, "s3");
  EXPECT_EQ(s3.bucket, "my-bucket");
  EXPECT_EQ(s3.key, "dir/");
  Uri mem = MustParse("mem://b/k");
  EXPECT_EQ(mem.scheme, "mem");
  EXPECT_EQ(mem.bucket, "b");
  EXPECT_EQ(mem.key, "k");
}

TEST(UriTest, BucketOnly) {
  Uri a = MustParse("gs://bucket");
  EXPECT_EQ(a.bucket, "bucket");
  EXPECT_EQ(a.key, "");
  Uri b = MustParse("s3://bucket/");
  EXPECT_EQ(b.bucket, "bucket");
  EXPECT_EQ(b.key, "");
}

TEST(UriTest, FileUris) {
  Uri f = MustParse("file:///tmp/x/y");
  EXPECT_EQ(f.scheme, "file");
  EXPECT_EQ(f.bucket, "");
  EXPECT_EQ(f.key, "tmp/x/y");
  Uri root = MustParse("file:///");
  EXPECT_EQ(root.key, "");
  Uri dir = MustParse("file:///tmp/d/");
  EXPECT_EQ(dir.key, "tmp/d/");
}

TEST(UriTest, PlainPathsAreFileUris) {
  Uri abs = MustParse("/tmp/a/../b/c");
  EXPECT_EQ(abs.scheme, "file");
  EXPECT_EQ(abs.key, "tmp/b/c");  // normalised
  Uri trailing = MustParse("/tmp/dir/");
  EXPECT_EQ(trailing.key, "tmp/dir/");
  Uri rel = MustParse("rel/x");
  std::string cwd = std::filesystem::current_path().string();
  EXPECT_EQ("/" + rel.key, (std::filesystem::path(cwd) / "rel/x").lexically_normal().string());
  EXPECT_EQ(MustParse("/").key, "");
}

TEST(UriTest, Errors) {
  for (const char* bad : {"", "file://tmp/x", "file://", "ftp://host/x", "http://h/x", "gs://",
                          "gs:///key", "s3:///key", "mem://"}) {
    Result<Uri> u = ParseUri(bad);
    EXPECT_FALSE(u.ok()) << "'" << bad << "' parsed";
    if (!u.ok()) {
      EXPECT_EQ(u.status().code(), StatusCode::kInvalidArgument) << bad;
    }
  }
  Result<Uri> scheme = ParseUri("ftp://host/x");
  EXPECT_NE(scheme.status().message().find("ftp"), std::string::npos) << scheme.status().ToString();
}

TEST(UriTest, ToStringRoundTrips) {
  for (const char* text : {"gs://bucket/a/b", "s3://b/k/", "mem://b/x", "file:///tmp/x", "gs://bucket"}) {
    Uri u = MustParse(text);
    EXPECT_EQ(u.ToString(), text);
    Uri again = MustParse(u.ToString());
    EXPECT_EQ(again.scheme, u.scheme);
    EXPECT_EQ(again.bucket, u.bucket);
    EXPECT_EQ(again.key, u.key);
  }
  EXPECT_EQ(MustParse("/tmp/p").ToString(), "file:///tmp/p");
}

TEST(UriTest, Child) {
  EXPECT_EQ(MustParse("gs://b/dir").Child("f").ToString(), "gs://b/dir/f");
  EXPECT_EQ(MustParse("gs://b/dir/").Child("f").ToString(), "gs://b/dir/f");
  EXPECT_EQ(MustParse("gs://b").Child("f/g").ToString(), "gs://b/f/g");
  EXPECT_EQ(MustParse("file:///tmp").Child("x").ToString(), "file:///tmp/x");
}

TEST(UriTest, IsRemoteUri) {
  EXPECT_TRUE(IsRemoteUri("gs://b/x"));
  EXPECT_TRUE(IsRemoteUri("s3://b"));
  EXPECT_TRUE(IsRemoteUri("file:///x"));
  EXPECT_TRUE(IsRemoteUri("mem://b"));
  EXPECT_FALSE(IsRemoteUri("/tmp/x"));
  EXPECT_FALSE(IsRemoteUri("rel/gs://"));
  EXPECT_FALSE(IsRemoteUri(""));
}

}  // namespace
}  // namespace cohort::storage
