// Reads the gzip-compressed IDX files of Fashion-MNIST with zlib and validates their headers.
#pragma once

#include <zlib.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace fmd {

/// Raised for a missing, unreadable or malformed data file.
class data_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One split of the data set: `count` images of `rows` x `cols` bytes each, and their labels.
struct raw_split {
  std::vector<std::uint8_t> pixels;
  std::vector<std::uint8_t> labels;
  std::size_t count = 0;
  std::size_t rows = 0;
  std::size_t cols = 0;
};

/// Owns a gzFile and reads exact byte counts from it, throwing data_error on any shortfall.
class gz_reader {
 public:
  explicit gz_reader(const std::string& path) : path_(path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
      throw data_error(path + ": file not found (or not a regular file)");
    }
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      const std::string why = errno != 0 ? std::strerror(errno) : "gzopen failed";
      throw data_error(path + ": cannot open (" + why + ")");
    }
  }
  gz_reader(const gz_reader&) = delete;
  gz_reader& operator=(const gz_reader&) = delete;
  ~gz_reader() { gzclose(file_); }

  /// Reads exactly `size` bytes into `out`.
  void read_exact(void* out, std::size_t size) {
    auto* bytes = static_cast<unsigned char*>(out);
    while (size > 0) {
      const unsigned chunk = size > (1u << 30) ? (1u << 30) : static_cast<unsigned>(size);
      const int got = gzread(file_, bytes, chunk);
      if (got < 0) throw data_error(path_ + ": corrupt gzip stream (" + last_error() + ")");
      if (got == 0) throw data_error(path_ + ": file is truncated");
      bytes += got;
      size -= static_cast<std::size_t>(got);
    }
  }

  /// Reads a big-endian 32-bit unsigned integer, as IDX headers store them.
  std::uint32_t read_be32() {
    unsigned char b[4];
    read_exact(b, sizeof b);
    return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) |
           (std::uint32_t{b[2]} << 8) | std::uint32_t{b[3]};
  }

  /// Throws if any byte follows the expected payload.
  void expect_end() {
    unsigned char extra;
    const int got = gzread(file_, &extra, 1);
    if (got < 0) throw data_error(path_ + ": corrupt gzip stream (" + last_error() + ")");
    if (got > 0) throw data_error(path_ + ": unexpected trailing data after the IDX payload");
  }

  const std::string& path() const { return path_; }

 private:
  std::string last_error() {
    int code = 0;
    const char* message = gzerror(file_, &code);
    return message != nullptr ? message : "unknown zlib error";
  }

  std::string path_;
  gzFile file_ = nullptr;
};

inline constexpr std::uint32_t idx_images_magic = 0x00000803;  // unsigned bytes, 3 dimensions
inline constexpr std::uint32_t idx_labels_magic = 0x00000801;  // unsigned bytes, 1 dimension

inline void check_header_value(const gz_reader& in, const char* what, std::uint32_t got,
                               std::uint32_t want) {
  if (got != want) {
    throw data_error(in.path() + ": bad " + what + " " + std::to_string(got) + " (expected " +
                     std::to_string(want) + ")");
  }
}

/// Reads an IDX image file holding exactly `count` images of 28 x 28 pixels.
inline void read_images(const std::string& path, std::size_t count, raw_split& split) {
  gz_reader in(path);
  check_header_value(in, "magic number", in.read_be32(), idx_images_magic);
  check_header_value(in, "image count", in.read_be32(), static_cast<std::uint32_t>(count));
  check_header_value(in, "row count", in.read_be32(), 28);
  check_header_value(in, "column count", in.read_be32(), 28);
  split.count = count;
  split.rows = 28;
  split.cols = 28;
  split.pixels.resize(count * 28 * 28);
  in.read_exact(split.pixels.data(), split.pixels.size());
  in.expect_end();
}

/// Reads an IDX label file holding exactly `count` labels, each in 0..9.
inline void read_labels(const std::string& path, std::size_t count, raw_split& split) {
  gz_reader in(path);
  check_header_value(in, "magic number", in.read_be32(), idx_labels_magic);
  check_header_value(in, "label count", in.read_be32(), static_cast<std::uint32_t>(count));
  split.labels.resize(count);
  in.read_exact(split.labels.data(), split.labels.size());
  in.expect_end();
  for (std::size_t i = 0; i < count; ++i) {
    if (split.labels[i] > 9) {
      throw data_error(path + ": label " + std::to_string(split.labels[i]) + " at index " +
                       std::to_string(i) + " is outside 0..9");
    }
  }
}

/// Loads one split ("train" or "t10k") from `dir`, which must hold `count` examples.
inline raw_split load_split(const std::string& dir, const std::string& prefix,
                            std::size_t count) {
  raw_split split;
  const std::filesystem::path base(dir);
  read_images((base / (prefix + "-images-idx3-ubyte.gz")).string(), count, split);
  read_labels((base / (prefix + "-labels-idx1-ubyte.gz")).string(), count, split);
  return split;
}

}  // namespace fmd
