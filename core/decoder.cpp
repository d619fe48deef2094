#include "core/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/base/check.h"
#include "core/rng.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/matmul.h"

namespace loom {

namespace k = kernels::cpu;

Decoder::Decoder(const GPT& model, int batch) : model_(model), B_(batch) {
  const GPTConfig& c = model.config();
  LOOM_CHECK(batch > 0, "decoder batch", batch, "must be positive");
  LOOM_CHECK(model.tp().size() == 1, "the decoder runs a whole model on one rank, not a shard of tp =",
             model.tp().size());
  const int64_t L = c.n_layer, B = batch, T = c.max_seq_len, C = c.n_embd, V = c.vocab_size;
  k_cache_ = Tensor::zeros({L, B, T, C});
  v_cache_ = Tensor::zeros({L, B, T, C});
  scratch_ = Tensor::zeros({B * (C + C + 3 * C + C + C + C + 4 * C + V)});
  float* p = scratch_.f32();
  auto take = [&p](int64_t n) {
    float* out = p;
    p += n;
    return out;
  };
  x_ = take(B * C);          // (B, C) residual stream
  ln_ = take(B * C);         // (B, C)
  qkv_ = take(B * 3 * C);    // (B, 3C)
  q_ = take(B * C);          // (B, C)
  att_ = take(B * C);        // (B, C)
  proj_ = take(B * C);       // (B, C)
  fc_ = take(B * 4 * C);     // (B, 4C)
  logits_ = take(B * V);     // (B, V)
}

const float* Decoder::step(const int32_t* tokens) {
  const GPTConfig& c = model_.config();
  const int C = c.n_embd, V = c.vocab_size, NH = c.n_head, T = c.max_seq_len, B = B_;
  if (pos_ >= T) {
    fail_user("the sequence reached the model's", T, "positions (model.seq_len); cannot decode further");
  }
  const std::vector<Parameter>& P = model_.parameters();
  auto w = [&P](size_t i) { return P[i].value.f32(); };

  check_token_ids(tokens, B, 1, pos_, V, false, "token");
  k::token_embedding_forward(x_, tokens, w(0), B, C, 0, V);
  // Row pos_ of wpe, seen as a one-position table.
  k::position_embedding_forward(x_, w(1) + static_cast<int64_t>(pos_) * C, B, 1, C, 0);
  for (int l = 0; l < c.n_layer; ++l) {
    const size_t b = 2 + static_cast<size_t>(l) * 12;
    const int64_t layer_off = static_cast<int64_t>(l) * B * T * C;
    float* kc = k_cache_.f32() + layer_off;  // (B, T, C)
    float* vc = v_cache_.f32() + layer_off;  // (B, T, C)
    k::layernorm_forward(ln_, nullptr, nullptr, x_, w(b + 0), w(b + 1), B, C);
    k::matmul_forward(qkv_, ln_, w(b + 2), w(b + 3), B, C, 3 * C);
    k::attention_decode(att_, kc, vc, qkv_, B, pos_, T, C, NH);
    k::matmul_forward(proj_, att_, w(b + 4), w(b + 5), B, C, C);
    for (int64_t i = 0; i < static_cast<int64_t>(B) * C; ++i) x_[i] += proj_[i];
    k::layernorm_forward(ln_, nullptr, nullptr, x_, w(b + 6), w(b + 7), B, C);
    k::matmul_forward(fc_, ln_, w(b + 8), w(b + 9), B, C, 4 * C);
    k::gelu_forward(fc_, fc_, static_cast<long>(B) * 4 * C);
    k::matmul_forward(proj_, fc_, w(b + 10), w(b + 11), B, 4 * C, C);
    for (int64_t i = 0; i < static_cast<int64_t>(B) * C; ++i) x_[i] += proj_[i];
  }
  k::layernorm_forward(ln_, nullptr, nullptr, x_, w(P.size() - 2), w(P.size() - 1), B, C);
  k::matmul_forward(logits_, ln_, w(0), nullptr, B, C, V);
  ++pos_;
  return logits_;
}

int32_t sample_token(const float* logits, int V, float temperature, int top_k, float uniform) {
  LOOM_CHECK(V > 0, "vocabulary size", V);
  if (temperature <= 0) {
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  }
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  const int k = (top_k <= 0 || top_k > V) ? V : top_k;
  // Ties broken by the smaller id, so sampling does not depend on the sort's stability.
  auto larger = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(order.begin(), order.begin() + k, order.end(), larger);
  const double max_logit = logits[order[0]];
  std::vector<double> weights(static_cast<size_t>(k));
  double total = 0;
  for (int i = 0; i < k; ++i) {
    weights[static_cast<size_t>(i)] = std::exp((logits[order[static_cast<size_t>(i)]] - max_logit) / temperature);
    total += weights[static_cast<size_t>(i)];
  }
  double target = static_cast<double>(uniform) * total;
  for (int i = 0; i < k; ++i) {
    target -= weights[static_cast<size_t>(i)];
    if (target < 0) return order[static_cast<size_t>(i)];
  }
  return order[static_cast<size_t>(k - 1)];
}

std::vector<std::vector<int32_t>> generate_tokens(const GPT& model, const std::vector<int32_t>& prompt,
                                                  int new_tokens, int samples,
                                                  const SamplingSettings& settings) {
  const int V = model.config().vocab_size, T = model.config().max_seq_len;
  LOOM_CHECK(!prompt.empty() && new_tokens > 0 && samples > 0, "generate_tokens of", new_tokens,
             "tokens x", samples, "samples after", prompt.size(), "prompt tokens");
  LOOM_CHECK(static_cast<int>(prompt.size()) + new_tokens - 1 <= T, "a prompt of", prompt.size(),
             "tokens and", new_tokens, "new ones exceed the model's", T, "positions");
  Decoder decoder(model, samples);
  std::vector<int32_t> column(static_cast<size_t>(samples));
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(samples));
  const float* logits = nullptr;
  for (int32_t tok : prompt) {
    std::fill(column.begin(), column.end(), tok);
    logits = decoder.step(column.data());
  }
  for (int t = 0; t < new_tokens; ++t) {
    for (int s = 0; s < samples; ++s) {
      CounterRng rng(settings.seed, stream_id_of("generate.sample") + static_cast<uint64_t>(s));
      const int32_t tok = sample_token(logits + static_cast<int64_t>(s) * V, V, settings.temperature,
                                       settings.top_k, rng.uniform(static_cast<uint64_t>(t)));
      out[static_cast<size_t>(s)].push_back(tok);
      column[static_cast<size_t>(s)] = tok;
    }
    if (t + 1 < new_tokens) logits = decoder.step(column.data());
  }
  return out;
}

}  // namespace loom
