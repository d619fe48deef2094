#include "data/batch_encoder.h"

#include "core/base/check.h"

namespace loom {

void DocumentBatch::add(std::string_view piece, bool last_of_document) {
  text += piece;
  text_ends.push_back(text.size());
  ends_document.push_back(last_of_document ? 1 : 0);
}

std::string_view DocumentBatch::piece(size_t p) const {
  const size_t begin = p == 0 ? 0 : text_ends[p - 1];
  return std::string_view(text).substr(begin, text_ends[p] - begin);
}

std::span<const int32_t> DocumentBatch::piece_tokens(size_t p) const {
  const size_t begin = p == 0 ? 0 : token_ends[p - 1];
  return std::span<const int32_t>(tokens).subspan(begin, token_ends[p] - begin);
}

void DocumentBatch::clear() {
  text.clear();
  text_ends.clear();
  ends_document.clear();
  tokens.clear();
  token_ends.clear();
  input_bytes_read = 0;
}

BatchEncoder::BatchEncoder(const Tokenizer& tokenizer, int threads, int max_in_flight)
    : tokenizer_(tokenizer), max_in_flight_(static_cast<size_t>(max_in_flight)) {
  LOOM_CHECK(threads >= 1, "encoding threads", threads, "must be >= 1");
  LOOM_CHECK(max_in_flight >= 1, "batches in flight", max_in_flight, "must be >= 1");
  if (threads > 1) {
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this] { work(); });
  }
}

BatchEncoder::~BatchEncoder() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void BatchEncoder::encode(Slot& slot) const {
  DocumentBatch& b = slot.batch;
  b.tokens.clear();
  b.token_ends.clear();
  const int32_t eos = tokenizer_.eos_id();
  try {
    for (size_t p = 0; p < b.size(); ++p) {
      tokenizer_.encode_into(b.piece(p), b.tokens);
      if (b.ends_document[p]) b.tokens.push_back(eos);
      b.token_ends.push_back(b.tokens.size());
    }
  } catch (...) {
    slot.error = std::current_exception();
  }
}

void BatchEncoder::work() {
  while (true) {
    std::shared_ptr<Slot> slot;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [this] { return stopping_ || !waiting_.empty(); });
      if (stopping_) return;
      slot = std::move(waiting_.front());
      waiting_.pop_front();
    }
    encode(*slot);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      slot->done = true;
    }
    slot_done_.notify_all();
  }
}

void BatchEncoder::submit(DocumentBatch batch) {
  LOOM_CHECK(!full(), "submit with", slots_.size(), "batches in flight, the most allowed");
  auto slot = std::make_shared<Slot>();
  slot->batch = std::move(batch);
  slots_.push_back(slot);
  if (threads_.empty()) {
    encode(*slot);
    slot->done = true;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    waiting_.push_back(std::move(slot));
  }
  work_ready_.notify_one();
}

DocumentBatch BatchEncoder::next() {
  LOOM_CHECK(!slots_.empty(), "next with no batch in flight");
  std::shared_ptr<Slot> slot = std::move(slots_.front());
  slots_.pop_front();
  {
    std::unique_lock<std::mutex> lock(mutex_);
    slot_done_.wait(lock, [&] { return slot->done; });
  }
  if (slot->error) std::rethrow_exception(slot->error);
  return std::move(slot->batch);
}

}  // namespace loom
