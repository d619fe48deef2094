// Incremental decoding with a KV cache, and sampling (temperature, top-k).
//
// The decoder feeds one position per call: each block appends that position's key and value to
// its cache and attends over the cache, so a new token costs O(pos) attention and one row of
// every matmul instead of re-running the whole prefix. Its logits equal the full forward's
// logits at the same position (tested).
#pragma once

#include <cstdint>
#include <vector>

#include "core/gpt.h"
#include "core/tensor.h"

namespace loom {

class Decoder {
 public:
  // Caches for `batch` independent sequences of up to the model's max_seq_len positions.
  Decoder(const GPT& model, int batch);

  // Feeds tokens (batch) at the next position; returns the logits for the position after it,
  // (batch, V), valid until the next call.
  const float* step(const int32_t* tokens);
  int position() const { return pos_; }
  int batch() const { return B_; }
  void reset() { pos_ = 0; }

 private:
  const GPT& model_;
  int B_;
  int pos_ = 0;
  Tensor k_cache_;  // (L, B, max_T, C)
  Tensor v_cache_;  // (L, B, max_T, C)
  Tensor scratch_;  // per-step activations, below
  float *x_, *ln_, *qkv_, *q_, *att_, *proj_, *fc_, *logits_;
};

// Picks a token from logits (V): greedy (argmax) when temperature == 0, else samples from
// softmax(logits / temperature) restricted to the top_k largest (top_k <= 0: all), using
// `uniform` in [0, 1) as the random draw (callers take it from a counter-based RNG).
int32_t sample_token(const float* logits, int V, float temperature, int top_k, float uniform);

struct SamplingSettings {
  float temperature = 0;  // 0: greedy
  int top_k = 0;          // 0: all tokens
  uint64_t seed = 0;      // sample s of a call draws from its own counter-based stream
};

// `samples` continuations of `prompt`, `new_tokens` tokens each, decoded together as one batch.
// Needs prompt.size() + new_tokens - 1 <= the model's max_seq_len (the last token is never fed
// back).
std::vector<std::vector<int32_t>> generate_tokens(const GPT& model, const std::vector<int32_t>& prompt,
                                                  int new_tokens, int samples,
                                                  const SamplingSettings& settings);

}  // namespace loom
