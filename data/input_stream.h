// An input file of `loom prepare` read front to back as bytes: plain, or gzip- or
// zstd-compressed, decompressed as it streams (a buffer of compressed and one of decompressed
// bytes, never the whole file).
//
// The first bytes decide (gzip 1f 8b, zstd 28 b5 2f fd): neither can start valid UTF-8 text, so a
// text file is never mistaken for a compressed one. The name must agree: a file named *.gz or
// *.zst (*.zstd) that is not what its name says is an error, and so is one named for a format
// Loom does not read (*.xz, *.bz2, *.lz4, *.zip), rather than bytes read as text. A gzip file may
// hold several members one after the other (as `cat a.gz b.gz` and pigz make), a zstd file
// several frames. Corrupt data, a failed checksum, a file that ends inside a member or frame, or
// bytes after the last member: one UserError naming the file and the compressed byte offset.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace loom {

enum class Compression { kNone, kGzip, kZstd };

// "gzip", "zstd" or "plain".
const char* compression_name(Compression compression);

// `path` without a compression suffix: "a/b.jsonl.gz" -> "a/b.jsonl"; others unchanged. What
// the name says the file holds once decompressed.
std::string uncompressed_name(const std::string& path);

// What `path` holds, by its first bytes. UserError if it cannot be read, or if its name promises
// a compression its first bytes do not show (or one Loom does not read).
Compression compression_of(const std::string& path);

class InputStream {
 public:
  // Opens `path`; UserError as compression_of.
  explicit InputStream(std::string path);
  ~InputStream();
  InputStream(const InputStream&) = delete;
  InputStream& operator=(const InputStream&) = delete;

  // Appends up to `n` (> 0) decompressed bytes to `out`; returns how many, 0 only at the end.
  size_t read(std::string& out, size_t n);

  const std::string& path() const { return path_; }
  Compression compression() const { return compression_; }
  // Bytes of the file itself consumed so far (compressed bytes for a compressed file).
  uint64_t file_bytes_read() const { return file_offset_ - (in_.size() - in_pos_); }

 private:
  struct Codec;  // zlib's or zstd's decompression state
  // Reads more of the file into in_ (keeping what is unconsumed); false at its end.
  bool fill();
  size_t read_plain(std::string& out, size_t n);
  size_t read_gzip(std::string& out, size_t n);
  size_t read_zstd(std::string& out, size_t n);
  [[noreturn]] void fail_corrupt(const std::string& why) const;
  [[noreturn]] void fail_truncated() const;

  std::string path_;
  int fd_ = -1;
  Compression compression_ = Compression::kNone;
  std::string in_;      // compressed bytes read ahead: in_[in_pos_, size)
  size_t in_pos_ = 0;
  bool eof_ = false;
  uint64_t file_offset_ = 0;  // bytes read from the file into in_
  std::unique_ptr<Codec> codec_;
};

}  // namespace loom
