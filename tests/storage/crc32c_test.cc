// CRC32C and base64 helpers against known vectors (spec/storage.md §1.10).
#include "cohort/storage/crc32c.h"

#include <gtest/gtest.h>

#include <string>

namespace cohort::storage {
namespace {

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c(""), 0x00000000u);
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c("data"), 0xAED87DD1u);
  EXPECT_EQ(Crc32c("some text\n"), 0x0E48CAB8u);
  EXPECT_EQ(Crc32c("hello world"), 0xC99465AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);  // RFC 3720 B.4
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
}

TEST(Crc32cTest, Base64AsGcsShowsIt) {
  EXPECT_EQ(Crc32cToBase64(Crc32c("hello world")), "yZRlqg==");
  EXPECT_EQ(Crc32cToBase64(Crc32c("123456789")), "4waSgw==");
  EXPECT_EQ(Crc32cToBase64(Crc32c("")), "AAAAAA==");
  EXPECT_EQ(Crc32cToBase64(Crc32c("data")), "rth90Q==");
  EXPECT_EQ(Crc32cToBase64(Crc32c("some text\n")), "DkjKuA==");
}

TEST(Crc32cTest, ExtendingInPiecesEqualsWhole) {
  std::string data;
  for (int i = 0; i < 100003; ++i) data.push_back(static_cast<char>((i * 131) ^ (i >> 7)));
  const uint32_t whole = Crc32c(data);
  for (size_t piece : {1u, 3u, 7u, 8u, 64u, 4093u, 65536u}) {
    uint32_t crc = 0;
    for (size_t off = 0; off < data.size(); off += piece) {
      size_t n = std::min(piece, data.size() - off);
      crc = Crc32cExtend(crc, data.data() + off, n);
    }
    EXPECT_EQ(crc, whole) << "piece " << piece;
  }
  // Unaligned starts.
  for (size_t start = 1; start < 9; ++start) {
    uint32_t crc = Crc32cExtend(0, data.data(), start);
    crc = Crc32cExtend(crc, data.data() + start, data.size() - start);
    EXPECT_EQ(crc, whole) << "start " << start;
  }
}

TEST(Crc32cTest, FromBase64) {
  uint32_t crc = 0;
  ASSERT_TRUE(Crc32cFromBase64("yZRlqg==", &crc));
  EXPECT_EQ(crc, 0xC99465AAu);
  ASSERT_TRUE(Crc32cFromBase64("AAAAAA==", &crc));
  EXPECT_EQ(crc, 0u);
  EXPECT_FALSE(Crc32cFromBase64("", &crc));
  EXPECT_FALSE(Crc32cFromBase64("yZRl", &crc));          // 3 bytes
  EXPECT_FALSE(Crc32cFromBase64("yZRlqgAA", &crc));      // 6 bytes
  EXPECT_FALSE(Crc32cFromBase64("yZRlqg=", &crc));       // bad length
  for (uint32_t v : {0u, 1u, 0xFFFFFFFFu, 0x80000000u, 0x12345678u}) {
    ASSERT_TRUE(Crc32cFromBase64(Crc32cToBase64(v), &crc));
    EXPECT_EQ(crc, v);
  }
}

TEST(Base64Test, RoundTripsEveryLength) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  std::string bytes;
  for (int n = 0; n < 70; ++n) {
    std::string encoded = Base64Encode(bytes);
    EXPECT_EQ(encoded.size() % 4, 0u);
    std::string decoded = "junk";
    ASSERT_TRUE(Base64Decode(encoded, &decoded)) << n;
    EXPECT_EQ(decoded, bytes) << n;
    bytes.push_back(static_cast<char>(n * 37 + 200));
  }
  std::string out;
  EXPECT_FALSE(Base64Decode("abc", &out));
}

}  // namespace
}  // namespace cohort::storage
