#include "data/loader.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/base/check.h"
#include "core/rng.h"

namespace loom {

namespace {

void require_positive(const char* what, int value) {
  if (value <= 0) fail_user("loader", what, "is", value, "but must be a positive integer");
}

// Validates the layout and the sources.
void check_sources(const std::vector<BlendSource>& sources, const BatchLayout& layout) {
  require_positive("sequence length", layout.seq_len);
  require_positive("micro-batch size", layout.micro_batch_size);
  require_positive("gradient accumulation steps", layout.grad_accum_steps);
  require_positive("data-parallel size", layout.dp_size);
  if (layout.dp_rank < 0 || layout.dp_rank >= layout.dp_size) {
    fail_user("loader data-parallel rank", layout.dp_rank, "is outside 0 ..", layout.dp_size - 1);
  }
  if (sources.empty()) fail_user("the loader needs at least one dataset");
  const uint64_t T = static_cast<uint64_t>(layout.seq_len);
  std::vector<uint64_t> windows;
  for (const BlendSource& source : sources) {
    LOOM_CHECK(source.dataset != nullptr, "a blend source without a dataset");
    const TokenStream& d = *source.dataset;
    if (d.tokens() < T + 1 && !d.has_loss_mask()) {
      fail_user("dataset", d.name(), "holds", d.tokens(), "tokens, fewer than one sample of sequence length",
                T, "plus one");
    }
    if (d.vocab_size() != sources.front().dataset->vocab_size()) {
      fail_user("dataset", d.name(), "has vocabulary size", d.vocab_size(), "but",
                sources.front().dataset->name(), "has", sources.front().dataset->vocab_size(),
                "(blended datasets must share one tokenizer)");
    }
  }
}

// Each source's samples: its packs, or its windows.
std::vector<uint64_t> windows_of(const std::vector<BlendSource>& sources, const BatchLayout& layout,
                                 const std::vector<uint64_t>& packs) {
  std::vector<uint64_t> windows;
  for (size_t k = 0; k < sources.size(); ++k) {
    const TokenStream& d = *sources[k].dataset;
    windows.push_back(d.has_loss_mask() ? packs[k] : (d.tokens() - 1) / static_cast<uint64_t>(layout.seq_len));
  }
  return windows;
}

std::vector<double> weights_of(const std::vector<BlendSource>& sources) {
  std::vector<double> weights;
  for (const BlendSource& s : sources) weights.push_back(s.weight);
  return weights;
}

}  // namespace

TokenLoader::TokenLoader(std::vector<BlendSource> sources, LoaderOptions options, LoaderState state)
    : sources_(std::move(sources)),
      options_(options),
      seed_(state.seed),
      packings_([&] {
        check_sources(sources_, options_.layout);
        std::vector<Packing> packings;
        for (size_t k = 0; k < sources_.size(); ++k) {
          const TokenStream& d = *sources_[k].dataset;
          packings.push_back(d.has_loss_mask() ? pack(d, k, seed_, options_, report_) : Packing{});
        }
        return packings;
      }()),
      order_(state.seed, windows_of(sources_, options_.layout, [&] {
               std::vector<uint64_t> packs;
               for (const Packing& p : packings_) packs.push_back(p.first.empty() ? 0 : p.first.size() - 1);
               return packs;
             }()), weights_of(sources_), options_.shuffle),
      next_sample_(state.next_sample) {
  const bool packed = std::any_of(sources_.begin(), sources_.end(),
                                  [](const BlendSource& s) { return s.dataset->has_loss_mask(); });
  const bool windows = std::any_of(sources_.begin(), sources_.end(),
                                   [](const BlendSource& s) { return !s.dataset->has_loss_mask(); });
  document_masking_ = options_.document_masking.value_or(packed);
  if (document_masking_ && windows && options_.end_of_document_id < 0) {
    fail_user("document masking of", sources_.front().dataset->name(),
              "needs the end-of-document token's id to find where its documents begin");
  }
  if (options_.prefetch_steps < 0) fail_user("loader prefetch_steps is", options_.prefetch_steps, "but must be >= 0");
  if (options_.prefetch_steps > 0) worker_ = std::thread(&TokenLoader::prefetch, this, next_sample_);
}

TokenLoader::~TokenLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

TokenLoader::Packing TokenLoader::pack(const TokenStream& stream, size_t source, uint64_t seed,
                                       const LoaderOptions& options, PackingReport& report) {
  const std::vector<uint64_t> ends = stream.document_ends();
  LOOM_CHECK(!ends.empty() && ends.back() == stream.tokens(), "the documents of masked stream", stream.name());
  const uint64_t T = static_cast<uint64_t>(options.layout.seq_len), n = ends.size();
  std::optional<RandomPermutation> order;
  if (options.shuffle) order.emplace(n, seed, stream_id_of("loader.packing"), source);
  Packing packing;
  uint64_t used = T;  // positions taken in the current row: none open yet
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t d = order ? (*order)(i) : i;
    const uint64_t begin = d == 0 ? 0 : ends[d - 1];
    uint64_t tokens = ends[d] - begin;
    ++report.documents;
    if (tokens > T + 1) {
      if (options.long_examples == LongExamples::kDrop) {
        ++report.dropped;
        continue;
      }
      ++report.truncated;
      tokens = T + 1;
    }
    if (tokens < 2) {  // nothing to predict
      ++report.dropped;
      continue;
    }
    if (used + tokens - 1 > T) {
      packing.first.push_back(packing.pieces.size());
      used = 0;
    }
    packing.pieces.push_back({begin, tokens});
    used += tokens - 1;
  }
  if (packing.pieces.empty()) {
    fail_user("dataset", stream.name(), "has no document of 2 to", T + 1, "tokens to train on (sequence length", T,
              str_cat(options.long_examples == LongExamples::kDrop ? "; longer ones are dropped" : "") + ")");
  }
  packing.first.push_back(packing.pieces.size());
  report.rows += packing.first.size() - 1;
  return packing;
}

void TokenLoader::read_window(const TokenStream& dataset, uint64_t window, int32_t* tokens, int32_t* targets,
                              int32_t* doc_starts) const {
  const uint64_t T = static_cast<uint64_t>(options_.layout.seq_len);
  const uint64_t begin = window * T;
  dataset.read(begin, T, tokens);
  std::memcpy(targets, tokens + 1, (T - 1) * sizeof(int32_t));
  dataset.read(begin + T, 1, targets + T - 1);
  if (doc_starts == nullptr) return;
  doc_starts[0] = 0;
  for (uint64_t t = 1; t < T; ++t) {
    doc_starts[t] = tokens[t - 1] == options_.end_of_document_id ? static_cast<int32_t>(t) : doc_starts[t - 1];
  }
}

void TokenLoader::read_pack(const TokenStream& dataset, const Packing& packing, uint64_t row, int32_t* tokens,
                            int32_t* targets, int32_t* doc_starts) const {
  const uint64_t T = static_cast<uint64_t>(options_.layout.seq_len);
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  uint64_t at = 0;
  for (uint64_t p = packing.first[row]; p < packing.first[row + 1]; ++p) {
    const Packing::Piece& piece = packing.pieces[p];
    ids.resize(piece.tokens);
    mask.resize(piece.tokens);
    dataset.read(piece.begin, piece.tokens, ids.data());
    dataset.read_loss_mask(piece.begin, piece.tokens, mask.data());
    for (uint64_t i = 0; i + 1 < piece.tokens; ++i) {
      tokens[at + i] = ids[i];
      targets[at + i] = mask[i + 1] != 0 ? ids[i + 1] : -1;
      if (doc_starts != nullptr) doc_starts[at + i] = static_cast<int32_t>(at);
    }
    at += piece.tokens - 1;
  }
  const int32_t pad = tokens[at - 1];
  for (uint64_t t = at; t < T; ++t) {
    tokens[t] = pad;
    targets[t] = -1;
    if (doc_starts != nullptr) doc_starts[t] = static_cast<int32_t>(at);
  }
}

void TokenLoader::read_sample(uint64_t index, int32_t* tokens, int32_t* targets, int32_t* doc_starts) const {
  const SampleRef ref = order_.at(index);
  const TokenStream& dataset = *sources_[ref.dataset].dataset;
  if (dataset.has_loss_mask()) {
    read_pack(dataset, packings_[ref.dataset], ref.window, tokens, targets, doc_starts);
  } else {
    read_window(dataset, ref.window, tokens, targets, doc_starts);
  }
}

StepBatch TokenLoader::read_step(uint64_t first_sample) const {
  const BatchLayout& l = options_.layout;
  StepBatch batch;
  batch.micro_batches = l.grad_accum_steps;
  batch.B = l.micro_batch_size;
  batch.T = l.seq_len;
  batch.first_sample = first_sample;
  const size_t rows = static_cast<size_t>(l.grad_accum_steps) * static_cast<size_t>(l.micro_batch_size);
  batch.tokens.resize(rows * static_cast<size_t>(l.seq_len));
  batch.targets.resize(batch.tokens.size());
  if (document_masking_) batch.doc_starts.resize(batch.tokens.size());
  const uint64_t dp = static_cast<uint64_t>(l.dp_size), B = static_cast<uint64_t>(l.micro_batch_size);
  for (uint64_t m = 0; m < static_cast<uint64_t>(l.grad_accum_steps); ++m) {
    for (uint64_t b = 0; b < B; ++b) {
      const uint64_t index = first_sample + m * dp * B + static_cast<uint64_t>(l.dp_rank) * B + b;
      const size_t row = static_cast<size_t>(m * B + b) * static_cast<size_t>(l.seq_len);
      read_sample(index, batch.tokens.data() + row, batch.targets.data() + row,
                  document_masking_ ? batch.doc_starts.data() + row : nullptr);
    }
  }
  return batch;
}

void TokenLoader::prefetch(uint64_t first_sample) {
  const size_t depth = static_cast<size_t>(options_.prefetch_steps);
  const uint64_t G = options_.layout.global_batch();
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || ready_.size() < depth; });
      if (stopping_) return;
    }
    StepBatch batch;
    try {
      batch = read_step(first_sample);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      changed_.notify_all();
      return;
    }
    first_sample += G;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.push_back(std::move(batch));
    }
    changed_.notify_all();
  }
}

StepBatch TokenLoader::next() {
  StepBatch batch;
  if (options_.prefetch_steps == 0) {
    batch = read_step(next_sample_);
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !ready_.empty() || error_ != nullptr; });
    if (ready_.empty()) std::rethrow_exception(error_);
    batch = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    changed_.notify_all();
  }
  next_sample_ += options_.layout.global_batch();
  return batch;
}

}  // namespace loom
