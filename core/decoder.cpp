#include "core/decoder.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "core/base/check.h"
#include "core/rng.h"

namespace loom {

Decoder::Decoder(const GPT& model, int batch) : model_(model), backend_(model.backend()), B_(batch) {
  const GPTConfig& c = model.config();
  LOOM_CHECK(batch > 0, "decoder batch", batch, "must be positive");
  LOOM_CHECK(model.tp().size() == 1, "the decoder runs a whole model on one rank, not a shard of tp =",
             model.tp().size());
  LOOM_CHECK(model.first_stage() && model.last_stage(), "the decoder runs a whole model, not the pipeline stage of",
             "blocks [", model.first_layer(), ",", model.end_layer(), ")");
  OpShape attention;
  attention.B = batch;
  attention.T = c.max_seq_len;
  attention.NH = c.n_head;
  attention.C = c.n_embd;
  const std::string why = backend_.unsupported(Op::kAttentionDecode, attention);
  if (!why.empty()) fail_user("the", backend_.name(), "backend cannot decode this model:", why);

  // The compute copy follows the f32 master, as at the start of GPT::forward (in fp32 the two
  // are one tensor).
  for (const Parameter& p : model.parameters()) {
    if (p.compute.raw() != p.value.raw()) backend_.copy(p.compute, p.value);
  }
  auto weight = [&model](const std::string& name) { return model.parameter(name).compute; };
  wte_ = weight("wte");
  wpe_ = weight("wpe");
  lnf_w_ = weight("ln_f.weight");
  lnf_b_ = weight("ln_f.bias");
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    blocks_.push_back({weight(h + "ln_1.weight"), weight(h + "ln_1.bias"), weight(h + "attn.c_attn.weight"),
                       weight(h + "attn.c_attn.bias"), weight(h + "attn.c_proj.weight"),
                       weight(h + "attn.c_proj.bias"), weight(h + "ln_2.weight"), weight(h + "ln_2.bias"),
                       weight(h + "mlp.c_fc.weight"), weight(h + "mlp.c_fc.bias"), weight(h + "mlp.c_proj.weight"),
                       weight(h + "mlp.c_proj.bias")});
  }

  const DType act = backend_.activation_dtype();
  const int64_t B = batch, T = c.max_seq_len, C = c.n_embd, V = c.vocab_size;
  for (int l = 0; l < c.n_layer; ++l) {
    k_cache_.push_back(backend_.zeros({B, T, C}, act));
    v_cache_.push_back(backend_.zeros({B, T, C}, act));
  }
  tokens_ = backend_.zeros({B}, DType::kI32);
  x_ = backend_.zeros({B, C}, act);
  residual2_ = backend_.zeros({B, C}, act);
  ln_ = backend_.zeros({B, C}, act);
  qkv_ = backend_.zeros({B, 3 * C}, act);
  att_ = backend_.zeros({B, C}, act);
  proj_ = backend_.zeros({B, C}, act);
  fc_pre_ = backend_.zeros({B, 4 * C}, act);
  fc_ = backend_.zeros({B, 4 * C}, act);
  logits_ = backend_.zeros({B, V}, act);
  if (act != DType::kF32) logits_f32_ = backend_.zeros({B, V}, DType::kF32);
  host_logits_.assign(static_cast<size_t>(B * V), 0.0f);
}

// GPT::layer_forward for one position, with the cache's attention.
void Decoder::block_forward(int l) {
  const BlockWeights& w = blocks_[static_cast<size_t>(l)];
  Backend& be = backend_;
  be.layernorm_forward(ln_, {}, {}, x_, w.ln1_w, w.ln1_b);
  be.matmul_forward(qkv_, {}, ln_, w.qkv_w, w.qkv_b, Epilogue::kBias);
  be.attention_decode(att_, k_cache_[static_cast<size_t>(l)], v_cache_[static_cast<size_t>(l)], qkv_,
                      model_.config().n_head, model_.config().n_head, pos_);
  be.matmul_forward(proj_, {}, att_, w.attproj_w, {}, Epilogue::kNone);
  be.residual_layernorm_forward(residual2_, ln_, {}, {}, x_, proj_, w.attproj_b, w.ln2_w, w.ln2_b);
  be.matmul_forward(fc_, fc_pre_, ln_, w.fc_w, w.fc_b, Epilogue::kBiasGelu);
  be.matmul_forward(proj_, {}, fc_, w.fcproj_w, {}, Epilogue::kNone);
  be.residual_add(x_, residual2_, proj_, w.fcproj_b);
}

const float* Decoder::step(const int32_t* tokens) {
  const GPTConfig& c = model_.config();
  const int T = c.max_seq_len;
  if (pos_ >= T) {
    fail_user("the sequence reached the model's", T, "positions (model.seq_len); cannot decode further");
  }
  check_token_ids(tokens, B_, 1, pos_, c.vocab_size, false, "token");
  Backend& be = backend_;
  be.from_host(tokens_, tokens);
  be.token_embedding_forward(x_, tokens_, wte_, 0);
  // Every sequence is at position pos_: row pos_ of wpe, seen as a table of one position.
  be.position_embedding_forward(x_, wpe_.slice_rows(pos_, pos_ + 1), 1, 0);
  for (int l = 0; l < c.n_layer; ++l) block_forward(l);
  be.layernorm_forward(ln_, {}, {}, x_, lnf_w_, lnf_b_);
  be.matmul_forward(logits_, {}, ln_, wte_, {}, Epilogue::kNone);
  if (logits_.dtype() == DType::kF32) {
    be.to_host(host_logits_.data(), logits_);
  } else {
    be.copy(logits_f32_, logits_);
    be.to_host(host_logits_.data(), logits_f32_);
  }
  ++pos_;
  return host_logits_.data();
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
