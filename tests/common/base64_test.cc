// Base64 against RFC 4648's test vectors, and malformed input.
#include "cohort/common/base64.h"

#include <gtest/gtest.h>

namespace cohort {
namespace {

TEST(Base64Test, Rfc4648Vectors) {
  const std::pair<const char*, const char*> kVectors[] = {
      {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : kVectors) {
    EXPECT_EQ(Base64Encode(plain), encoded);
    std::string back;
    ASSERT_TRUE(Base64Decode(encoded, &back)) << encoded;
    EXPECT_EQ(back, plain);
  }
}

TEST(Base64Test, BinaryRoundTripAndLineBreaks) {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  std::string encoded = Base64Encode(bytes), back;
  encoded.insert(64, "\n");
  ASSERT_TRUE(Base64Decode(encoded, &back));
  EXPECT_EQ(back, bytes);
}

TEST(Base64Test, RejectsMalformedInput) {
  std::string out = "untouched";
  for (const char* bad : {"Zg", "Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "Zm=v"}) {
    EXPECT_FALSE(Base64Decode(bad, &out)) << bad;
    EXPECT_EQ(out, "untouched");
  }
}

}  // namespace
}  // namespace cohort
