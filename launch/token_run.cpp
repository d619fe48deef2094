#include "launch/token_run.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/base/check.h"
#include "core/base/format.h"
#include "data/megatron_dataset.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "launch/launch_env.h"

namespace loom {

namespace {

bool has_split(const std::string& dir, const std::string& split) {
  std::error_code ignored;
  return std::filesystem::exists(split_descriptor_path(dir, split), ignored);
}

std::vector<MicroBatch> micro_batches_of(const StepBatch& batch) {
  std::vector<MicroBatch> micro;
  for (int m = 0; m < batch.micro_batches; ++m) {
    micro.push_back(MicroBatch{batch.tokens_of(m), batch.targets_of(m), batch.B, batch.T, batch.doc_starts_of(m)});
  }
  return micro;
}

// Source i's Megatron prefix, or "" for a Loom dataset directory. UserError for a path that is
// neither, or a val_fraction on a Loom dataset.
std::string megatron_prefix_of(const config::TokenSource& source, int i) {
  const std::string prefix = MegatronDataset::prefix_of(source.path());
  std::error_code ec;
  if (prefix.empty() && !std::filesystem::is_directory(source.path(), ec)) {
    fail_user("data.tokens.source", i, "path", source.path(),
              "is neither a dataset directory from `loom prepare` nor a Megatron dataset (PATH.bin and PATH.idx)");
  }
  if (prefix.empty() && source.val_fraction() > 0) {
    fail_user("data.tokens.source", i, "(" + source.path() + ") sets val_fraction, which applies to Megatron datasets;",
              "this Loom dataset has the val split `loom prepare --val-fraction` wrote");
  }
  return prefix;
}

}  // namespace

std::string tokenizer_path_of(const config::TokenData& data) {
  if (data.has_tokenizer()) return data.tokenizer();
  if (data.source_size() == 0) return "";
  return dataset_tokenizer_path(data.source(0).path());
}

uint32_t token_vocab_size(const config::TokenData& data, int model_vocab_size) {
  uint32_t vocab = 0;
  std::string first;
  std::vector<std::string> megatron;
  for (int i = 0; i < data.source_size(); ++i) {
    const config::TokenSource& source = data.source(i);
    const std::string prefix = megatron_prefix_of(source, i);
    if (!prefix.empty()) {
      megatron.push_back(prefix);
      continue;
    }
    const TokenDataset train = TokenDataset::open_split(source.path(), "train");
    if (vocab != 0 && train.vocab_size() != vocab) {
      fail_user("data.tokens sources disagree on the vocabulary:", first, "has", vocab, "tokens but",
                source.path(), "has", train.vocab_size(), "(prepare them with the same tokenizer)");
    }
    vocab = train.vocab_size();
    first = source.path();
  }
  // Megatron datasets take the Loom sources' vocabulary, else the model's, else their largest
  // id + 1; opening them validates their files here, before any rank starts.
  const uint32_t given = vocab != 0 ? vocab : static_cast<uint32_t>(std::max(model_vocab_size, 0));
  for (const std::string& prefix : megatron) vocab = std::max(vocab, MegatronDataset(prefix, given).vocab_size());
  return vocab;
}

TokenRun::TokenRun(const config::RunConfig& cfg, const BatchLayout& layout, LoaderState start,
                   parallel::Communicator& world, uint64_t verify_in_background_above)
    : config_(cfg.data().tokens()), layout_(layout), seed_(start.seed), world_(world) {
  // A file one host cannot open (or finds damaged) stops every rank with its message, rather
  // than leave the others waiting in the first step's collectives.
  std::string error;
  try {
    open(static_cast<uint32_t>(cfg.model().vocab_size()), start, verify_in_background_above);
    // The tokenizer the samples at the end decode with: a broken one is found now.
    const std::string tokenizer_path = tokenizer_path_of(config_);
    if (cfg.train().samples() > 0 && config_.sample_tokens() > 0 && !tokenizer_path.empty()) {
      load_tokenizer(tokenizer_path);
    }
  } catch (const UserError& e) {
    error = e.what();
  }
  agree_on_error(world_, error);
  agree_on_verification();
}

void TokenRun::open(uint32_t model_vocab, LoaderState start, uint64_t verify_in_background_above) {
  uint32_t loom_vocab = 0;  // the Loom sources' (token_vocab_size checked that they agree)
  for (int i = 0; i < config_.source_size() && loom_vocab == 0; ++i) {
    if (megatron_prefix_of(config_.source(i), i).empty()) {
      loom_vocab = TokenDataset::open_split(config_.source(i).path(), "train").vocab_size();
    }
  }
  for (int i = 0; i < config_.source_size(); ++i) open_source(i, loom_vocab != 0 ? loom_vocab : model_vocab);
  // Windows of pretraining data find their documents by the end-of-document token: when asked,
  // and when they are blended with instruction data, which is masked unless told otherwise.
  const auto masked = [](const BlendSource& s) { return s.dataset->has_loss_mask(); };
  const bool blended = std::any_of(train_sources_.begin(), train_sources_.end(), masked) &&
                       !std::all_of(train_sources_.begin(), train_sources_.end(), masked);
  if (config_.has_document_masking() ? config_.document_masking() : blended) {
    const std::string tokenizer_path = tokenizer_path_of(config_);
    if (tokenizer_path.empty()) {
      fail_user("data.tokens.document_masking needs the tokenizer's end-of-document token, but no tokenizer was",
                "found: set data.tokens.tokenizer");
    }
    end_of_document_id_ = load_tokenizer(tokenizer_path)->eos_id();
  }
  loader_ = std::make_unique<TokenLoader>(train_sources_, loader_options(true, 2), start);
  // The validation split is checked now (a split too small for one sample is refused), not at
  // the first evaluation, hours into the run.
  if (!val_sources_.empty() && config_.eval_batches() > 0) {
    const TokenLoader check(val_sources_, loader_options(false, 0), LoaderState{seed_, 0});
  }
  if (current_launch().local_rank == 0) {
    std::vector<const TokenShard*> shards;
    for (const TokenDataset* d : loom_datasets_) {
      for (size_t s = 0; s < d->shard_count(); ++s) shards.push_back(&d->shard(s));
    }
    verifier_ = std::make_unique<ShardVerifier>(std::move(shards), verify_in_background_above);
  }
}

LoaderOptions TokenRun::loader_options(bool shuffle, int prefetch_steps) const {
  LoaderOptions options;
  options.layout = layout_;
  options.shuffle = shuffle;
  options.prefetch_steps = prefetch_steps;
  if (config_.has_document_masking()) options.document_masking = config_.document_masking();
  options.end_of_document_id = end_of_document_id_;
  options.long_examples = config_.long_examples() == config::TokenData::LONG_EXAMPLES_DROP ? LongExamples::kDrop
                                                                                          : LongExamples::kTruncate;
  return options;
}

std::string TokenRun::packing_line() const {
  const PackingReport& r = loader_->packing_report();
  if (r.documents == 0) return "";
  return str_cat("packing:", r.documents, "examples into", r.rows, "rows of", layout_.seq_len, "positions;",
                 r.truncated, "truncated and", r.dropped, "dropped (longer than seq_len + 1 =",
                 str_cat(layout_.seq_len + 1) + " tokens, per data.tokens.long_examples, or of one token);",
                 loader_->document_masking() ? "document masking on" : "document masking off");
}

void TokenRun::open_source(int i, uint32_t megatron_vocab) {
  const config::TokenSource& source = config_.source(i);
  const std::string prefix = megatron_prefix_of(source, i);
  if (prefix.empty()) {
    for (const std::string split : {"train", "val"}) {
      if (split == "val" && !has_split(source.path(), split)) break;
      auto dataset = std::make_unique<TokenDataset>(TokenDataset::open_split(source.path(), split));
      loom_datasets_.push_back(dataset.get());
      (split == "train" ? train_sources_ : val_sources_).push_back(BlendSource{dataset.get(), source.weight()});
      owned_.push_back(std::move(dataset));
    }
    kinds_.push_back("token shards");
    return;
  }
  auto dataset = std::make_unique<MegatronDataset>(prefix, megatron_vocab);
  const MegatronDataset& d = *dataset;
  kinds_.push_back(str_cat("Megatron dataset (" + std::string(d.dtype_name()) + ",", d.documents(), "documents)"));
  owned_.push_back(std::move(dataset));
  if (source.val_fraction() == 0) {
    train_sources_.push_back(BlendSource{&d, source.weight()});
    return;
  }
  const uint64_t docs = d.documents();
  const uint64_t held = std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(source.val_fraction() * static_cast<double>(docs))));
  if (held >= docs) {
    fail_user("data.tokens.source", i, "(" + source.path() + ") has val_fraction", source.val_fraction(),
              "but holding out", held, "of its", docs, "documents leaves none to train on; lower it");
  }
  const uint64_t split = d.document_begin(docs - held);
  owned_.push_back(std::make_unique<TokenRange>(d, 0, split, str_cat(d.name(), "(its first", docs - held, "documents)")));
  train_sources_.push_back(BlendSource{owned_.back().get(), source.weight()});
  owned_.push_back(std::make_unique<TokenRange>(d, split, d.tokens(), str_cat(d.name(), "(its last", held, "documents, held out by val_fraction)")));
  val_sources_.push_back(BlendSource{owned_.back().get(), source.weight()});
}

void TokenRun::agree_on_verification() {
  if (verified_) return;
  // 0: passed (or nothing to verify on this rank), 1: still running, 2: failed.
  int32_t state = 0;
  if (verifier_) {
    const ShardVerifier::State s = verifier_->state();
    state = s == ShardVerifier::State::kFailed ? 2 : s == ShardVerifier::State::kRunning ? 1 : 0;
  }
  int32_t worst = state;
  if (world_.size() > 1) world_.all_reduce(&state, &worst, 1, DType::kI32, parallel::ReduceOp::kMax);
  if (worst == 2) agree_on_error(world_, state == 2 ? verifier_->error() : "");
  if (worst == 0) verified_ = true;
}

std::span<const MicroBatch> TokenRun::next_step() {
  agree_on_verification();
  batch_ = loader_->next();
  micro_ = micro_batches_of(batch_);
  return micro_;
}

bool TokenRun::validation_loss(const std::function<double(std::span<const MicroBatch>)>& evaluate, double* loss) {
  if (val_sources_.empty() || config_.eval_batches() == 0) return false;
  // In stream order from the start: the same samples at every evaluation. A split shorter than
  // the evaluation wraps around (its next epoch, still in order).
  TokenLoader val(val_sources_, loader_options(false, 0), LoaderState{seed_, 0});
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
  for (const BlendSource& s : val_sources_) n += s.dataset->tokens();
  return n;
}

std::string TokenRun::describe() const {
  std::string out;
  uint64_t tokens = 0;
  for (const BlendSource& s : train_sources_) tokens += s.dataset->tokens();
  for (int i = 0; i < config_.source_size(); ++i) {
    out += (i ? ", " : "") + kinds_[static_cast<size_t>(i)] + " " + config_.source(i).path();
    if (config_.source_size() > 1) out += str_cat(" (weight", config_.source(i).weight()) + ")";
  }
  std::string checked;
  if (verifier_ && verifier_->bytes() > 0) {
    char line[128];
    if (verifier_->in_background()) {
      std::snprintf(line, sizeof(line), "; %s of shards being verified in the background",
                    format_bytes(verifier_->bytes()).c_str());
    } else {
      std::snprintf(line, sizeof(line), "; %s of shards verified in %.2f s", format_bytes(verifier_->bytes()).c_str(),
                    verifier_->seconds());
    }
    checked = line;
  }
  return str_cat(out + ":", tokens, "training tokens,", validation_tokens(), "validation tokens, vocabulary",
                 train_sources_.front().dataset->vocab_size()) + checked;
}

}  // namespace loom
