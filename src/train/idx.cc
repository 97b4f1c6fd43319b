// IDX reader and Fashion-MNIST loader; see include/cohort/train/idx.h.
#include "cohort/train/idx.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace cohort::train {
namespace {

constexpr uint8_t kTypeUnsignedByte = 0x08;
// Never reserve more than this up front on the word of an unchecked header.
constexpr size_t kMaxReserve = size_t{256} << 20;

class GzFile {
 public:
  explicit GzFile(gzFile f) : f_(f) {}
  ~GzFile() {
    if (f_ != nullptr) gzclose(f_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  gzFile get() const { return f_; }

 private:
  gzFile f_;
};

Status Corrupt(const std::string& path, const std::string& what) {
  return Status::InvalidArgument(path + ": corrupt IDX file: " + what);
}

// Reads up to `n` bytes; returns how many were read (< n only at end of data).
Result<size_t> ReadFull(gzFile f, const std::string& path, uint8_t* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, 1u << 30));
    int r = gzread(f, buf + got, chunk);
    if (r < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      if (errnum == Z_ERRNO) {
        return Status::IoError(path + ": read failed: " + std::strerror(errno));
      }
      return Corrupt(path, std::string("bad gzip stream (") + (msg ? msg : "?") + ")");
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

std::string ImagesName(bool train) {
  return train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte";
}
std::string LabelsName(bool train) {
  return train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte";
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

constexpr const char* kReinstallHint =
    "; reinstall Debian's dataset-fashion-mnist package "
    "(apt-get install --reinstall dataset-fashion-mnist)";

// Reads <dir>/<name>.gz, or <dir>/<name> when only the plain file exists.
Result<IdxArray> ReadMnistFile(const std::string& dir, const std::string& name,
                               std::string* used_path) {
  std::string gz = dir + "/" + name + ".gz";
  std::string plain = dir + "/" + name;
  *used_path = (!Exists(gz) && Exists(plain)) ? plain : gz;
  Result<IdxArray> r = ReadIdx(*used_path);
  if (r.ok()) return r;
  if (r.status().code() == StatusCode::kNotFound) {
    return Status::NotFound("Fashion-MNIST file " + gz +
                            " not found: install Debian's dataset-fashion-mnist package "
                            "(apt-get install dataset-fashion-mnist) or pass --data-dir");
  }
  if (r.status().code() == StatusCode::kInvalidArgument) {
    return Status::InvalidArgument(r.status().message() + kReinstallHint);
  }
  return r.status();
}

}  // namespace

Result<IdxArray> ReadIdx(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) return Status::NotFound(path + ": no such file");
    return Status::IoError(path + ": cannot open: " + std::strerror(err));
  }
  gzFile raw = gzdopen(fd, "rb");
  if (raw == nullptr) {
    ::close(fd);
    return Status::IoError(path + ": gzdopen failed");
  }
  GzFile f(raw);
  gzbuffer(f.get(), 1 << 17);

  uint8_t header[4];
  COHORT_ASSIGN_OR_RETURN(size_t got, ReadFull(f.get(), path, header, 4));
  if (got < 4) return Corrupt(path, "file is shorter than the 4-byte magic");
  if (header[0] != 0 || header[1] != 0) {
    return Corrupt(path, "bad magic (first two bytes must be zero)");
  }
  if (header[2] != kTypeUnsignedByte) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "0x%02x", header[2]);
    return Corrupt(path, std::string("unsupported element type ") + buf +
                             " (only unsigned byte, 0x08, is supported)");
  }
  const int ndims = header[3];
  if (ndims == 0) return Corrupt(path, "bad magic (zero dimensions)");

  IdxArray out;
  out.dims.resize(ndims);
  std::vector<uint8_t> dim_bytes(4 * static_cast<size_t>(ndims));
  COHORT_ASSIGN_OR_RETURN(got, ReadFull(f.get(), path, dim_bytes.data(), dim_bytes.size()));
  if (got < dim_bytes.size()) return Corrupt(path, "truncated in the dimension header");
  uint64_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    const uint8_t* b = &dim_bytes[4 * static_cast<size_t>(i)];
    uint32_t v = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
    if (v > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
      return Corrupt(path, "dimension " + std::to_string(i) + " is negative");
    }
    out.dims[i] = static_cast<int32_t>(v);
    if (v != 0 && total > (uint64_t{1} << 40) / v) {
      return Corrupt(path, "the header's dimensions multiply to an absurd size");
    }
    total *= v;
  }

  out.data.reserve(std::min<size_t>(total, kMaxReserve));
  constexpr size_t kChunk = size_t{1} << 20;
  std::vector<uint8_t> buf(kChunk);
  uint64_t have = 0;
  while (have < total) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, total - have));
    COHORT_ASSIGN_OR_RETURN(size_t n, ReadFull(f.get(), path, buf.data(), want));
    out.data.insert(out.data.end(), buf.begin(), buf.begin() + static_cast<ptrdiff_t>(n));
    have += n;
    if (n < want) {
      return Corrupt(path, "truncated: the header promises " + std::to_string(total) +
                               " data bytes but the file has " + std::to_string(have));
    }
  }
  uint8_t extra;
  COHORT_ASSIGN_OR_RETURN(size_t trailing, ReadFull(f.get(), path, &extra, 1));
  if (trailing != 0) {
    return Corrupt(path, "trailing bytes after the " + std::to_string(total) +
                             " data bytes the header promises");
  }
  return out;
}

Result<MnistSplit> LoadMnistSplit(const std::string& dir, bool train) {
  std::string images_path;
  std::string labels_path;
  COHORT_ASSIGN_OR_RETURN(IdxArray images, ReadMnistFile(dir, ImagesName(train), &images_path));
  COHORT_ASSIGN_OR_RETURN(IdxArray labels, ReadMnistFile(dir, LabelsName(train), &labels_path));

  if (images.dims.size() != 3) {
    return Status::InvalidArgument(images_path + ": expected 3 dimensions (count, rows, cols), got " +
                                   std::to_string(images.dims.size()) + kReinstallHint);
  }
  if (labels.dims.size() != 1) {
    return Status::InvalidArgument(labels_path + ": expected 1 dimension (count), got " +
                                   std::to_string(labels.dims.size()) + kReinstallHint);
  }
  if (images.dims[0] != labels.dims[0]) {
    return Status::InvalidArgument(images_path + " holds " + std::to_string(images.dims[0]) +
                                   " images but " + labels_path + " holds " +
                                   std::to_string(labels.dims[0]) + " labels" + kReinstallHint);
  }
  for (size_t i = 0; i < labels.data.size(); ++i) {
    if (labels.data[i] > 9) {
      return Status::InvalidArgument(labels_path + ": label " + std::to_string(i) + " is " +
                                     std::to_string(labels.data[i]) + ", outside 0..9" +
                                     kReinstallHint);
    }
  }
  MnistSplit split;
  split.count = images.dims[0];
  split.rows = images.dims[1];
  split.cols = images.dims[2];
  split.images = std::move(images.data);
  split.labels = std::move(labels.data);
  return split;
}

}  // namespace cohort::train
