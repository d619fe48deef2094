// The token-shard data of a `loom train` run (config data.tokens): the training loader blending
// the sources' `train` splits, and the validation loss over their `val` splits.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/config.pb.h"
#include "core/gpt.h"
#include "core/train_step.h"
#include "data/loader.h"
#include "data/token_dataset.h"
#include "parallel/communicator.h"

namespace loom {

// The vocabulary of the sources' train splits (header reads only). UserError if a source cannot
// be opened or two sources disagree.
uint32_t token_vocab_size(const config::TokenData& data);

// The tokenizer of a token-shard run: data.tokens.tokenizer, else the first source's, where
// `loom prepare` put it (dataset_tokenizer_path, data/prepare.h); "" if none.
std::string tokenizer_path_of(const config::TokenData& data);

class TokenRun {
 public:
  // `layout`: this rank's share of each step (seq_len, micro-batch size, accumulation, dp);
  // `start`: where the sample order begins ({train.seed, 0}, or a checkpoint's loader state).
  TokenRun(const config::TokenData& data, const BatchLayout& layout, LoaderState start);

  // This rank's micro-batches of the next step; valid until the next call.
  std::span<const MicroBatch> next_step();
  // Mean loss over the first eval_batches steps' worth of the validation splits, in stream
  // order (the same samples every time), each step's loss given by `evaluate` (evaluate_loss on
  // the CPU, the GPU trainer's on a GPU). Collective like train_step. false when there is no
  // validation split or eval_batches is 0.
  bool validation_loss(const std::function<double(std::span<const MicroBatch>)>& evaluate, double* loss);
  // The loader's position after the steps taken so far (what a checkpoint stores).
  LoaderState state() const { return loader_->state(); }
  // "data: ..." line for the log.
  std::string describe() const;
  uint64_t validation_tokens() const;

 private:
  config::TokenData config_;
  BatchLayout layout_;
  uint64_t seed_;
  std::deque<TokenDataset> train_;  // deque: the loader keeps pointers to them
  std::deque<TokenDataset> val_;
  std::vector<BlendSource> val_sources_;
  std::unique_ptr<TokenLoader> loader_;
  StepBatch batch_;
  std::vector<MicroBatch> micro_;
};

}  // namespace loom
