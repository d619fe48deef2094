// The streaming loader: this data-parallel rank's micro-batches for each training step, drawn in
// the sample order (data/sample_order.h) from one or several blended token streams (Loom's splits,
// Megatron datasets: data/token_stream.h), prepared ahead of the trainer by a background thread.
//
// Global batches. Every step consumes G = dp * B * accum consecutive global sample indices,
// starting at LoaderState::next_sample. Micro-batch m of the step is the block of dp * B indices
// starting at next_sample + m * dp * B, and DP rank r takes rows [r * B, (r + 1) * B) of it, so
// the ranks' parts are disjoint and their union — the global batch — depends only on G and the
// state: a run resumed with a different dp (same G) sees the same global batches.
// A sample is a window of T + 1 tokens: its tokens row is window[0, T), its targets row
// window[1, T + 1), both int32 as the model takes them.
//
// Packed samples. A stream with a loss mask (instruction data, data/token_stream.h) is read as
// rows of WHOLE documents instead of windows: its documents, in an order that depends only on
// the seed (a random permutation of them; stream order when not shuffling), are packed greedily
// (next fit) into rows of T positions, a document of n tokens taking n - 1 of them (inputs
// d[0, n-1), targets d[1, n)); the rest of a row is padding with targets -1 (its tokens repeat
// the row's last token). A document longer than T + 1 tokens is cut to its first T + 1 or
// dropped (LoaderOptions::long_examples; packing_report counts both). The packs are such a
// stream's samples: the sample order (and every guarantee above) is over packs. Targets whose
// token's mask is 0 are -1, so only the counted tokens enter the loss.
//
// Document masking. StepBatch::doc_starts, when filled, says for each position t of a row where
// its document begins in the row: 0 <= doc_starts[t] <= t, non-decreasing, each either the
// previous one or t. A query at i sees keys j with doc_starts[i] <= j <= i, and its position is
// t - doc_starts[t]. Packed rows have it by default (each document, and the padding, its own);
// windows of other streams have it when asked, a token after end_of_document_id starting a new
// document (the window's first token starts one). Padding of a packed row is one document.
//
// The loader's whole state is LoaderState (two integers, stored in checkpoints): constructing a
// loader from a saved state continues the interrupted sequence bit for bit. With
// prefetch_steps > 0 a thread fills a queue of that many steps; an error it meets (a corrupt
// token) is re-thrown by next() once the steps before it are consumed. prefetch_steps == 0 reads
// in the caller's thread: the same batches.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "data/sample_order.h"
#include "data/token_stream.h"

namespace loom {

// What a checkpoint stores to resume the data stream.
struct LoaderState {
  uint64_t seed = 0;         // the sample order's seed (train.seed)
  uint64_t next_sample = 0;  // global index of the next step's first sample
};

struct BatchLayout {
  int seq_len = 0;           // T
  int micro_batch_size = 0;  // B: sequences of each micro-batch on each DP rank
  int grad_accum_steps = 1;  // micro-batches per step
  int dp_size = 1;
  int dp_rank = 0;

  // G: samples per step over all ranks.
  uint64_t global_batch() const {
    return static_cast<uint64_t>(dp_size) * static_cast<uint64_t>(micro_batch_size) *
           static_cast<uint64_t>(grad_accum_steps);
  }
};

// A dataset and its share of the blend (weights are normalised over the sources).
struct BlendSource {
  const TokenStream* dataset = nullptr;  // must outlive the loader
  double weight = 1.0;
};

// What packing does with a document longer than T + 1 tokens.
enum class LongExamples { kTruncate, kDrop };

struct LoaderOptions {
  BatchLayout layout;
  bool shuffle = true;     // false: windows in stream order (evaluation)
  int prefetch_steps = 2;  // steps prepared ahead by the thread; 0: no thread
  // Document masking (see above). Unset: on when a source is packed, else off. On for windows of
  // streams without a mask needs end_of_document_id >= 0.
  std::optional<bool> document_masking;
  int32_t end_of_document_id = -1;
  LongExamples long_examples = LongExamples::kTruncate;
};

// What packing did with the documents of the packed sources, summed over them.
struct PackingReport {
  uint64_t documents = 0;  // in the packed streams
  uint64_t truncated = 0;  // longer than T + 1 tokens, cut to T + 1
  uint64_t dropped = 0;    // longer than T + 1 tokens and left out, or of a single token
  uint64_t rows = 0;       // packs: the samples of one epoch
};

// One step's micro-batches for this rank.
struct StepBatch {
  int micro_batches = 0;
  int B = 0;
  int T = 0;
  uint64_t first_sample = 0;     // global index where the step starts
  std::vector<int32_t> tokens;   // (micro_batches, B, T)
  std::vector<int32_t> targets;  // (micro_batches, B, T); -1: not counted in the loss
  std::vector<int32_t> doc_starts;  // (micro_batches, B, T) or empty

  const int32_t* tokens_of(int micro_batch) const { return tokens.data() + offset_of(micro_batch); }
  const int32_t* targets_of(int micro_batch) const { return targets.data() + offset_of(micro_batch); }
  // nullptr without document masking.
  const int32_t* doc_starts_of(int micro_batch) const {
    return doc_starts.empty() ? nullptr : doc_starts.data() + offset_of(micro_batch);
  }

 private:
  size_t offset_of(int micro_batch) const {
    return static_cast<size_t>(micro_batch) * static_cast<size_t>(B) * static_cast<size_t>(T);
  }
};

class TokenLoader {
 public:
  // UserError for a non-positive size, a rank outside [0, dp), a dataset shorter than one window
  // (T + 1 tokens), datasets with different vocabularies, a bad weight, a packed stream with no
  // document left, or document masking of windows without an end-of-document id.
  TokenLoader(std::vector<BlendSource> sources, LoaderOptions options, LoaderState state);
  ~TokenLoader();  // stops and joins the thread
  TokenLoader(const TokenLoader&) = delete;
  TokenLoader& operator=(const TokenLoader&) = delete;

  // The next step's batch. Re-throws an error raised while preparing it.
  StepBatch next();
  // The position after the last batch next() returned: save this in a checkpoint.
  LoaderState state() const { return {seed_, next_sample_}; }

  const BatchLayout& layout() const { return options_.layout; }
  const SampleOrder& order() const { return order_; }
  uint32_t vocab_size() const { return sources_.front().dataset->vocab_size(); }

  // Global sample `index`'s tokens and targets (T each), and its doc_starts (T) when
  // `doc_starts` is not null: the pure function batches are made of.
  void read_sample(uint64_t index, int32_t* tokens, int32_t* targets, int32_t* doc_starts = nullptr) const;
  // Whether batches carry doc_starts.
  bool document_masking() const { return document_masking_; }
  const PackingReport& packing_report() const { return report_; }

 private:
  // A packed source's rows: row r is documents pieces[first[r], first[r + 1]).
  struct Packing {
    struct Piece {
      uint64_t begin = 0;   // stream offset
      uint64_t tokens = 0;  // >= 2; after truncation
    };
    std::vector<Piece> pieces;
    std::vector<uint64_t> first;  // (rows + 1)
  };
  static Packing pack(const TokenStream& stream, size_t source, uint64_t seed, const LoaderOptions& options,
                      PackingReport& report);
  void read_window(const TokenStream& dataset, uint64_t window, int32_t* tokens, int32_t* targets,
                   int32_t* doc_starts) const;
  void read_pack(const TokenStream& dataset, const Packing& packing, uint64_t row, int32_t* tokens,
                 int32_t* targets, int32_t* doc_starts) const;

  StepBatch read_step(uint64_t first_sample) const;
  void prefetch(uint64_t first_sample);

  std::vector<BlendSource> sources_;
  LoaderOptions options_;
  uint64_t seed_;
  PackingReport report_;
  std::vector<Packing> packings_;  // per source; empty rows for a source read in windows
  bool document_masking_ = false;
  SampleOrder order_;
  uint64_t next_sample_;  // touched by the consumer only

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<StepBatch> ready_;  // guarded by mutex_
  std::exception_ptr error_;     // guarded by mutex_
  bool stopping_ = false;        // guarded by mutex_
  std::thread worker_;
};

}  // namespace loom
