// IDX file reader (the MNIST / Fashion-MNIST format) and the Fashion-MNIST
// split loader the trainer and the tests call.
//
// Files may be gzip-compressed or plain (zlib reads both). Only the unsigned
// byte element type (0x08) is supported, with any number of dimensions. A
// missing file is NotFound, a malformed one InvalidArgument; every message
// names the file. Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cohort/common/status.h"

namespace cohort::train {

struct IdxArray {
  std::vector<int32_t> dims;  // e.g. {60000, 28, 28}
  std::vector<uint8_t> data;  // row-major, product(dims) bytes
};

// Reads the IDX file at `path`. NotFound when it does not exist; InvalidArgument
// ("corrupt ...") on a bad magic, an unsupported element type, a data section
// shorter or longer than the header says, or a broken gzip stream; IoError on
// other read failures.
Result<IdxArray> ReadIdx(const std::string& path);

struct MnistSplit {
  int64_t count = 0;
  int rows = 0;
  int cols = 0;
  std::vector<uint8_t> images;  // count * rows * cols pixels, 0..255
  std::vector<uint8_t> labels;  // count labels, 0..9
};

// Loads <dir>/train-{images-idx3,labels-idx1}-ubyte.gz (train) or the t10k-*
// pair (test); the uncompressed names without ".gz" are accepted too. A
// missing file is NotFound telling how to install dataset-fashion-mnist; a
// corrupt one (bad magic, truncated, image/label count mismatch, label > 9)
// is InvalidArgument naming the file and the defect.
Result<MnistSplit> LoadMnistSplit(const std::string& dir, bool train);

// Where Debian's dataset-fashion-mnist package installs the files.
inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

}  // namespace cohort::train
