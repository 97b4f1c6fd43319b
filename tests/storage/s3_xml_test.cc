// Tests of the small S3 XML extractor (src/storage/s3/s3_xml.h): element
// lookup by exact tag name, self-closing and attributed tags, entities.
#include "s3/s3_xml.h"

#include <gtest/gtest.h>

namespace cohort::storage::s3 {
namespace {

TEST(S3XmlTest, FindsElementsByExactName) {
  const std::string xml =
      "<?xml version=\"1.0\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
      "<KeyCount>2</KeyCount><Contents><Key>a</Key><Size>1</Size></Contents>"
      "<Contents><Key>b&amp;c</Key><Size>22</Size></Contents><Empty/><Prefix></Prefix>"
      "<IsTruncated>false</IsTruncated></ListBucketResult>";
  auto contents = XmlElements(xml, "Contents");
  ASSERT_EQ(contents.size(), 2u);
  EXPECT_EQ(XmlText(contents[0], "Key"), "a");
  EXPECT_EQ(XmlText(contents[1], "Key"), "b&c");
  EXPECT_EQ(XmlText(contents[1], "Size"), "22");
  EXPECT_EQ(XmlText(xml, "KeyCount"), "2");
  EXPECT_EQ(XmlText(xml, "Key"), "a");  // not KeyCount
  EXPECT_TRUE(XmlHas(xml, "ListBucketResult"));
  EXPECT_TRUE(XmlHas(xml, "Empty"));
  EXPECT_EQ(XmlElements(xml, "Empty").size(), 1u);
  EXPECT_EQ(XmlText(xml, "Prefix"), "");
  EXPECT_FALSE(XmlHas(xml, "Error"));
  EXPECT_EQ(XmlText(xml, "Missing"), "");
}

TEST(S3XmlTest, ErrorBody) {
  const std::string xml =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>NoSuchKey</Code>\n"
      "  <Message>The specified key does not exist.</Message>\n  <Key>a b</Key>\n</Error>";
  auto errors = XmlElements(xml, "Error");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(XmlText(errors[0], "Code"), "NoSuchKey");
  EXPECT_EQ(XmlText(errors[0], "Message"), "The specified key does not exist.");
}

TEST(S3XmlTest, Entities) {
  EXPECT_EQ(XmlUnescape("&quot;abc&quot; &lt;&gt;&amp;&apos;"), "\"abc\" <>&'");
  EXPECT_EQ(XmlUnescape("&#65;&#x42;&#xE9;&#x1F600;"), "AB\xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_EQ(XmlUnescape("a & b &unknown; &#xZZ;"), "a & b &unknown; &#xZZ;");
  EXPECT_EQ(XmlEscape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&apos;");
  EXPECT_EQ(XmlUnescape(XmlEscape("\"etag\"<&>")), "\"etag\"<&>");
}

}  // namespace
}  // namespace cohort::storage::s3
