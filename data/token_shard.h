// Token shards: the on-disk format of tokenized text, and a memory-mapped reader of one shard.
//
// A prepared split (`train`, `val`) is a run of shard files `<split>-00000.tok`, ... of bounded
// size (ShardWriter, data/shard_writer.h) and a descriptor naming them (TokenDataset,
// data/token_dataset.h). One shard, little-endian, byte layout in docs/formats.md:
//   header (64 bytes) | tokens: uint16 when vocab_size <= 65536, else uint32
//   | zero padding to a multiple of 8 bytes | document index: one u64 per document, the token
//   offset where it ends (exclusive), strictly increasing, the last equal to the token count
//   | version 2 with flag kShardHasLossMask only: the loss mask, one byte per token (1: the token
//   counts in the loss as a target, 0: it does not), zero padding to a multiple of 8 bytes.
// Version 1 (no mask) is what pretraining data is written as; version 2 adds the mask (`loom
// prepare` of instruction data) and its checksum in the header's bytes 48..55. Both are read.
// The format stores documents verbatim: whoever tokenizes (`loom prepare`) ends each document with
// the tokenizer's end-of-document token, so the concatenated stream has one between documents.
//
// Opening a shard maps it (mmap, no read-ahead: nothing is copied, pages load when read) and checks
// all that costs O(header + index): the size, magic, version, dtype, vocabulary, the token count
// against the file size, the index, and the checksum of header and index. Token ids are checked
// against the vocabulary where they are read (TokenShard::read: the loader reads every window it
// delivers through it); verify_tokens() reads the whole shard and checks the data checksum and
// every id (`loom train` runs it on every shard it opens: data/shard_verifier.h). Every problem is
// a UserError of one sentence naming the file and the byte offset.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stop_token>
#include <string>

namespace loom {

// Bytes per token, as stored in the header's dtype field.
enum class TokenType : uint32_t { kU16 = 2, kU32 = 4 };

constexpr char kShardMagic[8] = {'L', 'O', 'O', 'M', 'T', 'O', 'K', 'S'};
constexpr uint32_t kShardVersion = 1;          // no loss mask
constexpr uint32_t kShardMaskedVersion = 2;    // may have one
constexpr size_t kShardHeaderBytes = 64;
// Header flag: the shard's last document continues at the start of the next shard of the split
// (the writer fills shards to their size bound), so its index entry is not a document end.
constexpr uint32_t kShardLastDocumentContinues = 1;
// Header flag (version 2): a loss mask follows the document index.
constexpr uint32_t kShardHasLossMask = 2;

struct ShardHeader {
  uint32_t version = kShardVersion;
  TokenType dtype = TokenType::kU16;
  uint32_t vocab_size = 0;
  uint32_t flags = 0;
  uint64_t tokens = 0;
  uint64_t documents = 0;     // entries of the document index
  uint64_t tokens_xxh64 = 0;  // XXH64 (seed 0) of the token bytes, without padding
  uint64_t mask_xxh64 = 0;    // XXH64 (seed 0) of the mask bytes, without padding; 0 without one
  uint64_t meta_xxh64 = 0;    // see shard_meta_checksum
};

// uint16 when every id fits (vocab_size <= 65536), else uint32.
TokenType token_type_for(uint32_t vocab_size);

// Byte offset of the document index: the header and the tokens, rounded up to 8.
uint64_t shard_index_offset(TokenType dtype, uint64_t tokens);

// Bytes of the loss mask section (0 without one): one per token, rounded up to 8.
uint64_t shard_mask_bytes(uint64_t tokens);

// The 64 header bytes (meta_xxh64 written as given).
std::array<uint8_t, kShardHeaderBytes> encode_shard_header(const ShardHeader& header);

// XXH64 of the index bytes, seeded with XXH64 (seed 0) of header bytes [0, 56): it covers every
// header field but itself, and the index.
uint64_t shard_meta_checksum(const std::array<uint8_t, kShardHeaderBytes>& header,
                             std::span<const uint64_t> document_ends);

// One shard file, mapped read-only for its lifetime. Move-only.
class TokenShard {
 public:
  // Maps and validates `path`; UserError for a missing, short, foreign or corrupt file.
  explicit TokenShard(std::string path);
  ~TokenShard();
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  uint64_t tokens() const { return header_.tokens; }
  uint64_t documents() const { return header_.documents; }
  // Token offset where document i ends (exclusive); i < documents().
  uint64_t document_end(uint64_t i) const;
  bool has_loss_mask() const { return (header_.flags & kShardHasLossMask) != 0; }
  // Writes the loss mask of tokens [begin, begin + n) to out[0, n) (all 1 without a mask).
  // UserError naming the file and byte offset of a byte other than 0 or 1.
  void read_loss_mask(uint64_t begin, uint64_t n, uint8_t* out) const;

  // Writes tokens [begin, begin + n) as int32 to out[0, n). UserError naming the file and byte
  // offset of the first id >= vocab_size, if any. begin + n <= tokens().
  void read(uint64_t begin, uint64_t n, int32_t* out) const;

  // Reads every token: checks the data checksum, then each id against the vocabulary (so a
  // changed byte is reported as a checksum mismatch); then the loss mask's checksum and bytes.
  // Returns false, unfinished, as soon as `stop` is requested (checked every 1 M tokens); true
  // when the shard passed.
  bool verify_tokens(std::stop_token stop = {}) const;

 private:
  void validate(uint64_t file_bytes);
  [[noreturn]] void fail_token(uint64_t index, uint32_t id) const;
  [[noreturn]] void fail_mask(uint64_t index, uint8_t value) const;
  uint64_t mask_offset() const;
  void release() noexcept;

  std::string path_;
  const uint8_t* base_ = nullptr;  // the mapping, file_bytes_ long
  size_t file_bytes_ = 0;
  ShardHeader header_;
};

}  // namespace loom
