#include "data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "core/base/check.h"

namespace loom {

static_assert(std::endian::native == std::endian::little, "token shards are read in place: little-endian hosts only");

namespace {

// Header field offsets (docs/formats.md).
constexpr size_t kVersionAt = 8, kDTypeAt = 12, kVocabAt = 16, kFlagsAt = 20, kTokensAt = 24,
                 kDocumentsAt = 32, kTokensHashAt = 40, kMaskHashAt = 48, kMetaHashAt = 56;
constexpr uint64_t kMaxCount = uint64_t{1} << 60;  // keeps size arithmetic far from overflow

template <typename T>
T load(const uint8_t* bytes, size_t at) {
  T value;
  std::memcpy(&value, bytes + at, sizeof(T));
  return value;
}

template <typename T>
void store(uint8_t* bytes, size_t at, T value) {
  std::memcpy(bytes + at, &value, sizeof(T));
}

uint64_t meta_checksum(const uint8_t* header, const void* index, size_t index_bytes) {
  return XXH64(index, index_bytes, XXH64(header, kMetaHashAt, 0));
}

// The index of the first of n ids that is >= vocab, or n. The common case (none) is one
// branch-free pass.
template <typename Source>
uint64_t first_outside(const Source* src, uint64_t n, uint32_t vocab) {
  Source largest = 0;
  for (uint64_t i = 0; i < n; ++i) largest = std::max(largest, src[i]);
  if (largest < vocab) return n;
  uint64_t i = 0;
  while (src[i] < vocab) ++i;
  return i;
}

template <typename Source>
uint32_t convert(const Source* src, uint64_t n, int32_t* out) {
  Source largest = 0;
  for (uint64_t i = 0; i < n; ++i) {
    largest = std::max(largest, src[i]);
    out[i] = static_cast<int32_t>(src[i]);
  }
  return largest;
}

}  // namespace

TokenType token_type_for(uint32_t vocab_size) {
  return vocab_size <= 65536 ? TokenType::kU16 : TokenType::kU32;
}

uint64_t shard_index_offset(TokenType dtype, uint64_t tokens) {
  return (kShardHeaderBytes + tokens * static_cast<uint64_t>(dtype) + 7) / 8 * 8;
}

uint64_t shard_mask_bytes(uint64_t tokens) { return (tokens + 7) / 8 * 8; }

std::array<uint8_t, kShardHeaderBytes> encode_shard_header(const ShardHeader& h) {
  std::array<uint8_t, kShardHeaderBytes> bytes{};
  std::memcpy(bytes.data(), kShardMagic, sizeof(kShardMagic));
  store<uint32_t>(bytes.data(), kVersionAt, h.version);
  store<uint32_t>(bytes.data(), kDTypeAt, static_cast<uint32_t>(h.dtype));
  store<uint32_t>(bytes.data(), kVocabAt, h.vocab_size);
  store<uint32_t>(bytes.data(), kFlagsAt, h.flags);
  store<uint64_t>(bytes.data(), kTokensAt, h.tokens);
  store<uint64_t>(bytes.data(), kDocumentsAt, h.documents);
  store<uint64_t>(bytes.data(), kTokensHashAt, h.tokens_xxh64);
  store<uint64_t>(bytes.data(), kMaskHashAt, h.mask_xxh64);
  store<uint64_t>(bytes.data(), kMetaHashAt, h.meta_xxh64);
  return bytes;
}

uint64_t shard_meta_checksum(const std::array<uint8_t, kShardHeaderBytes>& header,
                             std::span<const uint64_t> document_ends) {
  return meta_checksum(header.data(), document_ends.data(), document_ends.size_bytes());
}

TokenShard::TokenShard(std::string path) : path_(std::move(path)) {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_user("cannot open token shard", path_, ":", std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    fail_user("cannot read the size of token shard", path_, ":", why);
  }
  const uint64_t file_bytes = static_cast<uint64_t>(info.st_size);
  if (file_bytes < kShardHeaderBytes) {
    ::close(fd);
    fail_user("token shard", path_, "is", file_bytes, "bytes, shorter than its", kShardHeaderBytes,
              "byte header (a truncated file, or not a shard)");
  }
  void* mapped = ::mmap(nullptr, file_bytes, PROT_READ, MAP_SHARED, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (mapped == MAP_FAILED) fail_user("cannot map token shard", path_, ":", std::strerror(map_errno));
  // Training reads windows of a few KiB in shuffled order: without this hint every page fault
  // would read ahead up to the device's read_ahead_kb (MiBs) of tokens nobody asked for.
  ::madvise(mapped, file_bytes, MADV_RANDOM);
  base_ = static_cast<const uint8_t*>(mapped);
  file_bytes_ = file_bytes;
  try {
    validate(file_bytes);
  } catch (...) {
    release();
    throw;
  }
}

void TokenShard::validate(uint64_t file_bytes) {
  const std::string& p = path_;
  if (std::memcmp(base_, kShardMagic, sizeof(kShardMagic)) != 0) {
    fail_user(p, "is not a Loom token shard: its first 8 bytes (byte offset 0) are not the magic LOOMTOKS");
  }
  header_.version = load<uint32_t>(base_, kVersionAt);
  if (header_.version != kShardVersion && header_.version != kShardMaskedVersion) {
    fail_user("token shard", p, "has format version", header_.version, "at byte offset", kVersionAt,
              "but this Loom reads versions", kShardVersion, "and", kShardMaskedVersion);
  }
  const uint32_t dtype = load<uint32_t>(base_, kDTypeAt);
  if (dtype != 2 && dtype != 4) {
    fail_user("token shard", p, "has dtype", dtype, "at byte offset", kDTypeAt,
              "but the format knows only 2 (uint16) and 4 (uint32)");
  }
  header_.dtype = static_cast<TokenType>(dtype);
  header_.vocab_size = load<uint32_t>(base_, kVocabAt);
  const uint32_t max_vocab = header_.dtype == TokenType::kU16 ? 65536u : uint32_t{std::numeric_limits<int32_t>::max()};
  if (header_.vocab_size == 0 || header_.vocab_size > max_vocab) {
    fail_user("token shard", p, "has vocabulary size", header_.vocab_size, "at byte offset", kVocabAt,
              "but its dtype", dtype, "holds 1 to", max_vocab, "token ids");
  }
  header_.flags = load<uint32_t>(base_, kFlagsAt);
  const uint32_t known = header_.version == kShardVersion ? kShardLastDocumentContinues
                                                          : kShardLastDocumentContinues | kShardHasLossMask;
  if ((header_.flags & ~known) != 0) {
    fail_user("token shard", p, "has unknown flags", header_.flags, "at byte offset", kFlagsAt,
              header_.version == kShardVersion ? "(version 1 defines only bit 0)" : "(version 2 defines bits 0 and 1)");
  }
  header_.tokens = load<uint64_t>(base_, kTokensAt);
  header_.documents = load<uint64_t>(base_, kDocumentsAt);
  header_.tokens_xxh64 = load<uint64_t>(base_, kTokensHashAt);
  header_.mask_xxh64 = load<uint64_t>(base_, kMaskHashAt);
  header_.meta_xxh64 = load<uint64_t>(base_, kMetaHashAt);
  const uint64_t tokens = header_.tokens, documents = header_.documents;
  if (tokens > kMaxCount || documents > kMaxCount) {
    fail_user("token shard", p, "is", file_bytes, "bytes but its header claims", tokens, "tokens and",
              documents, "documents at byte offset", kTokensAt, "(a damaged header)");
  }
  const uint64_t index_at = shard_index_offset(header_.dtype, tokens);
  const uint64_t expected = index_at + 8 * documents + (has_loss_mask() ? shard_mask_bytes(tokens) : 0);
  if (expected != file_bytes) {
    fail_user("token shard", p, "is", file_bytes, "bytes but its header claims", tokens, "tokens and",
              documents, "documents at byte offset", kTokensAt, "which take", expected,
              "bytes (a truncated or damaged file)");
  }
  uint64_t previous = 0;
  for (uint64_t i = 0; i < documents; ++i) {
    const uint64_t at = index_at + 8 * i;
    const uint64_t end = load<uint64_t>(base_, at);
    if (end > tokens) {
      fail_user("token shard", p, "has document index entry", i, "at byte offset", at, "equal to", end,
                "beyond its", tokens, "tokens");
    }
    if (end <= previous) {
      fail_user("token shard", p, "has document index entry", i, "at byte offset", at, "equal to", end,
                "not above the previous entry,", str_cat(previous) + ": document ends must increase");
    }
    previous = end;
  }
  if (previous != tokens) {
    const uint64_t at = documents == 0 ? index_at : index_at + 8 * (documents - 1);
    fail_user("token shard", p, "has a document index ending at token", previous, "at byte offset", at,
              "but it holds", tokens, "tokens");
  }
  if (meta_checksum(base_, base_ + index_at, 8 * documents) != header_.meta_xxh64) {
    fail_user("token shard", p, "is corrupt: the checksum at byte offset", kMetaHashAt,
              "does not match its header and document index");
  }
}

TokenShard::~TokenShard() { release(); }

TokenShard::TokenShard(TokenShard&& other) noexcept
    : path_(std::move(other.path_)),
      base_(std::exchange(other.base_, nullptr)),
      file_bytes_(std::exchange(other.file_bytes_, 0)),
      header_(other.header_) {}

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    base_ = std::exchange(other.base_, nullptr);
    file_bytes_ = std::exchange(other.file_bytes_, 0);
    header_ = other.header_;
  }
  return *this;
}

void TokenShard::release() noexcept {
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), file_bytes_);
  base_ = nullptr;
  file_bytes_ = 0;
}

uint64_t TokenShard::mask_offset() const {
  return shard_index_offset(header_.dtype, header_.tokens) + 8 * header_.documents;
}

void TokenShard::read_loss_mask(uint64_t begin, uint64_t n, uint8_t* out) const {
  LOOM_CHECK(begin <= header_.tokens && n <= header_.tokens - begin, "mask of tokens [", begin, ",", begin + n,
             ") of shard", path_, "with", header_.tokens);
  if (!has_loss_mask()) {
    std::memset(out, 1, n);
    return;
  }
  const uint8_t* src = base_ + mask_offset() + begin;
  uint8_t largest = 0;
  for (uint64_t i = 0; i < n; ++i) {
    out[i] = src[i];
    largest = std::max(largest, src[i]);
  }
  if (largest <= 1) return;
  for (uint64_t i = 0; i < n; ++i) {
    if (out[i] > 1) fail_mask(begin + i, out[i]);
  }
}

void TokenShard::fail_mask(uint64_t index, uint8_t value) const {
  fail_user("token shard", path_, "holds loss mask byte", int{value}, "at byte offset", mask_offset() + index,
            "where only 0 and 1 are allowed (a corrupt shard)");
}

uint64_t TokenShard::document_end(uint64_t i) const {
  LOOM_CHECK(i < header_.documents, "document", i, "of shard", path_, "with", header_.documents);
  return load<uint64_t>(base_, shard_index_offset(header_.dtype, header_.tokens) + 8 * i);
}

void TokenShard::read(uint64_t begin, uint64_t n, int32_t* out) const {
  LOOM_CHECK(begin <= header_.tokens && n <= header_.tokens - begin, "tokens [", begin, ",", begin + n,
             ") of shard", path_, "with", header_.tokens);
  const uint8_t* src = base_ + kShardHeaderBytes + begin * static_cast<uint64_t>(header_.dtype);
  // The mapping is page-aligned and token data starts at byte 64, so both views are aligned.
  const uint32_t largest = header_.dtype == TokenType::kU16
                               ? convert(reinterpret_cast<const uint16_t*>(src), n, out)
                               : convert(reinterpret_cast<const uint32_t*>(src), n, out);
  if (largest < header_.vocab_size) return;
  for (uint64_t i = 0; i < n; ++i) {
    const uint32_t id = static_cast<uint32_t>(out[i]);
    if (id >= header_.vocab_size) fail_token(begin + i, id);
  }
}

void TokenShard::fail_token(uint64_t index, uint32_t id) const {
  fail_user("token shard", path_, "holds token id", id, "at byte offset",
            kShardHeaderBytes + index * static_cast<uint64_t>(header_.dtype), "outside its vocabulary of",
            header_.vocab_size, "(a corrupt shard, or one written with another tokenizer)");
}

bool TokenShard::verify_tokens(std::stop_token stop) const {
  constexpr uint64_t kChunk = uint64_t{1} << 20;
  const std::unique_ptr<XXH64_state_t, XXH_errorcode (*)(XXH64_state_t*)> hash(XXH64_createState(), XXH64_freeState);
  LOOM_CHECK(hash != nullptr, "xxHash state for", path_);
  XXH64_reset(hash.get(), 0);
  const uint64_t width = static_cast<uint64_t>(header_.dtype);
  uint64_t first_bad = header_.tokens;  // the first id outside the vocabulary, if any
  void* mapping = const_cast<uint8_t*>(base_);
  ::madvise(mapping, file_bytes_, MADV_SEQUENTIAL);  // one pass front to back: read ahead
  bool finished = true;
  for (uint64_t begin = 0; begin < header_.tokens; begin += kChunk) {
    if (stop.stop_requested()) {
      finished = false;
      break;
    }
    const uint64_t n = std::min(kChunk, header_.tokens - begin);
    const uint8_t* src = base_ + kShardHeaderBytes + begin * width;
    XXH64_update(hash.get(), src, n * width);
    if (first_bad == header_.tokens) {
      const uint64_t bad = header_.dtype == TokenType::kU16
                               ? first_outside(reinterpret_cast<const uint16_t*>(src), n, header_.vocab_size)
                               : first_outside(reinterpret_cast<const uint32_t*>(src), n, header_.vocab_size);
      if (bad < n) first_bad = begin + bad;
    }
  }
  ::madvise(mapping, file_bytes_, MADV_RANDOM);
  if (!finished) return false;
  if (XXH64_digest(hash.get()) != header_.tokens_xxh64) {
    fail_user("token shard", path_, "is corrupt: its tokens, byte offsets", kShardHeaderBytes, "to",
              str_cat(kShardHeaderBytes + header_.tokens * width) + ", do not match the checksum at byte offset",
              str_cat(kTokensHashAt) + "; prepare the dataset again with loom prepare");
  }
  if (first_bad < header_.tokens) {
    const uint8_t* at = base_ + kShardHeaderBytes + first_bad * width;
    fail_token(first_bad, header_.dtype == TokenType::kU16 ? load<uint16_t>(at, 0) : load<uint32_t>(at, 0));
  }
  if (has_loss_mask()) {
    const uint8_t* mask = base_ + mask_offset();
    if (XXH64(mask, header_.tokens, 0) != header_.mask_xxh64) {
      fail_user("token shard", path_, "is corrupt: its loss mask, byte offsets", mask_offset(), "to",
                str_cat(mask_offset() + header_.tokens) + ", does not match the checksum at byte offset",
                str_cat(kMaskHashAt) + "; prepare the dataset again with loom prepare");
    }
    for (uint64_t i = 0; i < header_.tokens; ++i) {
      if (mask[i] > 1) fail_mask(i, mask[i]);
    }
  }
  return true;
}

}  // namespace loom
