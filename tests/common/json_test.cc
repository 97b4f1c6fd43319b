// Untrusted JSON: the nesting limit, safe dump of invalid UTF-8, UTF-8 repair.
#include "cohort/common/json.h"

#include <gtest/gtest.h>

namespace cohort {
namespace {

TEST(JsonTest, DepthLimitIsCheckedBeforeParsing) {
  EXPECT_TRUE(CheckJsonDepth("[[[]]]", 3).ok());
  EXPECT_FALSE(CheckJsonDepth("[[[[]]]]", 3).ok());
  // Brackets inside strings do not count, escaped quotes do not end them.
  EXPECT_TRUE(CheckJsonDepth(R"({"a": "[[[[[[\"[[[["})", 1).ok());
  // A few hundred KB of '[' (it used to kill the head) is refused quickly.
  const std::string deep(400000, '[');
  auto parsed = ParseJson(deep);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("nested deeper than 64"), std::string::npos);
  std::string ok;
  for (int i = 0; i < 64; ++i) ok += "[";
  for (int i = 0; i < 64; ++i) ok += "]";
  EXPECT_TRUE(ParseJson(ok).ok());
}

TEST(JsonTest, ParseErrorsAreValidUtf8) {
  auto parsed = ParseJson("{\"a\": \xff\xfe}");
  ASSERT_FALSE(parsed.ok());
  EXPECT_TRUE(IsValidUtf8(parsed.status().message())) << parsed.status().message();
  EXPECT_FALSE(ParseJson("").ok());
  EXPECT_FALSE(ParseJson("{} trailing").ok());
}

TEST(JsonTest, DumpReplacesInvalidUtf8InsteadOfThrowing) {
  nlohmann::json j = {{"name", std::string("model\xff\xfe.pt")}, {std::string("k\xc3"), 1}};
  std::string out;
  ASSERT_NO_THROW(out = DumpJson(j));
  EXPECT_TRUE(IsValidUtf8(out));
  EXPECT_NE(out.find("model\xEF\xBF\xBD"), std::string::npos) << out;
  nlohmann::ordered_json o = {{"x", std::string("\x80")}};
  EXPECT_EQ(DumpJson(o), "{\"x\":\"\xEF\xBF\xBD\"}");
}

TEST(JsonTest, SanitizeUtf8KeepsValidTextAndReplacesEachBadByte) {
  EXPECT_EQ(SanitizeUtf8("héllo ✓ 𝄞"), "héllo ✓ 𝄞");
  EXPECT_EQ(SanitizeUtf8("a\xff" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");   // overlong '/'
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_TRUE(IsValidUtf8(SanitizeUtf8(std::string("\xF4\x90\x80\x80 \xE2\x82"))));
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));
}

}  // namespace
}  // namespace cohort
