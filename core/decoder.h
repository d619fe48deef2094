// Incremental decoding with a KV cache, and sampling (temperature, top-k).
//
// The decoder feeds one position per call: each block appends that position's key and value to
// its cache and attends over the cache, so a new token costs O(pos) attention and one row of
// every matmul instead of re-running the whole prefix. It is GPT::forward's math on the model's
// own backend, weights and ops (LayerNorm, matmul with its epilogues, residual + LayerNorm, the
// residual add), with attention_decode in place of attention_forward: in bf16 it reads the bf16
// compute weights and rounds where the forward rounds. Its logits equal the full forward's logits
// at the same position (tested). The caches and activations live on the backend's device; the
// tokens go up and the logits come down, as f32, each step.
#pragma once

#include <cstdint>
#include <vector>

#include "core/backend/backend.h"
#include "core/gpt.h"
#include "core/tensor.h"

namespace loom {

class Decoder {
 public:
  // Caches for `batch` independent sequences of up to the model's max_seq_len positions. The
  // model is whole on this rank (tp = 1, one pipeline stage). In bf16 the model's compute copy of
  // its weights is refreshed from the f32 master first, as GPT::forward does, so a model whose
  // weights changed since its last forward (init_weights, a checkpoint) decodes its current ones.
  // UserError if the backend cannot run the decoding attention at the model's head size.
  Decoder(const GPT& model, int batch);

  // Feeds tokens (batch, host memory) at the next position; returns the logits for the position
  // after it, (batch, V) f32 in host memory the decoder owns, valid until the next call.
  const float* step(const int32_t* tokens);
  int position() const { return pos_; }
  int batch() const { return B_; }
  void reset() { pos_ = 0; }

 private:
  // One block's weights, as the model's ops read them (Parameter::compute).
  struct BlockWeights {
    Tensor ln1_w, ln1_b, qkv_w, qkv_b, attproj_w, attproj_b;
    Tensor ln2_w, ln2_b, fc_w, fc_b, fcproj_w, fcproj_b;
  };
  void block_forward(int layer);

  const GPT& model_;
  Backend& backend_;
  int B_;
  int pos_ = 0;
  Tensor wte_, wpe_, lnf_w_, lnf_b_;
  std::vector<BlockWeights> blocks_;
  // Activations, in the model's activation dtype on the backend's device.
  std::vector<Tensor> k_cache_, v_cache_;  // per block: (B, max_T, C)
  Tensor tokens_;                          // (B) i32
  Tensor x_;                               // (B, C) the residual stream: a block's input, then its output
  Tensor residual2_;                       // (B, C) the residual stream after a block's attention
  Tensor ln_;                              // (B, C)
  Tensor qkv_;                             // (B, 3C)
  Tensor att_;                             // (B, C)
  Tensor proj_;                            // (B, C)
  Tensor fc_pre_, fc_;                     // (B, 4C) before and after GELU
  Tensor logits_;                          // (B, V)
  Tensor logits_f32_;                      // (B, V) f32: bf16 logits widened (absent in fp32)
  std::vector<float> host_logits_;         // (B, V) what step() returns
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
