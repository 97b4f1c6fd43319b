// fuzz_idx: the IDX reader (include/cohort/train/idx.h, src/train/idx.cc).
//
// ReadIdx takes a path, so the target keeps one memfd and hands ReadIdx its
// /proc/self/fd path (no disk writes, a fresh open file description each
// call). Input: one mode byte, then the file.
//   mode bit 0 = 0: the bytes are the file as stored (plain IDX, or whatever
//                   gzip stream the fuzzer makes; zlib reads both).
//   mode bit 0 = 1: the target gzips the bytes first, so the decompressing
//                   path sees well-formed streams with valid CRCs.
//   mode bit 1 = 1: also LoadMnistSplit: the bytes are split at the first
//                   "\n--\n" into an images file and a labels file, written
//                   into a private temporary directory under the names the
//                   loader looks for (train or t10k by bit 2).
// Properties checked: a successful read has data.size() == product(dims)
// and non-negative dims; a successful split has images == count*rows*cols
// bytes and count labels, each <= 9; failures are InvalidArgument.
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cohort/train/idx.h"
#include "fuzz_common.h"

namespace {

std::string Gzip(std::string_view in) {
  z_stream zs{};
  // 15 + 16: gzip framing.
  if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::string out(deflateBound(&zs, in.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void WriteAll(int fd, std::string_view bytes) {
  if (ftruncate(fd, 0) != 0) std::abort();
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = pwrite(fd, bytes.data() + off, bytes.size() - off, static_cast<off_t>(off));
    if (n <= 0) std::abort();
    off += static_cast<size_t>(n);
  }
}

void WriteFile(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) std::abort();
  std::fclose(f);
}

// A private directory for LoadMnistSplit's two files, removed at exit.
const std::string& TempDir() {
  static const std::string* dir = [] {
    const char* base = std::getenv("TMPDIR");
    auto* d = new std::string(std::string(base && *base ? base : "/tmp") + "/cohort-fuzz-idx-XXXXXX");
    if (mkdtemp(d->data()) == nullptr) std::abort();
    std::atexit([] {
      for (const char* n : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                            "t10k-labels-idx1-ubyte"}) {
        std::remove((*dir + "/" + n).c_str());
      }
      rmdir(dir->c_str());
    });
    return d;
  }();
  return *dir;
}

void CheckArray(const cohort::train::IdxArray& a) {
  uint64_t total = 1;
  for (int32_t d : a.dims) {
    FUZZ_CHECK(d >= 0, "negative dimension");
    total *= static_cast<uint64_t>(d);
  }
  FUZZ_CHECK(!a.dims.empty(), "no dimensions");
  FUZZ_CHECK(a.data.size() == total, "data size " + std::to_string(a.data.size()) + " != product(dims) " +
                                         std::to_string(total));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::string_view file(reinterpret_cast<const char*>(data + 1), size - 1);

  static const int fd = memfd_create("fuzz_idx", MFD_CLOEXEC);
  FUZZ_CHECK(fd >= 0, "memfd_create failed");
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);

  const std::string stored = (mode & 1) ? Gzip(file) : std::string(file);
  WriteAll(fd, stored);
  auto r = cohort::train::ReadIdx(path);
  if (r.ok()) {
    CheckArray(*r);
  } else {
    FUZZ_CHECK(r.status().code() == cohort::StatusCode::kInvalidArgument, r.status().ToString());
  }

  if (mode & 2) {
    const bool train = (mode & 4) != 0;
    size_t sep = file.find("\n--\n");
    std::string_view images = file.substr(0, sep);
    std::string_view labels = sep == std::string_view::npos ? std::string_view() : file.substr(sep + 4);
    const std::string& dir = TempDir();
    const char* images_name = train ? "/train-images-idx3-ubyte" : "/t10k-images-idx3-ubyte";
    const char* labels_name = train ? "/train-labels-idx1-ubyte" : "/t10k-labels-idx1-ubyte";
    WriteFile(dir + images_name, (mode & 1) ? Gzip(images) : std::string(images));
    WriteFile(dir + labels_name, (mode & 1) ? Gzip(labels) : std::string(labels));
    auto split = cohort::train::LoadMnistSplit(dir, train);
    if (split.ok()) {
      FUZZ_CHECK(split->count >= 0 && split->rows >= 0 && split->cols >= 0, "negative split shape");
      FUZZ_CHECK(split->images.size() ==
                     static_cast<uint64_t>(split->count) * static_cast<uint64_t>(split->rows) *
                         static_cast<uint64_t>(split->cols),
                 "images size != count*rows*cols");
      FUZZ_CHECK(split->labels.size() == static_cast<uint64_t>(split->count), "labels size != count");
      for (uint8_t l : split->labels) FUZZ_CHECK(l <= 9, "label > 9 accepted");
    } else {
      FUZZ_CHECK(split.status().code() == cohort::StatusCode::kInvalidArgument,
                 split.status().ToString());
    }
  }
  return 0;
}
