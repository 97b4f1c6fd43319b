// A tiny extractor for the flat XML that S3 returns (ListBucketResult,
// InitiateMultipartUploadResult, CompleteMultipartUploadResult, Error):
// finds elements by tag name and decodes entities. It is not a general XML
// parser (no namespaces prefixes, CDATA or nesting of the same tag), which
// S3's replies do not need. Used by s3_store.cc; pure functions, thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace cohort::storage::s3 {

// The raw inner text of every <tag>...</tag> (or "" for <tag/>) in xml, in
// document order. Tags with attributes (<tag a="b">) match; <tagX> does not.
std::vector<std::string_view> XmlElements(std::string_view xml, std::string_view tag);
// The entity-decoded text of the first <tag> element, or "" if there is none.
std::string XmlText(std::string_view xml, std::string_view tag);
// True if xml has a <tag> element.
bool XmlHas(std::string_view xml, std::string_view tag);
// Decodes &amp; &lt; &gt; &quot; &apos; &#N; &#xN; (UTF-8 out).
std::string XmlUnescape(std::string_view text);
// Escapes & < > " ' for element text.
std::string XmlEscape(std::string_view text);

}  // namespace cohort::storage::s3
