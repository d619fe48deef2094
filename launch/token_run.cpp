#include "launch/token_run.h"

#include <filesystem>

#include "core/base/check.h"
#include "data/prepare.h"

namespace loom {

namespace {

bool has_split(const std::string& dir, const std::string& split) {
  std::error_code ignored;
  return std::filesystem::exists(split_descriptor_path(dir, split), ignored);
}

std::vector<MicroBatch> micro_batches_of(const StepBatch& batch) {
  std::vector<MicroBatch> micro;
  for (int m = 0; m < batch.micro_batches; ++m) {
    micro.push_back(MicroBatch{batch.tokens_of(m), batch.targets_of(m), batch.B, batch.T});
  }
  return micro;
}

}  // namespace

std::string tokenizer_path_of(const config::TokenData& data) {
  if (data.has_tokenizer()) return data.tokenizer();
  if (data.source_size() == 0) return "";
  return dataset_tokenizer_path(data.source(0).path());
}

uint32_t token_vocab_size(const config::TokenData& data) {
  uint32_t vocab = 0;
  std::string first;
  for (const config::TokenSource& source : data.source()) {
    const TokenDataset train = TokenDataset::open_split(source.path(), "train");
    if (vocab != 0 && train.vocab_size() != vocab) {
      fail_user("data.tokens sources disagree on the vocabulary:", first, "has", vocab, "tokens but",
                source.path(), "has", train.vocab_size(), "(prepare them with the same tokenizer)");
    }
    vocab = train.vocab_size();
    first = source.path();
  }
  return vocab;
}

TokenRun::TokenRun(const config::TokenData& data, const BatchLayout& layout, LoaderState start)
    : config_(data), layout_(layout), seed_(start.seed) {
  std::vector<BlendSource> sources;
  for (const config::TokenSource& source : data.source()) {
    train_.push_back(TokenDataset::open_split(source.path(), "train"));
    sources.push_back(BlendSource{&train_.back(), source.weight()});
    if (has_split(source.path(), "val")) {
      val_.push_back(TokenDataset::open_split(source.path(), "val"));
      val_sources_.push_back(BlendSource{&val_.back(), source.weight()});
    }
  }
  loader_ = std::make_unique<TokenLoader>(std::move(sources), LoaderOptions{layout, true, 2}, start);
}

std::span<const MicroBatch> TokenRun::next_step() {
  batch_ = loader_->next();
  micro_ = micro_batches_of(batch_);
  return micro_;
}

bool TokenRun::validation_loss(const std::function<double(std::span<const MicroBatch>)>& evaluate, double* loss) {
  if (val_sources_.empty() || config_.eval_batches() == 0) return false;
  // In stream order from the start: the same samples at every evaluation. A split shorter than
  // the evaluation wraps around (its next epoch, still in order).
  TokenLoader val(val_sources_, LoaderOptions{layout_, false, 0}, LoaderState{seed_, 0});
  double sum = 0;
  for (int i = 0; i < config_.eval_batches(); ++i) {
    const StepBatch batch = val.next();
    const std::vector<MicroBatch> micro = micro_batches_of(batch);
    sum += evaluate(micro);
  }
  *loss = sum / config_.eval_batches();
  return true;
}

uint64_t TokenRun::validation_tokens() const {
  uint64_t n = 0;
  for (const TokenDataset& d : val_) n += d.tokens();
  return n;
}

std::string TokenRun::describe() const {
  std::string out;
  uint64_t tokens = 0;
  for (size_t i = 0; i < train_.size(); ++i) {
    tokens += train_[i].tokens();
    out += (i ? ", " : "") + config_.source(static_cast<int>(i)).path();
    if (train_.size() > 1) out += str_cat(" (weight", config_.source(static_cast<int>(i)).weight(), ")");
  }
  return str_cat("token shards", out + ":", tokens, "training tokens,", validation_tokens(),
                 "validation tokens, vocabulary", train_.front().vocab_size());
}

}  // namespace loom
