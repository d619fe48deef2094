// Incremental decoding with a KV cache, and sampling (temperature, top-k, top-p, stop tokens).
//
// The decoder feeds one position per call: each block appends that position's key and value to
// its cache and attends over the cache, so a new token costs O(pos) attention and one row of
// every matmul instead of re-running the whole prefix. It is GPT::forward's math on the model's
// own backend, weights and ops (the family's norms, matmul with its epilogues, SwiGLU and rotary
// embeddings for Llama, the residual add), with attention_decode in place of attention_forward
// (grouped-query: the caches hold the n_kv_head key/value heads only): in bf16 it reads the bf16
// compute weights and rounds where the forward rounds. Its logits equal the full forward's logits
// at the same position (tested). The caches and activations live on the backend's device; the
// tokens go up and the logits come down, as f32, each step.
#pragma once

#include <cstdint>
#include <functional>
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
  // One block's weights, as the model's ops read them (Parameter::compute). GPT-2 uses them all;
  // Llama ln1_w, qkv_w (qkv_b with biases), attproj_w (o_proj), ln2_w, fc_w (gate_up_proj) and
  // fcproj_w (down_proj).
  struct BlockWeights {
    Tensor ln1_w, ln1_b, qkv_w, qkv_b, attproj_w, attproj_b;
    Tensor ln2_w, ln2_b, fc_w, fc_b, fcproj_w, fcproj_b;
  };
  void block_forward(int layer);
  void llama_block_forward(int layer);

  const GPT& model_;
  Backend& backend_;
  int B_;
  int pos_ = 0;
  Tensor wte_, wpe_, lnf_w_, lnf_b_;  // wpe_ and lnf_b_: GPT-2 only
  Tensor out_w_;                      // the output projection: wte_, or Llama's untied lm_head
  std::vector<BlockWeights> blocks_;
  // Activations, in the model's activation dtype on the backend's device.
  std::vector<Tensor> k_cache_, v_cache_;  // per block: (B, max_T, n_kv_head x head size)
  Tensor tokens_;                          // (B) i32
  Tensor x_;                               // (B, C) the residual stream: a block's input, then its output
  Tensor residual2_;                       // (B, C) the residual stream after a block's attention
  Tensor ln_;                              // (B, C)
  Tensor qkv_;                             // (B, (n_head + 2 n_kv_head) x head size)
  Tensor att_;                             // (B, C)
  Tensor proj_;                            // (B, C)
  Tensor fc_pre_, fc_;                     // GPT-2 (B, 4C) before and after GELU; Llama (B, 2F) gate and
                                           // up, and (B, F) after SwiGLU
  Tensor logits_;                          // (B, V)
  Tensor logits_f32_;                      // (B, V) f32: bf16 logits widened (absent in fp32)
  std::vector<float> host_logits_;         // (B, V) what step() returns
};

// Picks a token from logits (V): greedy (argmax) when temperature == 0, else samples from
// softmax(logits / temperature) restricted to the top_k largest (top_k <= 0: all) and then to the
// smallest set of the most likely tokens whose probability reaches top_p (nucleus sampling;
// 1: all), using `uniform` in [0, 1) as the random draw (callers take it from a counter-based RNG).
int32_t sample_token(const float* logits, int V, float temperature, int top_k, float uniform, float top_p = 1.0f);

struct SamplingSettings {
  float temperature = 0;  // 0: greedy
  int top_k = 0;          // 0: all tokens
  uint64_t seed = 0;      // sample s of a call draws from its own counter-based stream
  float top_p = 1.0f;     // 1: no nucleus cut
  // A sample ends after any of these tokens (the end-of-sequence or end-of-turn token), which it
  // keeps as its last.
  std::vector<int32_t> stop_tokens;
  // Called after each new token with the sample's index and its tokens so far: true ends that
  // sample (stop strings: the caller decodes and looks for them).
  std::function<bool(int sample, const std::vector<int32_t>& tokens)> stop;
};

// `samples` continuations of `prompt`, up to `new_tokens` tokens each, decoded together as one
// batch; a sample that meets a stop token or the stop predicate ends there (the batch ends when
// every sample has). Needs prompt.size() + new_tokens - 1 <= the model's max_seq_len (the last
// token is never fed back).
std::vector<std::vector<int32_t>> generate_tokens(const GPT& model, const std::vector<int32_t>& prompt,
                                                  int new_tokens, int samples,
                                                  const SamplingSettings& settings);

}  // namespace loom
