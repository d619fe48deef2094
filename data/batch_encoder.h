// Tokenizes batches of documents on a pool of threads and hands them back in the order they
// were given, so that what is written from them does not depend on the number of threads.
//
//   BatchEncoder encoder(tokenizer, threads, 2 * threads);
//   while (reading) {
//     encoder.submit(std::move(batch));                 // documents' texts, end to end
//     while (encoder.full()) write(encoder.next());     // the oldest batch, encoded
//   }
//   while (encoder.in_flight() > 0) write(encoder.next());
//
// A batch holds pieces of text: whole documents, or the parts of a long document cut where its
// tokenizer allows (Tokenizer::next_cut), so that one document can be spread over several batches
// and threads. Each piece that ends a document has its ids followed by the tokenizer's
// end-of-document token. Memory stays bounded by max_in_flight batches (their texts and ids); a
// batch handed back by next() can be cleared and submitted again, keeping its buffers. With one
// thread the batch is encoded inside submit(), on the caller's thread, and nothing else runs.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "data/tokenizer.h"

namespace loom {

struct DocumentBatch {
  std::string text;                    // the pieces end to end
  std::vector<size_t> text_ends;       // piece p is text[text_ends[p-1], text_ends[p])
  std::vector<uint8_t> ends_document;  // whether piece p is the last of its document
  std::vector<int32_t> tokens;         // after encoding: each piece's ids (and eos after a last one)
  std::vector<size_t> token_ends;
  uint64_t input_bytes_read = 0;       // the reader's position after this batch, for progress

  size_t size() const { return text_ends.size(); }
  void add(std::string_view piece, bool last_of_document = true);
  std::string_view piece(size_t p) const;
  std::span<const int32_t> piece_tokens(size_t p) const;
  void clear();
};

class BatchEncoder {
 public:
  // `threads` >= 1 encode; at most `max_in_flight` >= 1 batches are held at once.
  BatchEncoder(const Tokenizer& tokenizer, int threads, int max_in_flight);
  // Stops and joins the threads; batches still in flight are dropped.
  ~BatchEncoder();
  BatchEncoder(const BatchEncoder&) = delete;
  BatchEncoder& operator=(const BatchEncoder&) = delete;

  // Queues a batch; LOOM_CHECK: not full().
  void submit(DocumentBatch batch);
  // The oldest batch submitted, encoded, once it is; rethrows what encoding it threw.
  // LOOM_CHECK: in_flight() > 0.
  DocumentBatch next();

  size_t in_flight() const { return slots_.size(); }
  bool full() const { return slots_.size() >= max_in_flight_; }

 private:
  struct Slot {
    DocumentBatch batch;
    bool done = false;
    std::exception_ptr error;
  };
  void encode(Slot& slot) const;
  void work();

  const Tokenizer& tokenizer_;
  size_t max_in_flight_;
  std::deque<std::shared_ptr<Slot>> slots_;  // in submission order; touched by the caller only
  std::mutex mutex_;
  std::condition_variable work_ready_;       // waiting_ gained a slot, or stopping_
  std::condition_variable slot_done_;
  std::deque<std::shared_ptr<Slot>> waiting_;  // submitted, not yet taken by a thread
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace loom
