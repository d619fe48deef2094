// The byte format of one checkpoint-reader fuzz input, shared by the fuzz target and the seed
// writer:
//   u32 LE  manifest length M, then M bytes of manifest (clamped to what is there)
//   u8      number of shard files N
//   N x u32 LE  file lengths (a missing length reads as 0), then the files' bytes one after
//               another (each clamped to what is left)
// Every byte string decodes to something, so that the fuzzer spends its time in the reader.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace loom::fuzz {

struct CheckpointInput {
  std::string manifest;
  std::vector<std::string> files;
};

namespace detail {

class ByteCursor {
 public:
  ByteCursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4 && pos_ < size_; ++i) v |= static_cast<uint32_t>(data_[pos_++]) << (8 * i);
    return v;
  }
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::string bytes(size_t n) {
    n = std::min(n, size_ - pos_);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

inline void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace detail

inline CheckpointInput decode_checkpoint_input(const uint8_t* data, size_t size) {
  detail::ByteCursor in(data, size);
  CheckpointInput result;
  result.manifest = in.bytes(in.u32());
  const size_t n = in.u8();
  std::vector<uint32_t> lengths(n);
  for (uint32_t& len : lengths) len = in.u32();
  for (uint32_t len : lengths) result.files.push_back(in.bytes(len));
  return result;
}

// The inverse of decode_checkpoint_input (at most 255 files, each under 4 GiB).
inline std::string encode_checkpoint_input(const CheckpointInput& input) {
  std::string out;
  detail::put_u32(out, static_cast<uint32_t>(input.manifest.size()));
  out += input.manifest;
  out.push_back(static_cast<char>(input.files.size()));
  for (const std::string& f : input.files) detail::put_u32(out, static_cast<uint32_t>(f.size()));
  for (const std::string& f : input.files) out += f;
  return out;
}

}  // namespace loom::fuzz
