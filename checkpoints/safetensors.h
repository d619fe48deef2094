// The safetensors file format (Hugging Face): reading any file safely, writing f32 tensors as F32,
// BF16 or F16.
//
// Layout: u64 little-endian N | N bytes of JSON header | data buffer. The header is an object
// mapping each tensor name to {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}
// (byte offsets into the data buffer, row-major, little-endian), plus an optional
// "__metadata__" object of string values. The GPT-2 naming on top of it is checkpoints/hf_gpt2.h.
//
// Reading never trusts a number from the file: the header length, every shape and every pair of
// offsets are checked against the file's size (and the byte count the dtype and shape imply)
// before any tensor byte is touched. Every failure is a UserError naming the file and, where
// there is one, the tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/base/mapped_file.h"

namespace loom {

// The safetensors Python package refuses headers above 100 MB; so do we.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t{100} << 20;

class SafetensorsFile {
 public:
  struct Entry {
    std::string name;
    std::string dtype;           // "F32", "BF16", "F16", ... as written
    std::vector<int64_t> shape;  // row-major
    uint64_t begin = 0;          // byte range in the data buffer, checked against the file
    uint64_t end = 0;
    int64_t numel() const;
  };

  // Memory-maps `path` and validates its header. UserError naming the file (and tensor).
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<Entry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The tensor named `name`, or nullptr.
  const Entry* find(const std::string& name) const;
  // The tensor's elements as f32 (F32 copied; BF16 and F16 converted exactly). UserError naming
  // the file and tensor for any other dtype.
  std::vector<float> read_f32(const Entry& entry) const;

 private:
  void parse_header();
  std::string path_;
  std::unique_ptr<MappedFile> file_;
  const char* data_ = nullptr;  // the whole file
  uint64_t size_ = 0;
  uint64_t buffer_start_ = 0;   // 8 + header length
  std::vector<Entry> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// One f32 tensor to write: `fill` writes its product(shape) elements, row-major, into `dest`
// (called once, while writing, so a caller can transpose on the fly without a second copy).
struct SafetensorsOutput {
  std::string name;
  std::vector<int64_t> shape;
  std::function<void(float* dest)> fill;
};

// The element types Loom writes: f32 values stored as they are, or rounded to nearest even.
enum class StoredDType : uint8_t { kF32, kBF16, kF16 };
// "F32", "BF16", "F16": the header's names.
const char* safetensors_dtype_name(StoredDType dtype);
// "f32", "bf16", "f16" (as a command line names them) to the type; UserError naming `what` otherwise.
StoredDType stored_dtype_of(const std::string& name, const std::string& what);
uint64_t stored_dtype_bytes(StoredDType dtype);

// Writes `tensors` (in the given order, each converted to `dtype`) and `metadata` as a safetensors
// file, atomically: a temporary name in the same directory, fsync, rename, fsync of the directory.
void write_safetensors(const std::string& path, const std::vector<SafetensorsOutput>& tensors,
                       const std::vector<std::pair<std::string, std::string>>& metadata,
                       StoredDType dtype = StoredDType::kF32);

// IEEE binary16 and bfloat16 bit patterns to f32 (exact: every value is representable).
float f16_to_f32(uint16_t bits);
float bf16_to_f32(uint16_t bits);
// f32 to IEEE binary16, rounded to nearest even: overflow gives infinity, tiny values subnormals
// or zero, NaN stays a (quiet) NaN.
uint16_t f32_to_f16(float value);

}  // namespace loom
