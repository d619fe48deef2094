// A split of a token dataset read as one stream: its shards, memory-mapped, end to end.
//
// open_split reads the descriptor DIR/<split>.split.pbtxt (schema data/token_split.proto) that
// ShardWriter writes last, opens every shard it names (each validated, data/token_shard.h) and
// checks each against its entry: token and document counts, and the fingerprint (the shard's
// header-and-index checksum), so shards rewritten after the descriptor are caught on open.
// Token t of the stream is token t - start(i) of the shard i holding it; read() crosses shard
// boundaries and checks ids against the vocabulary as it converts them. A TokenStream
// (data/token_stream.h): what the loader reads. A split whose shards carry a loss mask (format
// version 2) is a stream with one; every shard of a split has one or none.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/token_shard.h"
#include "data/token_stream.h"

namespace loom {

// DIR/<split>.split.pbtxt
std::string split_descriptor_path(const std::string& dir, const std::string& split);

class TokenDataset final : public TokenStream {
 public:
  // UserError naming the file for a missing or unreadable descriptor, a shard that fails
  // validation or disagrees with its entry, or a split that ends inside a document.
  static TokenDataset open_split(const std::string& dir, const std::string& split);
  // The shards at `paths` in stream order, without a descriptor; all must share one vocabulary.
  explicit TokenDataset(const std::vector<std::string>& shard_paths);

  // The descriptor's path, or the first shard's: how messages name this dataset.
  const std::string& name() const override { return name_; }
  uint64_t tokens() const override { return starts_.back(); }
  uint32_t vocab_size() const override { return shards_.front().header().vocab_size; }
  size_t shard_count() const { return shards_.size(); }
  const TokenShard& shard(size_t i) const { return shards_.at(i); }

  // Writes stream tokens [begin, begin + n) to out[0, n) as int32; begin + n <= tokens().
  // UserError naming the shard and byte offset of an id outside the vocabulary.
  void read(uint64_t begin, uint64_t n, int32_t* out) const override;
  bool has_loss_mask() const override { return shards_.front().has_loss_mask(); }
  void read_loss_mask(uint64_t begin, uint64_t n, uint8_t* out) const override;
  // From the shards' indexes: a document continued in the next shard ends once.
  std::vector<uint64_t> document_ends() const override;

  // Reads every shard in full: ids and data checksums (verify_tokens).
  void verify() const;

 private:
  TokenDataset(std::string name, std::vector<TokenShard> shards);

  std::string name_;
  std::vector<TokenShard> shards_;
  std::vector<uint64_t> starts_;  // starts_[i]: stream offset of shard i; back(): the token count
};

}  // namespace loom
