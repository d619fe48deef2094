#include "data/loader.h"

#include <cstring>
#include <utility>

#include "core/base/check.h"

namespace loom {

namespace {

void require_positive(const char* what, int value) {
  if (value <= 0) fail_user("loader", what, "is", value, "but must be a positive integer");
}

// Validates the layout and the sources; returns each source's window count.
std::vector<uint64_t> windows_of(const std::vector<BlendSource>& sources, const BatchLayout& layout) {
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
    if (d.tokens() < T + 1) {
      fail_user("dataset", d.name(), "holds", d.tokens(), "tokens, fewer than one sample of sequence length",
                T, "plus one");
    }
    if (d.vocab_size() != sources.front().dataset->vocab_size()) {
      fail_user("dataset", d.name(), "has vocabulary size", d.vocab_size(), "but",
                sources.front().dataset->name(), "has", sources.front().dataset->vocab_size(),
                "(blended datasets must share one tokenizer)");
    }
    windows.push_back((d.tokens() - 1) / T);
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
      order_(state.seed, windows_of(sources_, options_.layout), weights_of(sources_), options_.shuffle),
      next_sample_(state.next_sample) {
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

void TokenLoader::read_sample(uint64_t index, int32_t* tokens, int32_t* targets) const {
  const SampleRef ref = order_.at(index);
  const TokenStream& dataset = *sources_[ref.dataset].dataset;
  const uint64_t T = static_cast<uint64_t>(options_.layout.seq_len);
  const uint64_t begin = ref.window * T;
  dataset.read(begin, T, tokens);
  std::memcpy(targets, tokens + 1, (T - 1) * sizeof(int32_t));
  dataset.read(begin + T, 1, targets + T - 1);
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
  const uint64_t dp = static_cast<uint64_t>(l.dp_size), B = static_cast<uint64_t>(l.micro_batch_size);
  for (uint64_t m = 0; m < static_cast<uint64_t>(l.grad_accum_steps); ++m) {
    for (uint64_t b = 0; b < B; ++b) {
      const uint64_t index = first_sample + m * dp * B + static_cast<uint64_t>(l.dp_rank) * B + b;
      const size_t row = static_cast<size_t>(m * B + b) * static_cast<size_t>(l.seq_len);
      read_sample(index, batch.tokens.data() + row, batch.targets.data() + row);
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
