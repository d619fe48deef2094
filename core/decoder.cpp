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
  const DType act = backend_.activation_dtype();
  const int64_t B = batch, T = c.max_seq_len, C = c.n_embd, V = c.vocab_size;
  if (c.llama()) {
    wte_ = weight("embed_tokens.weight");
    lnf_w_ = weight("norm.weight");
    out_w_ = c.tied() ? wte_ : weight("lm_head.weight");
    for (int l = 0; l < c.n_layer; ++l) {
      const std::string h = "layers." + std::to_string(l) + ".";
      BlockWeights w;
      w.ln1_w = weight(h + "input_layernorm.weight");
      w.qkv_w = weight(h + "self_attn.qkv_proj.weight");
      if (c.qkv_bias) w.qkv_b = weight(h + "self_attn.qkv_proj.bias");
      w.attproj_w = weight(h + "self_attn.o_proj.weight");
      w.ln2_w = weight(h + "post_attention_layernorm.weight");
      w.fc_w = weight(h + "mlp.gate_up_proj.weight");
      w.fcproj_w = weight(h + "mlp.down_proj.weight");
      blocks_.push_back(w);
    }
    const int64_t kv = static_cast<int64_t>(c.kv_heads()) * c.head_size(), F = c.mlp_hidden();
    for (int l = 0; l < c.n_layer; ++l) {
      k_cache_.push_back(backend_.zeros({B, T, kv}, act));
      v_cache_.push_back(backend_.zeros({B, T, kv}, act));
    }
    qkv_ = backend_.zeros({B, C + 2 * kv}, act);
    fc_pre_ = backend_.zeros({B, 2 * F}, act);
    fc_ = backend_.zeros({B, F}, act);
  } else {
    wte_ = weight("wte");
    wpe_ = weight("wpe");
    lnf_w_ = weight("ln_f.weight");
    lnf_b_ = weight("ln_f.bias");
    out_w_ = wte_;
  }
  for (int l = 0; l < c.n_layer && !c.llama(); ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    blocks_.push_back({weight(h + "ln_1.weight"), weight(h + "ln_1.bias"), weight(h + "attn.c_attn.weight"),
                       weight(h + "attn.c_attn.bias"), weight(h + "attn.c_proj.weight"),
                       weight(h + "attn.c_proj.bias"), weight(h + "ln_2.weight"), weight(h + "ln_2.bias"),
                       weight(h + "mlp.c_fc.weight"), weight(h + "mlp.c_fc.bias"), weight(h + "mlp.c_proj.weight"),
                       weight(h + "mlp.c_proj.bias")});
  }

  for (int l = 0; l < c.n_layer && !c.llama(); ++l) {
    k_cache_.push_back(backend_.zeros({B, T, C}, act));
    v_cache_.push_back(backend_.zeros({B, T, C}, act));
  }
  if (!c.llama()) {
    qkv_ = backend_.zeros({B, 3 * C}, act);
    fc_pre_ = backend_.zeros({B, 4 * C}, act);
    fc_ = backend_.zeros({B, 4 * C}, act);
  }
  tokens_ = backend_.zeros({B}, DType::kI32);
  x_ = backend_.zeros({B, C}, act);
  residual2_ = backend_.zeros({B, C}, act);
  ln_ = backend_.zeros({B, C}, act);
  att_ = backend_.zeros({B, C}, act);
  proj_ = backend_.zeros({B, C}, act);
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

// The Llama block (core/model/llama_block.cpp) for one position: every sequence is at position
// pos_, so the rotation is that of one row of a micro-batch of length 1 starting there.
void Decoder::llama_block_forward(int l) {
  const BlockWeights& w = blocks_[static_cast<size_t>(l)];
  const GPTConfig& c = model_.config();
  Backend& be = backend_;
  be.rmsnorm_forward(ln_, {}, x_, w.ln1_w, c.norm_eps);
  be.matmul_forward(qkv_, {}, ln_, w.qkv_w, w.qkv_b, c.qkv_bias ? Epilogue::kBias : Epilogue::kNone);
  be.rope_forward(qkv_, model_.rope_frequencies(), B_, 1, c.n_head, c.kv_heads(), pos_, Tensor());
  be.attention_decode(att_, k_cache_[static_cast<size_t>(l)], v_cache_[static_cast<size_t>(l)], qkv_, c.n_head,
                      c.kv_heads(), pos_);
  be.matmul_forward(proj_, {}, att_, w.attproj_w, {}, Epilogue::kNone);
  be.residual_rmsnorm_forward(residual2_, ln_, {}, x_, proj_, {}, w.ln2_w, c.norm_eps);
  be.matmul_forward(fc_pre_, {}, ln_, w.fc_w, {}, Epilogue::kNone);
  be.swiglu_forward(fc_, fc_pre_);
  be.matmul_forward(proj_, {}, fc_, w.fcproj_w, {}, Epilogue::kNone);
  be.residual_add(x_, residual2_, proj_, {});
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
  if (c.llama()) {
    for (int l = 0; l < c.n_layer; ++l) llama_block_forward(l);
    be.rmsnorm_forward(ln_, {}, x_, lnf_w_, c.norm_eps);
  } else {
    // Every sequence is at position pos_: row pos_ of wpe, seen as a table of one position.
    be.position_embedding_forward(x_, wpe_.slice_rows(pos_, pos_ + 1), 1, 0, Tensor());
    for (int l = 0; l < c.n_layer; ++l) block_forward(l);
    be.layernorm_forward(ln_, {}, {}, x_, lnf_w_, lnf_b_);
  }
  be.matmul_forward(logits_, {}, ln_, out_w_, {}, Epilogue::kNone);
  if (logits_.dtype() == DType::kF32) {
    be.to_host(host_logits_.data(), logits_);
  } else {
    be.copy(logits_f32_, logits_);
    be.to_host(host_logits_.data(), logits_f32_);
  }
  ++pos_;
  return host_logits_.data();
}

int32_t sample_token(const float* logits, int V, float temperature, int top_k, float uniform, float top_p) {
  LOOM_CHECK(V > 0, "vocabulary size", V);
  if (temperature <= 0) {
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  }
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  int k = (top_k <= 0 || top_k > V) ? V : top_k;
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
  // Nucleus: the fewest most likely tokens whose probability reaches top_p (at least one).
  if (top_p < 1.0f) {
    double mass = 0;
    int keep = 0;
    while (keep < k) {
      mass += weights[static_cast<size_t>(keep)];
      ++keep;
      if (mass >= static_cast<double>(top_p) * total) break;
    }
    k = keep;
    total = mass;
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
  LOOM_CHECK(settings.top_p > 0 && settings.top_p <= 1, "top_p", settings.top_p, "must be in (0, 1]");
  Decoder decoder(model, samples);
  std::vector<int32_t> column(static_cast<size_t>(samples));
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(samples));
  std::vector<bool> done(static_cast<size_t>(samples), false);
  int running = samples;
  const float* logits = nullptr;
  for (int32_t tok : prompt) {
    std::fill(column.begin(), column.end(), tok);
    logits = decoder.step(column.data());
  }
  for (int t = 0; t < new_tokens && running > 0; ++t) {
    for (int s = 0; s < samples; ++s) {
      const size_t si = static_cast<size_t>(s);
      if (done[si]) continue;  // its row keeps decoding its last token; nothing is kept
      CounterRng rng(settings.seed, stream_id_of("generate.sample") + static_cast<uint64_t>(s));
      const int32_t tok = sample_token(logits + static_cast<int64_t>(s) * V, V, settings.temperature, settings.top_k,
                                       rng.uniform(static_cast<uint64_t>(t)), settings.top_p);
      out[si].push_back(tok);
      column[si] = tok;
      const bool stop_token =
          std::find(settings.stop_tokens.begin(), settings.stop_tokens.end(), tok) != settings.stop_tokens.end();
      if (stop_token || (settings.stop && settings.stop(s, out[si]))) {
        done[si] = true;
        --running;
      }
    }
    if (t + 1 < new_tokens && running > 0) logits = decoder.step(column.data());
  }
  return out;
}

}  // namespace loom
