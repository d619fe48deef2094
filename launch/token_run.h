// The token data of a `loom train` run (config data.tokens): the training loader blending the
// sources' training streams, and the validation loss over their validation streams.
//
// A source is a Loom dataset directory (its `train` and `val` splits, from `loom prepare`) or a
// Megatron-LM indexed dataset read in place (data/megatron_dataset.h): all its documents but the
// last val_fraction of them train, those validate. A Megatron dataset stores no vocabulary: its
// ids must be below the run's, which is the Loom sources' vocabulary when the blend has any,
// else model.vocab_size (run setup sets it, when unset, to the largest id + 1 in the data).
//
// Every Loom shard the run opens is checked against its data checksum (data/shard_verifier.h):
// up to kVerifyInBackgroundAbove bytes before the first step, more in a background thread while
// training starts. One rank per host verifies (the others would read the same files again), and
// at the start and at every step boundary until every host is done all ranks agree (a collective
// over `world`), so a failure anywhere stops every rank at the same step with the shard's message.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/config.pb.h"
#include "core/gpt.h"
#include "core/train_step.h"
#include "data/loader.h"
#include "data/shard_verifier.h"
#include "data/token_dataset.h"
#include "parallel/communicator.h"

namespace loom {

// Verified before the first step up to this many bytes of token data (about a second from a
// local disk, a third of that from the page cache, at the rates docs/data.md gives); in the
// background above.
constexpr uint64_t kVerifyInBackgroundAbove = uint64_t{1} << 30;

// The vocabulary of the sources (header and index reads only, but for a Megatron-only blend
// without a model_vocab_size, which reads every token for the largest id). model_vocab_size:
// model.vocab_size, 0 if unset. UserError if a source cannot be opened or two Loom sources
// disagree.
uint32_t token_vocab_size(const config::TokenData& data, int model_vocab_size);

// The tokenizer of a token-shard run: data.tokens.tokenizer, else the first source's, where
// `loom prepare` put it (dataset_tokenizer_path, data/prepare.h); "" if none.
std::string tokenizer_path_of(const config::TokenData& data);

class TokenRun {
 public:
  // `cfg`: resolved (model.vocab_size set); `layout`: this rank's share of each step (seq_len,
  // micro-batch size, accumulation, dp); `start`: where the sample order begins ({train.seed,
  // 0}, or a checkpoint's loader state). Collective over `world`: a source that fails to open on
  // any rank, or shards verified before the first step that fail, throw on every rank.
  // `verify_in_background_above`: see kVerifyInBackgroundAbove.
  TokenRun(const config::RunConfig& cfg, const BatchLayout& layout, LoaderState start, parallel::Communicator& world,
           uint64_t verify_in_background_above = kVerifyInBackgroundAbove);

  // This rank's micro-batches of the next step; valid until the next call. Collective while a
  // background verification runs on any host; UserError (on every rank) when it failed.
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
  // "packing: ..." line for the log: what packing did with instruction data (examples, rows,
  // truncated and dropped ones); "" when no source is packed.
  std::string packing_line() const;
  const TokenLoader& loader() const { return *loader_; }
  uint64_t validation_tokens() const;
  // Whether every host has verified its shards (and all passed).
  bool verified() const { return verified_; }

 private:
  // Opens the sources, the loader and this host's verification.
  void open(uint32_t model_vocab, LoaderState start, uint64_t verify_in_background_above);
  LoaderOptions loader_options(bool shuffle, int prefetch_steps) const;
  // Opens source i: its training stream, and its validation stream if it has one.
  void open_source(int i, uint32_t megatron_vocab);
  // Collective: throws the first failing rank's message on every rank; sets verified_ once
  // every rank's verification passed.
  void agree_on_verification();

  config::TokenData config_;
  BatchLayout layout_;
  uint64_t seed_;
  int32_t end_of_document_id_ = -1;  // with data.tokens.document_masking
  parallel::Communicator& world_;
  std::vector<std::unique_ptr<TokenStream>> owned_;  // datasets and the ranges over them
  std::vector<const TokenDataset*> loom_datasets_;
  std::vector<BlendSource> train_sources_;
  std::vector<BlendSource> val_sources_;
  std::vector<std::string> kinds_;  // per source: "token shards" or "Megatron dataset (uint16)"
  std::unique_ptr<TokenLoader> loader_;
  std::unique_ptr<ShardVerifier> verifier_;  // this host's verification; null on other ranks
  bool verified_ = false;
  StepBatch batch_;
  std::vector<MicroBatch> micro_;
};

}  // namespace loom
