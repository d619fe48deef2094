#include "checkpoints/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/base/check.h"
#include "core/base/dtype.h"
#include "core/base/file_io.h"
#include "core/base/mapped_file.h"
#include "data/json.h"

namespace loom {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace {

// Largest element count of one tensor we accept (2^40): keeps every product below 2^63.
constexpr int64_t kMaxElements = int64_t{1} << 40;

// Bytes per element of the dtypes the format defines; 0 for a name it does not.
uint64_t dtype_bytes(const std::string& dtype) {
  static const std::map<std::string, uint64_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2},
      {"U16", 2},  {"F16", 2}, {"BF16", 2}, {"I32", 4},    {"U32", 4},     {"F32", 4},
      {"F64", 8},  {"I64", 8}, {"U64", 8},
  };
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

// A JSON string literal; the names and values Loom writes are ASCII, but quote them properly.
std::string json_quoted(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", c);
      out += esc;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

}  // namespace

float f16_to_f32(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits >> 15) << 31;
  const uint32_t exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  const uint32_t out = exponent == 0x1f ? sign | 0x7f800000u | (mantissa << 13)  // inf, NaN
                                        : sign | ((exponent + 112) << 23) | (mantissa << 13);
  return std::bit_cast<float>(out);
}

float bf16_to_f32(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t f32_to_f16(float value) {
  const uint32_t u = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));  // NaN
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504: infinity
  const int exponent = static_cast<int>(magnitude >> 23) - 127;
  if (exponent < -25) return sign;  // below half the smallest subnormal (2^-25): zero
  // The significand with its implicit bit, shifted so that the f16 result's last bit is bit 0
  // (subnormals lose more bits); then round to nearest even on the dropped bits.
  const uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
  const int shift = exponent < -14 ? 13 + (-14 - exponent) : 13;
  uint32_t kept = significand >> shift;
  const uint32_t dropped = significand & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (dropped > half || (dropped == half && (kept & 1u))) ++kept;
  if (exponent < -14) return static_cast<uint16_t>(sign | kept);  // a carry into bit 10 is the smallest normal
  // kept holds the implicit bit at bit 10; a carry out of the significand bumps the exponent.
  return static_cast<uint16_t>(sign | ((static_cast<uint32_t>(exponent + 15) << 10) + (kept - 0x400u)));
}

const char* safetensors_dtype_name(StoredDType dtype) {
  switch (dtype) {
    case StoredDType::kF32: return "F32";
    case StoredDType::kBF16: return "BF16";
    case StoredDType::kF16: return "F16";
  }
  return "?";
}

StoredDType stored_dtype_of(const std::string& name, const std::string& what) {
  if (name == "f32" || name == "F32") return StoredDType::kF32;
  if (name == "bf16" || name == "BF16") return StoredDType::kBF16;
  if (name == "f16" || name == "F16") return StoredDType::kF16;
  fail_user(what, "is", "\"" + name + "\";", "expected f32, bf16 or f16");
}

uint64_t stored_dtype_bytes(StoredDType dtype) { return dtype == StoredDType::kF32 ? 4 : 2; }

int64_t SafetensorsFile::Entry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : path_(path), file_(std::make_unique<MappedFile>(path, "safetensors file")) {
  data_ = file_->data();
  size_ = file_->size();
  parse_header();
}

SafetensorsFile::~SafetensorsFile() = default;

void SafetensorsFile::parse_header() {
  auto bad_file = [&](const auto&... why) { fail_user("safetensors file", path_, why...); };
  if (size_ < 8) bad_file("is not a safetensors file: it has", size_, "bytes, fewer than the 8 of its header length");
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, data_, 8);
  if (header_bytes > size_ - 8) {
    bad_file("is truncated or not a safetensors file: its header length", header_bytes,
             "runs past the end of the file (", size_, "bytes)");
  }
  if (header_bytes > kMaxSafetensorsHeaderBytes) bad_file("has a header of", header_bytes, "bytes, more than the 100 MB allowed");
  buffer_start_ = 8 + header_bytes;
  const uint64_t buffer_size = size_ - buffer_start_;
  JsonValue header;
  try {
    header = json_parse(std::string_view(data_ + 8, header_bytes));
  } catch (const JsonError& e) {
    bad_file("has a corrupt header:", e.what(), "(counted from byte 8)");
  }
  if (header.kind != JsonValue::Kind::kObject) {
    bad_file("has a header that is", json_kind_name(header.kind), "instead of an object");
  }
  for (const auto& [name, value] : header.members) {
    if (name == "__metadata__") {
      if (value.kind != JsonValue::Kind::kObject) bad_file("has a __metadata__ that is not an object");
      for (const auto& [key, v] : value.members) {
        if (v.kind != JsonValue::Kind::kString) bad_file("has __metadata__ entry", "\"" + key + "\"", "that is not a string");
        metadata_[key] = v.text;
      }
      continue;
    }
    auto bad = [&](const auto&... why) { fail_user("safetensors file", path_, "tensor", "\"" + name + "\"", why...); };
    if (index_.count(name)) bad("is listed twice");
    if (value.kind != JsonValue::Kind::kObject) bad("is described by", json_kind_name(value.kind), "instead of an object");
    Entry e;
    e.name = name;
    const JsonValue* dtype = value.find("dtype");
    const JsonValue* shape = value.find("shape");
    const JsonValue* offsets = value.find("data_offsets");
    if (!dtype || dtype->kind != JsonValue::Kind::kString) bad("has no \"dtype\" string");
    if (!shape || shape->kind != JsonValue::Kind::kArray) bad("has no \"shape\" array");
    if (!offsets || offsets->kind != JsonValue::Kind::kArray || offsets->array.size() != 2) {
      bad("has no \"data_offsets\" pair");
    }
    e.dtype = dtype->text;
    const uint64_t element_bytes = dtype_bytes(e.dtype);
    if (element_bytes == 0) bad("has unknown dtype", "\"" + e.dtype + "\"");
    int64_t numel = 1;
    for (const JsonValue& d : shape->array) {
      const std::optional<int64_t> dim = d.as_int64();
      if (!dim || *dim < 0 || *dim > kMaxElements) bad("has a shape entry that is not an integer in [0, 2^40]");
      e.shape.push_back(*dim);
      if (*dim != 0 && numel > kMaxElements / *dim) bad("is too large (more than 2^40 elements)");
      numel *= *dim;
    }
    const std::optional<int64_t> begin = offsets->array[0].as_int64(), end = offsets->array[1].as_int64();
    if (!begin || !end || *begin < 0 || *end < 0) bad("has data_offsets that are not non-negative integers");
    e.begin = static_cast<uint64_t>(*begin);
    e.end = static_cast<uint64_t>(*end);
    if (e.begin > e.end || e.end > buffer_size) {
      bad("has data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ")",
          "outside the data buffer of", buffer_size, "bytes (truncated or corrupt file)");
    }
    const uint64_t expected = static_cast<uint64_t>(numel) * element_bytes;
    if (e.end - e.begin != expected) {
      bad("holds", e.end - e.begin, "bytes but its dtype", e.dtype, "and shape imply", expected);
    }
    index_[name] = tensors_.size();
    tensors_.push_back(std::move(e));
  }
}

const SafetensorsFile::Entry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::vector<float> SafetensorsFile::read_f32(const Entry& entry) const {
  const size_t n = static_cast<size_t>(entry.numel());
  const char* src = data_ + buffer_start_ + entry.begin;
  std::vector<float> out(n);
  if (entry.dtype == "F32") {
    if (n > 0) std::memcpy(out.data(), src, n * 4);
  } else if (entry.dtype == "BF16" || entry.dtype == "F16") {
    const bool bf16 = entry.dtype == "BF16";
    for (size_t i = 0; i < n; ++i) {
      uint16_t bits = 0;
      std::memcpy(&bits, src + 2 * i, 2);
      out[i] = bf16 ? bf16_to_f32(bits) : f16_to_f32(bits);
    }
  } else {
    fail_user("safetensors file", path_, "tensor", "\"" + entry.name + "\"", "has dtype", entry.dtype,
              "; Loom reads F32, BF16 and F16");
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsOutput>& tensors,
                       const std::vector<std::pair<std::string, std::string>>& metadata, StoredDType dtype) {
  const uint64_t element_bytes = stored_dtype_bytes(dtype);
  const std::string dtype_field = std::string("{\"dtype\":\"") + safetensors_dtype_name(dtype) + "\",\"shape\":[";
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (size_t i = 0; i < metadata.size(); ++i) {
      header += (i ? "," : "") + json_quoted(metadata[i].first) + ":" + json_quoted(metadata[i].second);
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const SafetensorsOutput& t : tensors) {
    uint64_t numel = 1;
    std::string shape;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      LOOM_CHECK(t.shape[d] >= 0, "tensor", t.name, "has dimension", t.shape[d]);
      numel *= static_cast<uint64_t>(t.shape[d]);
      shape += (d ? "," : "") + std::to_string(t.shape[d]);
    }
    const uint64_t end = offset + numel * element_bytes;
    header += (header.size() > 1 ? "," : "") + json_quoted(t.name) + ":" + dtype_field + shape +
              "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(end) + "]}";
    offset = end;
  }
  header += "}";
  // Pad with spaces so that the data buffer starts 8-byte aligned, as the reference writer does.
  header.append((8 - header.size() % 8) % 8, ' ');
  const uint64_t header_bytes = header.size();
  header.insert(0, reinterpret_cast<const char*>(&header_bytes), 8);

  const std::filesystem::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail_user("cannot create directory", dir, ":", ec.message());
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_user("cannot write", tmp, ":", std::strerror(errno));
  try {
    write_fully(fd, header.data(), header.size(), tmp);
    std::vector<float> values;
    std::vector<uint16_t> halves;
    for (const SafetensorsOutput& t : tensors) {
      int64_t numel = 1;
      for (int64_t d : t.shape) numel *= d;
      values.assign(static_cast<size_t>(numel), 0.0f);
      t.fill(values.data());
      if (dtype == StoredDType::kF32) {
        write_fully(fd, values.data(), values.size() * 4, tmp);
        continue;
      }
      halves.resize(values.size());
      for (size_t i = 0; i < values.size(); ++i) {
        halves[i] = dtype == StoredDType::kBF16 ? float_to_bf16(values[i]).bits : f32_to_f16(values[i]);
      }
      write_fully(fd, halves.data(), halves.size() * 2, tmp);
    }
    if (::fsync(fd) != 0) fail_user("flushing", tmp, "to disk failed:", std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail_user("closing", tmp, "failed:", std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    fail_user("renaming", tmp, "to", path, "failed:", std::strerror(errno));
  }
  sync_directory(dir);
}

}  // namespace loom
