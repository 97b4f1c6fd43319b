// fuzz_package_zip: the head's check of an uploaded working_dir package
// (src/head/package_store.h: ValidatePackageZip, ValidPackageName), which
// runs on every PUT /api/packages/gcs/<name> before the zip is stored and
// later unpacked on the agents.
//
// Input: the first line is a package name, the rest the zip bytes. The
// target checks that neither function crashes, that a refusal's message is
// valid UTF-8 (it is the 400 body), and -- for an accepted archive -- that
// every entry really stays inside the extraction directory: no absolute
// path, no "..", no backslash, no symbolic link (re-checked here with
// libzip independently of the code under test).
#include <sys/stat.h>
#include <zip.h>

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "fuzz_common.h"
#include "head/package_store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nl = input.find('\n');
  const std::string name = nl == std::string::npos ? input : input.substr(0, nl);
  const std::string bytes = nl == std::string::npos ? std::string() : input.substr(nl + 1);
  (void)cohort::head::ValidPackageName(name);
  (void)cohort::head::PackageNameOf(name);

  const cohort::Status st = cohort::head::ValidatePackageZip(bytes);
  if (!st.ok()) {
    FUZZ_CHECK(cohort::fuzz::IsValidUtf8(st.message()), "refusal is not UTF-8: " + st.message());
    return 0;
  }
  // Accepted: every entry must be safe to extract.
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  FUZZ_CHECK(src != nullptr, "accepted bytes that libzip cannot wrap");
  zip_t* za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &error);
  FUZZ_CHECK(za != nullptr, "accepted an archive libzip cannot open");
  const zip_int64_t n = zip_get_num_entries(za, 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    const char* raw = zip_get_name(za, static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW);
    FUZZ_CHECK(raw != nullptr, "accepted an entry without a name");
    const std::string entry = raw;
    FUZZ_CHECK(!entry.empty() && entry[0] != '/', "accepted an absolute entry: " + entry);
    FUZZ_CHECK(entry.find('\\') == std::string::npos, "accepted a backslash entry: " + entry);
    std::stringstream parts(entry);
    std::string part;
    while (std::getline(parts, part, '/')) FUZZ_CHECK(part != "..", "accepted a '..' entry: " + entry);
    zip_uint8_t opsys = 0;
    zip_uint32_t attributes = 0;
    if (zip_file_get_external_attributes(za, static_cast<zip_uint64_t>(i), 0, &opsys, &attributes) == 0 &&
        opsys == ZIP_OPSYS_UNIX)
      FUZZ_CHECK(!S_ISLNK((attributes >> 16) & 0xFFFF), "accepted a symbolic link: " + entry);
  }
  zip_discard(za);
  zip_error_fini(&error);
  return 0;
}
