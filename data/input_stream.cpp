#include "data/input_stream.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <string_view>
#include <utility>

#include "core/base/check.h"

namespace loom {

namespace {

constexpr size_t kReadChunk = size_t{1} << 20;
constexpr unsigned char kGzipMagic[] = {0x1f, 0x8b};
constexpr unsigned char kZstdMagic[] = {0x28, 0xb5, 0x2f, 0xfd};

bool starts_with_bytes(std::string_view bytes, const unsigned char* magic, size_t n) {
  return bytes.size() >= n && std::memcmp(bytes.data(), magic, n) == 0;
}

Compression detected(std::string_view first_bytes) {
  if (starts_with_bytes(first_bytes, kGzipMagic, sizeof(kGzipMagic))) return Compression::kGzip;
  if (starts_with_bytes(first_bytes, kZstdMagic, sizeof(kZstdMagic))) return Compression::kZstd;
  return Compression::kNone;
}

// The compression a name promises (kNone for any other name). UserError for the compressed
// formats Loom does not read.
Compression named(const std::string& path) {
  if (path.ends_with(".gz")) return Compression::kGzip;
  if (path.ends_with(".zst") || path.ends_with(".zstd")) return Compression::kZstd;
  for (const char* other : {".xz", ".bz2", ".lz4", ".zip"}) {
    if (path.ends_with(other)) {
      fail_user("input file", path, "is named", std::string(other) + ",", "a compression Loom does not read;",
                "decompress it, or recompress it with gzip or zstd");
    }
  }
  return Compression::kNone;
}

const char* magic_text(Compression c) { return c == Compression::kGzip ? "1f 8b" : "28 b5 2f fd"; }

}  // namespace

struct InputStream::Codec {
  z_stream gzip{};
  bool gzip_ready = false;
  bool gzip_between_members = false;  // a member just ended (the file may end here)
  ZSTD_DCtx* zstd = nullptr;
  size_t zstd_hint = 0;  // ZSTD_decompressStream's last return: 0 when a frame is complete

  ~Codec() {
    if (gzip_ready) inflateEnd(&gzip);
    ZSTD_freeDCtx(zstd);
  }
};

const char* compression_name(Compression compression) {
  switch (compression) {
    case Compression::kGzip: return "gzip";
    case Compression::kZstd: return "zstd";
    case Compression::kNone: break;
  }
  return "plain";
}

std::string uncompressed_name(const std::string& path) {
  for (const char* suffix : {".gz", ".zst", ".zstd"}) {
    const std::string s = suffix;
    if (path.size() > s.size() && path.ends_with(s)) return path.substr(0, path.size() - s.size());
  }
  return path;
}

Compression compression_of(const std::string& path) {
  const Compression promised = named(path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_user("cannot read input file", path + ":", std::strerror(errno));
  char first[sizeof(kZstdMagic)];
  ssize_t got;
  do {
    got = ::pread(fd, first, sizeof(first), 0);
  } while (got < 0 && errno == EINTR);
  const int error = errno;
  ::close(fd);
  if (got < 0) fail_user("error while reading input file", path + ":", std::strerror(error));
  const Compression found = detected(std::string_view(first, static_cast<size_t>(got)));
  if (promised != Compression::kNone && found != promised) {
    const std::string what = got == 0 ? "is empty" : str_cat("does not start with the", compression_name(promised),
                                                           "magic bytes", magic_text(promised));
    fail_user("input file", path, "is named as", compression_name(promised), "data but",
              what + "; recompress it or rename it");
  }
  return found;
}

InputStream::InputStream(std::string path) : path_(std::move(path)), compression_(compression_of(path_)) {
  codec_ = std::make_unique<Codec>();
  if (compression_ == Compression::kGzip) {
    // 16 + MAX_WBITS: gzip framing only (header and CRC-32 checked), not raw zlib.
    if (inflateInit2(&codec_->gzip, 16 + MAX_WBITS) != Z_OK) fail_user("zlib could not start on", path_);
    codec_->gzip_ready = true;
  } else if (compression_ == Compression::kZstd) {
    codec_->zstd = ZSTD_createDCtx();
    if (codec_->zstd == nullptr) fail_user("zstd could not start on", path_);
  }
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail_user("cannot read input file", path_ + ":", std::strerror(errno));
}

InputStream::~InputStream() {
  if (fd_ >= 0) ::close(fd_);
}

bool InputStream::fill() {
  if (eof_) return false;
  in_.erase(0, in_pos_);
  in_pos_ = 0;
  const size_t at = in_.size();
  in_.resize(at + kReadChunk);
  ssize_t got;
  do {
    got = ::read(fd_, in_.data() + at, kReadChunk);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    const int error = errno;
    in_.resize(at);
    fail_user("error while reading input file", path_ + ":", std::strerror(error));
  }
  in_.resize(at + static_cast<size_t>(got));
  file_offset_ += static_cast<uint64_t>(got);
  eof_ = got == 0;
  return !eof_;
}

size_t InputStream::read(std::string& out, size_t n) {
  LOOM_CHECK(n > 0, "read of 0 bytes from", path_);
  switch (compression_) {
    case Compression::kGzip: return read_gzip(out, n);
    case Compression::kZstd: return read_zstd(out, n);
    case Compression::kNone: break;
  }
  return read_plain(out, n);
}

size_t InputStream::read_plain(std::string& out, size_t n) {
  if (in_pos_ == in_.size() && !fill()) return 0;
  const size_t take = std::min(n, in_.size() - in_pos_);
  out.append(in_, in_pos_, take);
  in_pos_ += take;
  return take;
}

void InputStream::fail_corrupt(const std::string& why) const {
  fail_user("input file", path_, "is not valid", compression_name(compression_), "data near byte offset",
            file_bytes_read(), "(" + why + "): a damaged file; fetch or compress it again, or leave it out");
}

void InputStream::fail_truncated() const {
  fail_user("input file", path_, "ends inside its", compression_name(compression_), "data after", file_offset_,
            "bytes (a truncated file); fetch or compress it again, or leave it out");
}

size_t InputStream::read_gzip(std::string& out, size_t n) {
  z_stream& z = codec_->gzip;
  const size_t at = out.size();
  out.resize(at + n);
  size_t produced = 0;
  while (produced == 0) {
    if (in_pos_ == in_.size() && !fill()) {
      if (codec_->gzip_between_members) break;
      fail_truncated();
    }
    const size_t avail_in = std::min(in_.size() - in_pos_, size_t{UINT_MAX});
    const size_t avail_out = std::min(n, size_t{UINT_MAX});
    z.next_in = reinterpret_cast<Bytef*>(in_.data() + in_pos_);
    z.avail_in = static_cast<uInt>(avail_in);
    z.next_out = reinterpret_cast<Bytef*>(out.data() + at);
    z.avail_out = static_cast<uInt>(avail_out);
    const int rc = inflate(&z, Z_NO_FLUSH);
    in_pos_ += avail_in - z.avail_in;
    produced = avail_out - z.avail_out;
    codec_->gzip_between_members = false;
    if (rc == Z_STREAM_END) {
      // A member ended: the file ends here, or another member follows.
      if (in_.size() - in_pos_ < sizeof(kGzipMagic)) fill();
      const std::string_view rest = std::string_view(in_).substr(in_pos_);
      if (!rest.empty() && !starts_with_bytes(rest, kGzipMagic, sizeof(kGzipMagic))) {
        fail_user("input file", path_, "has bytes after its last gzip member, at byte offset", file_bytes_read(),
                  "that are not gzip data: a damaged file; compress it again, or leave it out");
      }
      inflateReset(&z);
      codec_->gzip_between_members = true;
    } else if (rc == Z_DATA_ERROR) {
      fail_corrupt(z.msg != nullptr ? z.msg : "bad data");
    } else if (rc == Z_MEM_ERROR) {
      fail_user("zlib ran out of memory reading", path_);
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      fail_corrupt("zlib error " + std::to_string(rc));
    }
  }
  out.resize(at + produced);
  return produced;
}

size_t InputStream::read_zstd(std::string& out, size_t n) {
  const size_t at = out.size();
  out.resize(at + n);
  size_t produced = 0;
  while (produced == 0) {
    const bool more = in_pos_ < in_.size() || fill();
    if (!more && codec_->zstd_hint == 0) break;  // the last frame is complete and flushed
    ZSTD_inBuffer in{in_.data() + in_pos_, in_.size() - in_pos_, 0};
    ZSTD_outBuffer sink{out.data() + at, n, 0};
    const size_t rc = ZSTD_decompressStream(codec_->zstd, &sink, &in);
    if (ZSTD_isError(rc)) fail_corrupt(ZSTD_getErrorName(rc));
    in_pos_ += in.pos;
    produced = sink.pos;
    codec_->zstd_hint = rc;
    if (produced == 0 && !more) fail_truncated();
  }
  out.resize(at + produced);
  return produced;
}

}  // namespace loom
