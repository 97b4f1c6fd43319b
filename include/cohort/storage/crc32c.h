// CRC32C (Castagnoli), as GCS uses for object checksums: SSE4.2 instructions
// where the CPU has them, a table otherwise. Stateless; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cohort::storage {

// Extends crc (0 for a new stream) with data. Crc32c("123456789") == 0xE3069283.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size_bytes);
inline uint32_t Crc32c(std::string_view data) { return Crc32cExtend(0, data.data(), data.size()); }

// The form GCS uses in x-goog-hash and object resources: base64 of the
// 4 big-endian bytes ("yZRlqg==" for "hello world").
std::string Crc32cToBase64(uint32_t crc);
// Parses that form; false if it is not 4 bytes of base64.
bool Crc32cFromBase64(std::string_view text, uint32_t* crc);

std::string Base64Encode(std::string_view bytes);
bool Base64Decode(std::string_view text, std::string* bytes);

}  // namespace cohort::storage
