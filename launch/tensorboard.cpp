#include "launch/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/base/check.h"
#include "core/base/process.h"

namespace loom {

namespace {

constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) != 0 ? 0x82F63B78u : 0u);
    table[i] = crc;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

// Protobuf's wire format: a key is (field number << 3) | wire type.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, uint64_t{field} << 3 | type); }

// Little-endian, whatever the host's byte order (protobuf's fixed32/fixed64 and TFRecord's).
void put_little_endian(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// An Event's wall_time (1) and step (2), the fields every event starts with.
std::string event_head(double wall_time, int64_t step) {
  std::string out;
  put_key(out, 1, kFixed64);
  put_little_endian(out, std::bit_cast<uint64_t>(wall_time), 8);
  if (step != 0) {  // proto3: a zero is not written
    put_key(out, 2, kVarint);
    put_varint(out, static_cast<uint64_t>(step));  // int64: two's complement, as protobuf does
  }
  return out;
}

}  // namespace

uint32_t crc32c(std::string_view bytes) {
  uint32_t crc = ~0u;
  for (const char c : bytes) crc = kCrc32cTable[(crc ^ static_cast<unsigned char>(c)) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(std::string_view bytes) {
  const uint32_t crc = crc32c(bytes);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord_frame(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 16);
  put_little_endian(out, data.size(), 8);
  put_little_endian(out, masked_crc32c(out), 4);
  out += data;
  put_little_endian(out, masked_crc32c(data), 4);
  return out;
}

std::string event_file_version(double wall_time) {
  std::string out = event_head(wall_time, 0);
  put_bytes(out, 3, "brain.Event:2");
  return out;
}

std::string event_scalars(double wall_time, int64_t step, const std::vector<TensorBoardScalar>& values) {
  std::string summary;
  for (const TensorBoardScalar& s : values) {
    std::string value;
    put_bytes(value, 1, s.tag);
    put_key(value, 2, kFixed32);
    put_little_endian(value, std::bit_cast<uint32_t>(s.value), 4);
    put_bytes(summary, 1, value);
  }
  std::string out = event_head(wall_time, step);
  put_bytes(out, 5, summary);
  return out;
}

std::string event_restart(double wall_time, int64_t step) {
  std::string session_log;
  put_key(session_log, 1, kVarint);
  put_varint(session_log, 1);  // SessionLog.START
  std::string out = event_head(wall_time, step);
  put_bytes(out, 7, session_log);
  return out;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail_user("cannot create the directory", dir, "for the TensorBoard event file:", ec.message());
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  char stem[64];
  std::snprintf(stem, sizeof stem, "events.out.tfevents.%010lld.", static_cast<long long>(now));
  const std::string base = (fs::path(dir) / stem).string() + host_name() + "." + std::to_string(::getpid());
  // TensorBoard reads a directory's files in name order: the seconds come first, so a resumed
  // run's file sorts after the file of the run it continues.
  int fd = -1;
  for (int n = 0; fd < 0; ++n) {
    path_ = n == 0 ? base : base + "." + std::to_string(n);
    fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && (errno != EEXIST || n == 99)) {
      fail_user("cannot create the TensorBoard event file", path_ + ":", std::strerror(errno),
                "(set metrics.tensorboard=false to write none)");
    }
  }
  file_ = ::fdopen(fd, "w");
  if (file_ == nullptr) {
    ::close(fd);
    fail_user("cannot open the TensorBoard event file", path_ + ":", std::strerror(errno));
  }
  if (!write(event_file_version(now))) {
    fail_user("cannot write the TensorBoard event file", path_ + ":", error_,
              "(set metrics.tensorboard=false to write none)");
  }
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

bool TensorBoardWriter::write(const std::string& event) {
  if (file_ == nullptr) return false;
  const std::string record = tfrecord_frame(event);
  if (std::fwrite(record.data(), 1, record.size(), file_) == record.size() && std::fflush(file_) == 0) return true;
  error_ = std::strerror(errno);
  std::fclose(file_);
  file_ = nullptr;
  return false;
}

}  // namespace loom
