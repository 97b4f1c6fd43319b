// Tests for the IDX reader and the Fashion-MNIST split loader, on small
// gzip (and plain) files written here, plus the real test split when
// Debian's dataset-fashion-mnist package is installed.
#include "cohort/train/idx.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace cohort::train {
namespace {

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/idx_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Header for unsigned-byte data with `dims`.
  static std::vector<uint8_t> Header(const std::vector<int32_t>& dims) {
    std::vector<uint8_t> h = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
    for (int32_t d : dims) {
      uint32_t v = static_cast<uint32_t>(d);
      h.push_back(v >> 24);
      h.push_back(v >> 16);
      h.push_back(v >> 8);
      h.push_back(v);
    }
    return h;
  }

  static std::vector<uint8_t> Idx(const std::vector<int32_t>& dims,
                                  const std::vector<uint8_t>& data) {
    std::vector<uint8_t> bytes = Header(dims);
    bytes.insert(bytes.end(), data.begin(), data.end());
    return bytes;
  }

  void WriteGz(const std::string& name, const std::vector<uint8_t>& bytes) {
    gzFile f = gzopen((dir_ + "/" + name).c_str(), "wb");
    ASSERT_NE(f, nullptr);
    if (!bytes.empty()) {
      ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
                static_cast<int>(bytes.size()));
    }
    ASSERT_EQ(gzclose(f), Z_OK);
  }

  void WritePlain(const std::string& name, const std::vector<uint8_t>& bytes) {
    FILE* f = std::fopen((dir_ + "/" + name).c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
    std::fclose(f);
  }

  // A split of `count` 2x3 images whose pixels are (image*6 + i) % 256.
  void WriteSplit(const std::string& prefix, int count, std::vector<uint8_t> labels) {
    std::vector<uint8_t> pixels(static_cast<size_t>(count) * 6);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i % 256);
    WriteGz(prefix + "-images-idx3-ubyte.gz", Idx({count, 2, 3}, pixels));
    WriteGz(prefix + "-labels-idx1-ubyte.gz",
            Idx({static_cast<int32_t>(labels.size())}, labels));
  }

  std::string dir_;
};

TEST_F(IdxTest, ReadsGzipThreeDims) {
  std::vector<uint8_t> data(2 * 3 * 4);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
  WriteGz("a.gz", Idx({2, 3, 4}, data));
  auto r = ReadIdx(dir_ + "/a.gz");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->dims, (std::vector<int32_t>{2, 3, 4}));
  EXPECT_EQ(r->data, data);
}

TEST_F(IdxTest, ReadsUncompressedAndAnyDims) {
  WritePlain("one", Idx({5}, {9, 8, 7, 6, 5}));
  auto one = ReadIdx(dir_ + "/one");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->dims, (std::vector<int32_t>{5}));
  EXPECT_EQ(one->data, (std::vector<uint8_t>{9, 8, 7, 6, 5}));

  std::vector<uint8_t> data(1 * 2 * 1 * 2 * 3, 200);
  WriteGz("five.gz", Idx({1, 2, 1, 2, 3}, data));
  auto five = ReadIdx(dir_ + "/five.gz");
  ASSERT_TRUE(five.ok()) << five.status().ToString();
  EXPECT_EQ(five->dims.size(), 5u);
  EXPECT_EQ(five->data, data);

  WriteGz("empty.gz", Idx({0, 28, 28}, {}));
  auto empty = ReadIdx(dir_ + "/empty.gz");
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->data.empty());
}

TEST_F(IdxTest, TruncatedIsCorrupt) {
  std::vector<uint8_t> bytes = Idx({4, 4}, std::vector<uint8_t>(16, 1));
  bytes.resize(bytes.size() - 3);
  WriteGz("short.gz", bytes);
  auto r = ReadIdx(dir_ + "/short.gz");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("corrupt"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("short.gz"), std::string::npos);
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos);

  // Truncated inside the dimension header, and inside the magic.
  WriteGz("hdr.gz", std::vector<uint8_t>{0, 0, 8, 3, 0, 0});
  EXPECT_EQ(ReadIdx(dir_ + "/hdr.gz").status().code(), StatusCode::kInvalidArgument);
  WriteGz("tiny.gz", std::vector<uint8_t>{0, 0});
  EXPECT_EQ(ReadIdx(dir_ + "/tiny.gz").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(IdxTest, TruncatedGzipStreamIsCorrupt) {
  std::vector<uint8_t> data(5000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>((i * 31) ^ (i >> 3));
  WriteGz("full.gz", Idx({5000}, data));
  std::string full = dir_ + "/full.gz";
  std::filesystem::resize_file(full, std::filesystem::file_size(full) / 2);
  auto r = ReadIdx(full);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
}

TEST_F(IdxTest, BadMagicAndTypeAreCorrupt) {
  WriteGz("magic.gz", std::vector<uint8_t>{1, 2, 8, 1, 0, 0, 0, 1, 5});
  auto r = ReadIdx(dir_ + "/magic.gz");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("magic"), std::string::npos) << r.status().message();

  WriteGz("float.gz", std::vector<uint8_t>{0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0});
  auto t = ReadIdx(dir_ + "/float.gz");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("0x0d"), std::string::npos) << t.status().message();
}

TEST_F(IdxTest, TrailingBytesAreCorrupt) {
  std::vector<uint8_t> bytes = Idx({2}, {1, 2});
  bytes.push_back(3);
  WriteGz("long.gz", bytes);
  EXPECT_EQ(ReadIdx(dir_ + "/long.gz").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(IdxTest, MissingFileIsNotFound) {
  auto r = ReadIdx(dir_ + "/nope.gz");
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("nope.gz"), std::string::npos);
}

TEST_F(IdxTest, LoadsSplit) {
  WriteSplit("train", 4, {0, 9, 3, 3});
  WriteSplit("t10k", 2, {1, 2});
  auto train = LoadMnistSplit(dir_, true);
  ASSERT_TRUE(train.ok()) << train.status().ToString();
  EXPECT_EQ(train->count, 4);
  EXPECT_EQ(train->rows, 2);
  EXPECT_EQ(train->cols, 3);
  ASSERT_EQ(train->images.size(), 24u);
  EXPECT_EQ(train->images[7], 7);
  EXPECT_EQ(train->labels, (std::vector<uint8_t>{0, 9, 3, 3}));
  auto test = LoadMnistSplit(dir_, false);
  ASSERT_TRUE(test.ok()) << test.status().ToString();
  EXPECT_EQ(test->count, 2);
  EXPECT_EQ(test->labels, (std::vector<uint8_t>{1, 2}));
}

TEST_F(IdxTest, LoadsUncompressedSplit) {
  WritePlain("t10k-images-idx3-ubyte", Idx({1, 1, 2}, {5, 6}));
  WritePlain("t10k-labels-idx1-ubyte", Idx({1}, {4}));
  auto r = LoadMnistSplit(dir_, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->images, (std::vector<uint8_t>{5, 6}));
}

TEST_F(IdxTest, MissingSplitNamesPackage) {
  auto r = LoadMnistSplit(dir_ + "/absent", true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  const std::string& msg = r.status().message();
  EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
  EXPECT_NE(msg.find("apt-get install dataset-fashion-mnist"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--data-dir"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train-images-idx3-ubyte.gz"), std::string::npos) << msg;
}

TEST_F(IdxTest, CountMismatchIsInvalid) {
  WriteSplit("train", 3, {1, 2});
  auto r = LoadMnistSplit(dir_, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  const std::string& msg = r.status().message();
  EXPECT_NE(msg.find("3 images"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 labels"), std::string::npos) << msg;
  EXPECT_NE(msg.find("reinstall"), std::string::npos) << msg;
}

TEST_F(IdxTest, LabelOutOfRangeIsInvalid) {
  WriteSplit("train", 2, {1, 10});
  auto r = LoadMnistSplit(dir_, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("train-labels-idx1-ubyte.gz"), std::string::npos);
  EXPECT_NE(r.status().message().find("10"), std::string::npos);
}

TEST_F(IdxTest, CorruptSplitFileSuggestsReinstall) {
  WriteSplit("t10k", 2, {1, 2});
  WriteGz("t10k-images-idx3-ubyte.gz", std::vector<uint8_t>{7, 7, 7, 7});
  auto r = LoadMnistSplit(dir_, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  const std::string& msg = r.status().message();
  EXPECT_NE(msg.find("t10k-images-idx3-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("reinstall"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
}

TEST(IdxRealDataTest, LoadsFashionMnistTestSplit) {
  struct stat st;
  if (::stat(kDefaultFashionMnistDir, &st) != 0) {
    GTEST_SKIP() << kDefaultFashionMnistDir << " not installed (dataset-fashion-mnist)";
  }
  auto r = LoadMnistSplit(kDefaultFashionMnistDir, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->count, 10000);
  EXPECT_EQ(r->rows, 28);
  EXPECT_EQ(r->cols, 28);
  EXPECT_EQ(r->images.size(), 10000u * 28 * 28);
  ASSERT_EQ(r->labels.size(), 10000u);
  std::vector<int> per_class(10);
  for (uint8_t l : r->labels) {
    ASSERT_LT(l, 10);
    ++per_class[l];
  }
  for (int c : per_class) EXPECT_EQ(c, 1000);  // Fashion-MNIST's test set is balanced
}

}  // namespace
}  // namespace cohort::train
