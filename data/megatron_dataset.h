// Megatron-LM's indexed dataset read in place: PREFIX.bin (the tokens) and PREFIX.idx (where each
// sequence lies, and which sequences make each document), as Megatron-LM's
// tools/preprocess_data.py writes them, so `loom train` and `loom prepare` take data that users
// already have without re-tokenizing it.
//
// The layout followed is index version 1 as megatron/core/datasets/indexed_dataset.py writes and
// reads it (_IndexWriter, _IndexReader, IndexedDatasetBuilder; read at Megatron-LM commit 00caa53,
// Megatron-Core 0.16), little-endian:
//   PREFIX.idx  magic "MMIDIDX\0\0" (9 bytes) | version u64 = 1 | dtype code u8 (1 uint8, 2 int8,
//               3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16) | sequence count S u64 |
//               document index count D u64 | sequence lengths int32[S] (in tokens) | sequence
//               byte pointers int64[S] (into .bin) | document index int64[D]: the sequence each
//               document starts at, then S (so D - 1 documents; first entry 0, non-decreasing)
//               [| a mode int8[S], only in a multimodal dataset: refused, Loom reads text]
//   PREFIX.bin  the tokens of each sequence, at its byte pointer
// Megatron's builder writes the sequences back to back from byte 0, so the .bin is one token
// stream; Loom reads it as one and requires that layout (pointer i = the bytes of sequences
// 0 .. i-1), so no token is read twice or skipped. The stream holds the tokens as they are:
// an end-of-document token only if preprocess_data.py appended one (--append-eod).
//
// Opening maps both files (nothing is copied; pages load when read) and checks all that costs
// O(index): sizes, magic, version, dtype, the counts against the .idx size, each sequence inside
// the .bin and back to back, the .bin's size, the document index. Megatron stores no checksum and
// no vocabulary: ids are checked against vocab_size where they are read (read()), and a
// vocab_size of 0 is found by reading every token (the largest id + 1). Every problem is a
// UserError of one sentence naming the file and, where it applies, the byte offset.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/base/mapped_file.h"
#include "data/token_stream.h"

namespace loom {

class MegatronDataset final : public TokenStream {
 public:
  static constexpr uint64_t kIndexVersion = 1;

  // The prefix of the dataset `path` names: "" for a directory (a Loom dataset); PATH less its
  // extension when PATH ends in .bin or .idx; PATH when PATH.bin or PATH.idx exists; else "".
  static std::string prefix_of(const std::string& path);

  // Maps and validates PREFIX.bin and PREFIX.idx. vocab_size: ids must be below it; 0: the
  // largest id + 1, found by reading every token.
  MegatronDataset(const std::string& prefix, uint32_t vocab_size);
  MegatronDataset(const MegatronDataset&) = delete;
  MegatronDataset& operator=(const MegatronDataset&) = delete;

  const std::string& name() const override { return bin_path_; }  // PREFIX.bin
  uint64_t tokens() const override { return tokens_; }
  uint32_t vocab_size() const override { return vocab_size_; }
  void read(uint64_t begin, uint64_t n, int32_t* out) const override;

  const std::string& prefix() const { return prefix_; }
  uint64_t sequences() const { return sequences_; }
  uint64_t documents() const { return documents_; }
  // Token offsets where document d starts and ends (exclusive); d < documents(). A document of
  // no sequences, or of empty ones, is empty (begin == end).
  uint64_t document_begin(uint64_t d) const;
  uint64_t document_end(uint64_t d) const { return document_begin(d + 1); }
  // "uint16", "int32", ...: each token takes token_bytes() bytes of the .bin.
  const char* dtype_name() const;
  uint32_t token_bytes() const { return item_bytes_; }

  // The largest id + 1 over every token (reads them all). UserError for a negative id or one
  // above 2^31 - 2.
  uint32_t scan_vocab_size() const;

 private:
  void validate_header();
  void validate_sequences();
  void validate_documents();
  uint64_t sequence_start(uint64_t s) const;  // token offset of sequence s; s <= sequences()
  [[noreturn]] void fail_token(uint64_t index, int64_t id) const;

  std::string prefix_, idx_path_, bin_path_;
  std::unique_ptr<MappedFile> idx_, bin_;
  uint8_t dtype_code_ = 0;
  uint32_t item_bytes_ = 0;
  uint64_t sequences_ = 0;
  uint64_t documents_ = 0;        // document index entries - 1
  uint64_t tokens_ = 0;
  uint32_t vocab_size_ = 0;
};

}  // namespace loom
