// See package_store.h.
#include "package_store.h"

#include <sys/stat.h>
#include <zip.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cohort/common/atomic_file.h"
#include "cohort/common/json.h"

namespace cohort::head {

namespace fs = std::filesystem;

bool ValidPackageName(std::string_view name) {
  if (name.size() <= 4 || name.size() > 200 || name.find("..") != std::string_view::npos) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return name.substr(name.size() - 4) == ".zip";
}

std::string PackageNameOf(std::string_view uri) {
  constexpr std::string_view prefix = "gcs://";
  return uri.substr(0, prefix.size()) == prefix ? std::string(uri.substr(prefix.size())) : std::string();
}

Status ValidatePackageZip(std::string_view bytes) {
  // libzip opens zero bytes as an empty archive.
  if (bytes.size() < 22) return Status::InvalidArgument("package is not a zip archive (" + std::to_string(bytes.size()) + " bytes)");
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (src == nullptr) {
    zip_error_fini(&error);
    return Status::InvalidArgument("package is not a zip archive");
  }
  zip_t* za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &error);
  if (za == nullptr) {
    zip_source_free(src);
    std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    return Status::InvalidArgument("package is not a zip archive: " + why);
  }
  zip_error_fini(&error);
  Status st;
  const zip_int64_t n = zip_get_num_entries(za, 0);
  for (zip_int64_t i = 0; i < n && st.ok(); ++i) {
    const char* name = zip_get_name(za, static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW);
    const std::string entry = name ? name : "";
    const std::string shown = SanitizeUtf8(entry.substr(0, 300));
    if (entry.empty() || entry[0] == '/' || entry.find('\\') != std::string::npos ||
        entry.find('\0') != std::string::npos) {
      st = Status::InvalidArgument("package entry '" + shown + "' has an absolute or invalid path");
      break;
    }
    std::stringstream parts(entry);
    std::string part;
    while (std::getline(parts, part, '/'))
      if (part == "..") st = Status::InvalidArgument("package entry '" + shown + "' escapes the working dir (..)");
    zip_uint8_t opsys = 0;
    zip_uint32_t attributes = 0;
    if (st.ok() && zip_file_get_external_attributes(za, static_cast<zip_uint64_t>(i), 0, &opsys, &attributes) == 0 &&
        opsys == ZIP_OPSYS_UNIX && S_ISLNK((attributes >> 16) & 0xFFFF))
      st = Status::InvalidArgument("package entry '" + shown +
                                   "' is a symbolic link, which could escape the working dir");
  }
  zip_discard(za);
  return st;
}

bool PackageStore::Exists(std::string_view name) const {
  std::error_code ec;
  return ValidPackageName(name) && fs::is_regular_file(PathOf(name), ec);
}

Status PackageStore::Put(std::string_view name, std::string_view bytes) const {
  if (!ValidPackageName(name))
    return Status::InvalidArgument("bad package name '" + SanitizeUtf8(name.substr(0, 300)) +
                                   "': expected _ray_pkg_<hash>.zip");
  COHORT_RETURN_IF_ERROR(ValidatePackageZip(bytes));
  std::error_code ec;
  fs::create_directories(dir_, ec);
  return WriteFileAtomically(PathOf(name), bytes);
}

Status PackageStore::Read(std::string_view name, std::string* bytes) const {
  const Status not_found = Status::NotFound("Package gcs://" + SanitizeUtf8(name) + " does not exist");
  if (!ValidPackageName(name)) return not_found;
  std::ifstream in(PathOf(name), std::ios::binary);
  if (!in) return not_found;
  std::ostringstream ss;
  ss << in.rdbuf();
  *bytes = ss.str();
  return Status::Ok();
}

}  // namespace cohort::head
