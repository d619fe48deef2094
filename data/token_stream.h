// A token stream: what the loader (data/loader.h) draws its windows from — token ids read by
// position, each below the stream's vocabulary size.
//
// Loom's own split of shards (TokenDataset, data/token_dataset.h) and a Megatron-LM indexed
// dataset (MegatronDataset, data/megatron_dataset.h) are token streams; TokenRange is a slice of
// one (a Megatron dataset's training and validation documents). One loader reads them all.
//
// A stream may carry a loss mask (Loom's splits of instruction data, `loom prepare --format
// chat`...): per token, whether it counts in the loss as a target. A stream without one counts
// every token; Megatron datasets have none.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loom {

class TokenStream {
 public:
  virtual ~TokenStream() = default;

  // How messages name it (a file, or a file and a part of it).
  virtual const std::string& name() const = 0;
  virtual uint64_t tokens() const = 0;
  // Every id read is below it.
  virtual uint32_t vocab_size() const = 0;
  // Writes tokens [begin, begin + n) as int32 to out[0, n); begin + n <= tokens(). UserError
  // naming the file and byte offset of an id outside [0, vocab_size()).
  virtual void read(uint64_t begin, uint64_t n, int32_t* out) const = 0;

  virtual bool has_loss_mask() const { return false; }
  // Writes the loss mask of tokens [begin, begin + n) to out[0, n): 1 where the token counts
  // (every token of a stream without a mask), else 0. begin + n <= tokens().
  virtual void read_loss_mask(uint64_t begin, uint64_t n, uint8_t* out) const;
  // Where each document ends (exclusive stream offsets, increasing, the last = tokens()), for
  // streams that know their documents; empty for the others.
  virtual std::vector<uint64_t> document_ends() const { return {}; }
};

// Tokens [begin, end) of `base`, which must outlive it.
class TokenRange final : public TokenStream {
 public:
  TokenRange(const TokenStream& base, uint64_t begin, uint64_t end, std::string name);

  const std::string& name() const override { return name_; }
  uint64_t tokens() const override { return end_ - begin_; }
  uint32_t vocab_size() const override { return base_.vocab_size(); }
  void read(uint64_t begin, uint64_t n, int32_t* out) const override;

 private:
  const TokenStream& base_;
  uint64_t begin_;
  uint64_t end_;
  std::string name_;
};

}  // namespace loom
