#include "data/megatron_dataset.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/base/check.h"

namespace loom {

static_assert(std::endian::native == std::endian::little, "Megatron datasets are read in place: little-endian hosts only");

namespace {

namespace fs = std::filesystem;

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
// Header field offsets of the .idx.
constexpr uint64_t kVersionAt = 9, kDTypeAt = 17, kSequencesAt = 18, kDocumentsAt = 26, kHeaderBytes = 34;
constexpr uint64_t kMaxCount = uint64_t{1} << 56;  // keeps size arithmetic far from overflow
constexpr uint64_t kMaxVocab = static_cast<uint64_t>(std::numeric_limits<int32_t>::max());

struct DType {
  const char* name;
  uint32_t bytes;  // 0: not an integer type
};

DType dtype_of(uint8_t code) {
  switch (code) {
    case 1: return {"uint8", 1};
    case 2: return {"int8", 1};
    case 3: return {"int16", 2};
    case 4: return {"int32", 4};
    case 5: return {"int64", 8};
    case 6: return {"float64", 0};
    case 7: return {"float32", 0};
    case 8: return {"uint16", 2};
    default: return {nullptr, 0};
  }
}

template <typename T>
T load(const char* bytes, uint64_t at) {
  T value;
  std::memcpy(&value, bytes + at, sizeof(T));
  return value;
}

bool is_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// Converts n ids to int32 (those in range; the caller checks lo and hi before using them) and
// widens [lo, hi] to cover them.
template <typename T>
void convert(const T* src, uint64_t n, int32_t* out, int64_t& lo, int64_t& hi) {
  T small = n > 0 ? src[0] : T{0}, large = small;
  for (uint64_t i = 0; i < n; ++i) {
    small = std::min(small, src[i]);
    large = std::max(large, src[i]);
    if (out != nullptr) out[i] = static_cast<int32_t>(src[i]);
  }
  lo = std::min<int64_t>(lo, static_cast<int64_t>(small));
  hi = std::max<int64_t>(hi, static_cast<int64_t>(large));
}

}  // namespace

std::string MegatronDataset::prefix_of(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return "";
  for (const char* ext : {".bin", ".idx"}) {
    const std::string e = ext;
    if (path.size() > e.size() && path.ends_with(e)) return path.substr(0, path.size() - e.size());
  }
  return is_file(path + ".bin") || is_file(path + ".idx") ? path : "";
}

MegatronDataset::MegatronDataset(const std::string& prefix, uint32_t vocab_size)
    : prefix_(prefix), idx_path_(prefix + ".idx"), bin_path_(prefix + ".bin") {
  idx_ = std::make_unique<MappedFile>(idx_path_, "Megatron index");
  bin_ = std::make_unique<MappedFile>(bin_path_, "Megatron data file");
  validate_header();
  validate_sequences();
  validate_documents();
  if (tokens_ == 0) fail_user("Megatron dataset", bin_path_, "holds no tokens");
  // Training reads windows of a few KiB in shuffled order: no read-ahead of MiBs per page fault.
  ::madvise(const_cast<char*>(bin_->data()), bin_->size(), MADV_RANDOM);
  if (vocab_size == 0) {
    vocab_size_ = scan_vocab_size();
  } else {
    LOOM_CHECK(vocab_size <= kMaxVocab, "vocabulary size", vocab_size, "for", bin_path_);
    vocab_size_ = vocab_size;
  }
}

void MegatronDataset::validate_header() {
  const std::string& p = idx_path_;
  const uint64_t size = idx_->size();
  if (size < kHeaderBytes) {
    fail_user("Megatron index", p, "is", size, "bytes, shorter than its", kHeaderBytes,
              "byte header (a truncated file, or not an index)");
  }
  const char* b = idx_->data();
  if (std::memcmp(b, kMagic, sizeof(kMagic)) != 0) {
    fail_user(p, "is not a Megatron-LM index: its first 9 bytes (byte offset 0) are not the magic MMIDIDX\\0\\0");
  }
  const uint64_t version = load<uint64_t>(b, kVersionAt);
  if (version != kIndexVersion) {
    fail_user("Megatron index", p, "has version", version, "at byte offset", kVersionAt, "but Loom reads version",
              kIndexVersion);
  }
  dtype_code_ = load<uint8_t>(b, kDTypeAt);
  const DType dtype = dtype_of(dtype_code_);
  if (dtype.name == nullptr) {
    fail_user("Megatron index", p, "has dtype code", int{dtype_code_}, "at byte offset", kDTypeAt,
              "but Megatron defines only 1 to 8");
  }
  if (dtype.bytes == 0) {
    fail_user("Megatron index", p, "has dtype", dtype.name, str_cat("(code", int{dtype_code_}) + ") at byte offset", kDTypeAt,
              "but Loom trains on integer token ids; write the dataset with an integer dtype");
  }
  item_bytes_ = dtype.bytes;
  sequences_ = load<uint64_t>(b, kSequencesAt);
  const uint64_t entries = load<uint64_t>(b, kDocumentsAt);
  const uint64_t expected = sequences_ < kMaxCount && entries < kMaxCount
                                ? kHeaderBytes + 12 * sequences_ + 8 * entries
                                : std::numeric_limits<uint64_t>::max();
  if (size == expected + sequences_ && sequences_ > 0) {
    fail_user("Megatron index", p, "has a mode byte per sequence after its document index: a multimodal dataset;",
              "Loom reads text datasets only");
  }
  if (size != expected) {
    fail_user("Megatron index", p, "is", size, "bytes but its header counts", sequences_, "sequences and", entries,
              "document index entries at byte offsets", kSequencesAt, "and", kDocumentsAt,
              expected == std::numeric_limits<uint64_t>::max() ? std::string("(a damaged header)")
                                                               : str_cat("which take", expected, "bytes (a truncated or damaged file)"));
  }
  if (entries == 0) {
    fail_user("Megatron index", p, "has an empty document index (count 0 at byte offset", str_cat(kDocumentsAt) + ");",
              "it holds at least the entry 0");
  }
  documents_ = entries - 1;
}

void MegatronDataset::validate_sequences() {
  const std::string& p = idx_path_;
  const char* b = idx_->data();
  const uint64_t bin_bytes = bin_->size();
  const uint64_t lengths_at = kHeaderBytes, pointers_at = kHeaderBytes + 4 * sequences_;
  uint64_t end = 0;  // where the sequences so far end in the .bin
  for (uint64_t s = 0; s < sequences_; ++s) {
    const int32_t length = load<int32_t>(b, lengths_at + 4 * s);
    const int64_t pointer = load<int64_t>(b, pointers_at + 8 * s);
    if (length < 0) {
      fail_user("Megatron index", p, "gives sequence", s, "the length", length, "at byte offset", lengths_at + 4 * s,
                "(a damaged file)");
    }
    const uint64_t bytes = static_cast<uint64_t>(length) * item_bytes_;
    if (pointer < 0 || static_cast<uint64_t>(pointer) > bin_bytes || bytes > bin_bytes - static_cast<uint64_t>(pointer)) {
      fail_user("Megatron index", p, "puts sequence", s, "(" + std::to_string(length), "tokens) at byte pointer",
                pointer, "(byte offset", str_cat(pointers_at + 8 * s) + "), past the end of", bin_path_,
                "which is", bin_bytes, "bytes: a truncated .bin, or the index of another dataset");
    }
    if (static_cast<uint64_t>(pointer) != end) {
      fail_user("Megatron index", p, "puts sequence", s, "at byte pointer", pointer, "(byte offset",
                str_cat(pointers_at + 8 * s) + ") but the sequences before it end at", str_cat(end) + ";",
                "Loom reads datasets whose sequences lie back to back, as Megatron's builder writes them");
    }
    end += bytes;
  }
  if (end != bin_bytes) {
    fail_user("Megatron data file", bin_path_, "is", bin_bytes, "bytes but its index", p, "accounts for", end,
              "(the two files do not belong together)");
  }
  tokens_ = end / item_bytes_;
}

void MegatronDataset::validate_documents() {
  const std::string& p = idx_path_;
  const char* b = idx_->data();
  const uint64_t at = kHeaderBytes + 12 * sequences_;
  int64_t previous = 0;
  for (uint64_t k = 0; k <= documents_; ++k) {
    const int64_t entry = load<int64_t>(b, at + 8 * k);
    if (k == 0 && entry != 0) {
      fail_user("Megatron index", p, "has document index entry 0 equal to", entry, "at byte offset", at,
                "but it must be 0");
    }
    if (entry < previous || static_cast<uint64_t>(entry) > sequences_) {
      fail_user("Megatron index", p, "has document index entry", k, "equal to", entry, "at byte offset", at + 8 * k,
                "but entries must rise from 0 to the sequence count", sequences_,
                str_cat("(the previous is", previous) + ")");
    }
    previous = entry;
  }
  if (static_cast<uint64_t>(previous) != sequences_) {
    fail_user("Megatron index", p, "has a document index ending at sequence", previous, "at byte offset",
              at + 8 * documents_, "but it holds", sequences_, "sequences");
  }
}

uint64_t MegatronDataset::sequence_start(uint64_t s) const {
  if (s == sequences_) return tokens_;
  return static_cast<uint64_t>(load<int64_t>(idx_->data(), kHeaderBytes + 4 * sequences_ + 8 * s)) / item_bytes_;
}

uint64_t MegatronDataset::document_begin(uint64_t d) const {
  LOOM_CHECK(d <= documents_, "document", d, "of", bin_path_, "with", documents_);
  const int64_t sequence = load<int64_t>(idx_->data(), kHeaderBytes + 12 * sequences_ + 8 * d);
  return sequence_start(static_cast<uint64_t>(sequence));
}

const char* MegatronDataset::dtype_name() const { return dtype_of(dtype_code_).name; }

namespace {

// Calls convert on [begin, begin + n) of `data` with the dtype's element type.
void convert_tokens(uint8_t code, const char* data, uint64_t begin, uint64_t n, int32_t* out, int64_t& lo,
                    int64_t& hi) {
  // The mapping is page-aligned and the stream starts at byte 0: every token is aligned.
  switch (code) {
    case 1: return convert(reinterpret_cast<const uint8_t*>(data) + begin, n, out, lo, hi);
    case 2: return convert(reinterpret_cast<const int8_t*>(data) + begin, n, out, lo, hi);
    case 3: return convert(reinterpret_cast<const int16_t*>(data) + begin, n, out, lo, hi);
    case 4: return convert(reinterpret_cast<const int32_t*>(data) + begin, n, out, lo, hi);
    case 5: return convert(reinterpret_cast<const int64_t*>(data) + begin, n, out, lo, hi);
    case 8: return convert(reinterpret_cast<const uint16_t*>(data) + begin, n, out, lo, hi);
    default: LOOM_CHECK(false, "dtype code", int{code});
  }
}

}  // namespace

void MegatronDataset::read(uint64_t begin, uint64_t n, int32_t* out) const {
  LOOM_CHECK(begin <= tokens_ && n <= tokens_ - begin, "tokens [", begin, ",", begin + n, ") of", bin_path_, "with",
             tokens_);
  int64_t lo = 0, hi = 0;
  convert_tokens(dtype_code_, bin_->data(), begin, n, out, lo, hi);
  if (lo >= 0 && hi < int64_t{vocab_size_}) return;
  for (uint64_t i = 0; i < n; ++i) {
    int64_t one_lo = 0, one_hi = 0;
    convert_tokens(dtype_code_, bin_->data(), begin + i, 1, nullptr, one_lo, one_hi);
    const int64_t id = one_lo < 0 ? one_lo : one_hi;
    if (id < 0 || id >= int64_t{vocab_size_}) fail_token(begin + i, id);
  }
}

void MegatronDataset::fail_token(uint64_t index, int64_t id) const {
  fail_user("Megatron data file", bin_path_, "holds token id", id, "at byte offset", index * item_bytes_,
            id < 0 ? std::string("but ids cannot be negative (a corrupt file)")
                   : str_cat("outside the vocabulary of", vocab_size_,
                             "(set model.vocab_size to the tokenizer's vocabulary, or a corrupt file)"));
}

uint32_t MegatronDataset::scan_vocab_size() const {
  constexpr uint64_t kChunk = uint64_t{1} << 20;
  char* mapping = const_cast<char*>(bin_->data());
  ::madvise(mapping, bin_->size(), MADV_SEQUENTIAL);  // one pass front to back: read ahead
  int64_t lo = 0, hi = 0;
  for (uint64_t begin = 0; begin < tokens_; begin += kChunk) {
    convert_tokens(dtype_code_, bin_->data(), begin, std::min(kChunk, tokens_ - begin), nullptr, lo, hi);
  }
  ::madvise(mapping, bin_->size(), MADV_RANDOM);
  if (lo < 0 || hi >= static_cast<int64_t>(kMaxVocab)) {
    const int64_t bad = lo < 0 ? lo : hi;
    for (uint64_t i = 0;; ++i) {
      int64_t one_lo = 0, one_hi = 0;
      convert_tokens(dtype_code_, bin_->data(), i, 1, nullptr, one_lo, one_hi);
      if ((lo < 0 ? one_lo : one_hi) == bad) {
        fail_user("Megatron data file", bin_path_, "holds token id", bad, "at byte offset", i * item_bytes_,
                  lo < 0 ? "but ids cannot be negative (a corrupt file)" : "beyond any vocabulary Loom trains (2^31 - 1)");
      }
    }
  }
  return static_cast<uint32_t>(hi + 1);
}

}  // namespace loom
