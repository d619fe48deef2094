// Writes one split of a token dataset: shard files of bounded size, then the split's descriptor.
//
//   ShardWriter writer("data/shakespeare", "train", tokenizer.vocab_size());
//   for (each document) writer.add_document(ids);   // ids end with the end-of-document token
//   writer.finish();  // -> data/shakespeare/train-00000.tok ..., data/shakespeare/train.split.pbtxt
//
// Documents are stored verbatim: the caller appends the end-of-document token to each (so the
// concatenated stream has one between documents); the shard's index records where each ends.
// Shards are filled to max_shard_bytes (header, tokens and index together); a document that does
// not fit continues in the next shard (header flag, docs/formats.md). Each shard is written under
// a temporary name, fsync'd and renamed when complete; the descriptor is written last the same
// way, so an interrupted run never leaves a half-written file under a final name nor a descriptor
// naming missing shards. Shards of an older, longer run of the same split are not deleted; the
// descriptor names exactly the current ones.
//
// A writer made with `loss_mask` takes a mask with each document (1: the token counts in the
// loss) and writes format version 2 shards that carry it; without, version 1 (docs/formats.md).
// The mask of the open shard is held in memory (one byte per token) until the shard closes.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "data/token_shard.h"

namespace loom {

class ShardWriter {
 public:
  static constexpr uint64_t kDefaultMaxShardBytes = uint64_t{256} << 20;
  static constexpr uint64_t kMinShardBytes = 128;

  // Creates `dir` if needed. UserError for an empty split name or one with '/', a vocabulary
  // outside 1 .. 2^31 - 1, or max_shard_bytes below kMinShardBytes.
  ShardWriter(std::string dir, std::string split, uint32_t vocab_size,
              uint64_t max_shard_bytes = kDefaultMaxShardBytes, bool loss_mask = false);
  // Without finish(): removes the shard being written (completed shards stay, unlisted).
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends one document. UserError if it is empty or holds an id outside [0, vocab_size).
  // `mask`: one 0/1 byte per token, given exactly when the writer has a loss mask.
  void add_document(std::span<const int32_t> tokens, std::span<const uint8_t> mask = {});

  // Completes the last shard and writes DIR/<split>.split.pbtxt; returns the shard paths in
  // order. UserError if no document was added.
  std::vector<std::string> finish();

  uint64_t tokens() const { return total_tokens_; }
  uint64_t documents() const { return total_documents_; }
  // Path of the descriptor finish() writes.
  std::string descriptor_path() const;

 private:
  struct OpenShard;
  void open_shard();
  void append(const int32_t* tokens, const uint8_t* mask, uint64_t n);
  void flush_buffer();
  void close_shard(bool last_document_continues);
  uint64_t room() const;

  std::string dir_;
  std::string split_;
  uint32_t vocab_size_;
  TokenType dtype_;
  uint64_t max_shard_bytes_;
  bool loss_mask_;
  std::unique_ptr<OpenShard> open_;        // the shard being written, if any
  std::vector<std::string> shard_files_;   // completed shards, names relative to dir_
  std::vector<ShardHeader> shard_headers_;
  uint64_t total_tokens_ = 0;
  uint64_t total_documents_ = 0;
  bool finished_ = false;
};

}  // namespace loom
