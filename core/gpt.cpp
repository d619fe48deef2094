#include "core/gpt.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/rng.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/matmul.h"

namespace loom {

namespace k = kernels::cpu;

namespace {

constexpr int kPerLayer = 12;  // tensors per transformer block

struct ParamSpec {
  std::string name;
  Shape shape;
  bool decay;
};

std::vector<ParamSpec> param_specs(const GPTConfig& c) {
  const int64_t C = c.n_embd, V = c.vocab_size, T = c.max_seq_len;
  std::vector<ParamSpec> specs = {{"wte", {V, C}, true}, {"wpe", {T, C}, true}};
  for (int l = 0; l < c.n_layer; ++l) {
    std::string p = "h." + std::to_string(l) + ".";
    specs.push_back({p + "ln_1.weight", {C}, false});
    specs.push_back({p + "ln_1.bias", {C}, false});
    specs.push_back({p + "attn.c_attn.weight", {3 * C, C}, true});
    specs.push_back({p + "attn.c_attn.bias", {3 * C}, false});
    specs.push_back({p + "attn.c_proj.weight", {C, C}, true});
    specs.push_back({p + "attn.c_proj.bias", {C}, false});
    specs.push_back({p + "ln_2.weight", {C}, false});
    specs.push_back({p + "ln_2.bias", {C}, false});
    specs.push_back({p + "mlp.c_fc.weight", {4 * C, C}, true});
    specs.push_back({p + "mlp.c_fc.bias", {4 * C}, false});
    specs.push_back({p + "mlp.c_proj.weight", {C, 4 * C}, true});
    specs.push_back({p + "mlp.c_proj.bias", {C}, false});
  }
  specs.push_back({"ln_f.weight", {C}, false});
  specs.push_back({"ln_f.bias", {C}, false});
  return specs;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void add_inplace(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void zero(float* p, int64_t n) { std::memset(p, 0, static_cast<size_t>(n) * sizeof(float)); }

}  // namespace

void GPTConfig::validate() const {
  auto positive = [](const char* name, int v) {
    if (v <= 0) fail_user(name, "is", v, "but must be a positive integer");
  };
  positive("n_layer", n_layer);
  positive("n_head", n_head);
  positive("n_embd", n_embd);
  positive("vocab_size", vocab_size);
  positive("seq_len", max_seq_len);
  if (n_embd % n_head != 0) {
    fail_user("n_head =", n_head, "must divide n_embd =", n_embd);
  }
}

GPT::GPT(const GPTConfig& config) : config_(config) {
  config_.validate();
  std::vector<ParamSpec> specs = param_specs(config_);
  int64_t total = 0;
  for (const ParamSpec& s : specs) total += s.shape.numel();
  param_arena_ = Tensor::zeros({total});
  grad_arena_ = Tensor::zeros({total});
  int64_t offset = 0;
  for (const ParamSpec& s : specs) {
    Parameter p;
    p.name = s.name;
    p.value = Tensor::view(param_arena_.f32() + offset, s.shape);
    p.grad = Tensor::view(grad_arena_.f32() + offset, s.shape);
    p.decay = s.decay;
    param_ptrs_.push_back(p.value.f32());
    grad_ptrs_.push_back(p.grad.f32());
    params_.push_back(std::move(p));
    offset += s.shape.numel();
  }
}

const Parameter& GPT::parameter(const std::string& name) const {
  for (const Parameter& p : params_) {
    if (p.name == name) return p;
  }
  LOOM_CHECK(false, "no parameter named", name);
  throw Error("unreachable");
}

void GPT::init_weights(uint64_t seed) {
  const float residual_std = 0.02f / std::sqrt(2.0f * static_cast<float>(config_.n_layer));
  for (Parameter& p : params_) {
    float* data = p.value.f32();
    int64_t n = p.value.numel();
    if (ends_with(p.name, ".bias")) {
      std::fill(data, data + n, 0.0f);
    } else if (p.name.find("ln_") != std::string::npos) {
      std::fill(data, data + n, 1.0f);
    } else {
      bool residual = ends_with(p.name, "c_proj.weight");
      CounterRng rng(seed, stream_id_of(p.name));
      fill_normal(data, n, 0, rng, 0.0f, residual ? residual_std : 0.02f);
    }
  }
}

GPT::LayerParams GPT::layer_params(const std::vector<float*>& v, int layer) const {
  size_t b = 2 + static_cast<size_t>(layer) * kPerLayer;
  return {v[b + 0], v[b + 1], v[b + 2], v[b + 3], v[b + 4],  v[b + 5],
          v[b + 6], v[b + 7], v[b + 8], v[b + 9], v[b + 10], v[b + 11]};
}

void GPT::ensure_activations(int B, int T) {
  const int64_t bt = static_cast<int64_t>(B) * T;
  const int64_t C = config_.n_embd, V = config_.vocab_size, NH = config_.n_head;
  // Per block: ln1, atty, attproj, residual2, ln2, fcproj, residual3 (C each), qkv (3C),
  // fch and fch_gelu (4C each), four LayerNorm statistics and the heads' log-sum-exp.
  const int64_t per_layer = bt * (7 * C + 3 * C + 8 * C + 4 + NH);
  // encoded, lnf, dresidual, dln, datty (C each), dqkv (3C), dfch and dfch_gelu (4C each),
  // logits (V), and per position: two LayerNorm statistics, losses, dlosses.
  const int64_t total = config_.n_layer * per_layer + bt * (5 * C + 3 * C + 8 * C + V + 4);
  if (act_arena_.numel() < total) act_arena_ = Tensor::zeros({total});

  // Carved for the current (B, T) so that every buffer is a contiguous (B, T, ...) array.
  float* p = act_arena_.f32();
  auto take = [&p](int64_t n) {
    float* out = p;
    p += n;
    return out;
  };
  acts_.encoded = take(bt * C);
  acts_.layers.resize(static_cast<size_t>(config_.n_layer));
  for (LayerActs& a : acts_.layers) {
    a.ln1 = take(bt * C);
    a.ln1_mean = take(bt);
    a.ln1_rstd = take(bt);
    a.qkv = take(bt * 3 * C);
    a.atty = take(bt * C);
    a.att_lse = take(bt * NH);
    a.attproj = take(bt * C);
    a.residual2 = take(bt * C);
    a.ln2 = take(bt * C);
    a.ln2_mean = take(bt);
    a.ln2_rstd = take(bt);
    a.fch = take(bt * 4 * C);
    a.fch_gelu = take(bt * 4 * C);
    a.fcproj = take(bt * C);
    a.residual3 = take(bt * C);
  }
  acts_.lnf = take(bt * C);
  acts_.lnf_mean = take(bt);
  acts_.lnf_rstd = take(bt);
  acts_.logits = take(bt * V);
  acts_.losses = take(bt);
  acts_.dresidual = take(bt * C);
  acts_.dln = take(bt * C);
  acts_.datty = take(bt * C);
  acts_.dqkv = take(bt * 3 * C);
  acts_.dfch = take(bt * 4 * C);
  acts_.dfch_gelu = take(bt * 4 * C);
  acts_.dlosses = take(bt);
  LOOM_CHECK(p <= act_arena_.f32() + act_arena_.numel(), "activation arena overflow");
}

float GPT::forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
  const int C = config_.n_embd, V = config_.vocab_size, NH = config_.n_head;
  if (B <= 0) fail_user("batch size is", B, "but must be positive");
  if (T <= 0 || T > config_.max_seq_len) {
    fail_user("sequence length is", T, "but the model takes 1 ..", config_.max_seq_len,
              "positions (model.seq_len)");
  }
  ensure_activations(B, T);
  const int BT = B * T;
  last_B_ = B;
  last_T_ = T;
  last_tokens_.assign(tokens, tokens + BT);
  has_targets_ = targets != nullptr;

  const std::vector<float*>& w = param_ptrs_;
  k::embedding_forward(acts_.encoded, tokens, w[0], w[1], B, T, C, V);
  const float* residual = acts_.encoded;
  for (int l = 0; l < config_.n_layer; ++l) {
    LayerParams lp = layer_params(w, l);
    LayerActs& a = acts_.layers[static_cast<size_t>(l)];
    k::layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, residual, lp.ln1_w, lp.ln1_b, BT, C);
    k::matmul_forward(a.qkv, a.ln1, lp.qkv_w, lp.qkv_b, BT, C, 3 * C);
    k::attention_forward(a.atty, a.att_lse, a.qkv, B, T, C, NH);
    k::matmul_forward(a.attproj, a.atty, lp.attproj_w, lp.attproj_b, BT, C, C);
    add_inplace(a.residual2, residual, a.attproj, static_cast<int64_t>(BT) * C);
    k::layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.residual2, lp.ln2_w, lp.ln2_b, BT, C);
    k::matmul_forward(a.fch, a.ln2, lp.fc_w, lp.fc_b, BT, C, 4 * C);
    k::gelu_forward(a.fch_gelu, a.fch, static_cast<long>(BT) * 4 * C);
    k::matmul_forward(a.fcproj, a.fch_gelu, lp.fcproj_w, lp.fcproj_b, BT, 4 * C, C);
    add_inplace(a.residual3, a.residual2, a.fcproj, static_cast<int64_t>(BT) * C);
    residual = a.residual3;
  }
  const size_t nparams = params_.size();
  k::layernorm_forward(acts_.lnf, acts_.lnf_mean, acts_.lnf_rstd, residual, w[nparams - 2],
                       w[nparams - 1], BT, C);
  k::matmul_forward(acts_.logits, acts_.lnf, w[0], nullptr, BT, C, V);

  if (!has_targets_) return 0.0f;
  last_targets_.assign(targets, targets + BT);
  k::cross_entropy_forward(acts_.losses, acts_.logits, targets, BT, V);
  double sum = 0;
  int counted = 0;
  for (int i = 0; i < BT; ++i) {
    if (targets[i] != k::kIgnoreTarget) {
      sum += acts_.losses[i];
      ++counted;
    }
  }
  return counted ? static_cast<float>(sum / counted) : 0.0f;
}

void GPT::backward(float loss_scale) {
  LOOM_CHECK(has_targets_, "GPT::backward needs a forward with targets first");
  const int B = last_B_, T = last_T_, BT = B * T;
  const int C = config_.n_embd, V = config_.vocab_size, NH = config_.n_head;
  const int64_t btc = static_cast<int64_t>(BT) * C;

  int counted = 0;
  for (int32_t t : last_targets_) counted += t != k::kIgnoreTarget;
  const float dloss = counted ? loss_scale / static_cast<float>(counted) : 0.0f;
  for (int i = 0; i < BT; ++i) acts_.dlosses[i] = dloss;

  const std::vector<float*>& w = param_ptrs_;
  const std::vector<float*>& g = grad_ptrs_;
  const size_t nparams = params_.size();

  // Logits become their gradient in place; the probabilities are never stored.
  k::cross_entropy_backward(acts_.logits, acts_.logits, last_targets_.data(), acts_.dlosses, BT, V);
  zero(acts_.dln, btc);
  k::matmul_backward(acts_.dln, g[0], nullptr, acts_.logits, acts_.lnf, w[0], BT, C, V);
  const float* last_residual =
      config_.n_layer ? acts_.layers.back().residual3 : acts_.encoded;
  zero(acts_.dresidual, btc);
  k::layernorm_backward(acts_.dresidual, g[nparams - 2], g[nparams - 1], acts_.dln, last_residual,
                        w[nparams - 2], acts_.lnf_mean, acts_.lnf_rstd, BT, C);

  // dresidual holds d(loss)/d(output of block l) and, through the residual connections, turns
  // into d(loss)/d(input of block l) as the block's branches accumulate into it.
  for (int l = config_.n_layer - 1; l >= 0; --l) {
    LayerParams lp = layer_params(w, l);
    LayerParams lg = layer_params(g, l);
    LayerActs& a = acts_.layers[static_cast<size_t>(l)];
    const float* residual = l == 0 ? acts_.encoded : acts_.layers[static_cast<size_t>(l) - 1].residual3;

    zero(acts_.dfch_gelu, 4 * btc);
    k::matmul_backward(acts_.dfch_gelu, lg.fcproj_w, lg.fcproj_b, acts_.dresidual, a.fch_gelu,
                       lp.fcproj_w, BT, 4 * C, C);
    zero(acts_.dfch, 4 * btc);
    k::gelu_backward(acts_.dfch, a.fch, acts_.dfch_gelu, static_cast<long>(4 * btc));
    zero(acts_.dln, btc);
    k::matmul_backward(acts_.dln, lg.fc_w, lg.fc_b, acts_.dfch, a.ln2, lp.fc_w, BT, C, 4 * C);
    k::layernorm_backward(acts_.dresidual, lg.ln2_w, lg.ln2_b, acts_.dln, a.residual2, lp.ln2_w,
                          a.ln2_mean, a.ln2_rstd, BT, C);

    zero(acts_.datty, btc);
    k::matmul_backward(acts_.datty, lg.attproj_w, lg.attproj_b, acts_.dresidual, a.atty,
                       lp.attproj_w, BT, C, C);
    zero(acts_.dqkv, 3 * btc);
    k::attention_backward(acts_.dqkv, acts_.datty, a.qkv, a.atty, a.att_lse, B, T, C, NH);
    zero(acts_.dln, btc);
    k::matmul_backward(acts_.dln, lg.qkv_w, lg.qkv_b, acts_.dqkv, a.ln1, lp.qkv_w, BT, C, 3 * C);
    k::layernorm_backward(acts_.dresidual, lg.ln1_w, lg.ln1_b, acts_.dln, residual, lp.ln1_w,
                          a.ln1_mean, a.ln1_rstd, BT, C);
  }
  k::embedding_backward(g[0], g[1], acts_.dresidual, last_tokens_.data(), B, T, C);
  has_targets_ = false;  // logits now hold their gradient: a second backward would be wrong
}

void GPT::zero_grad() { grad_arena_.fill(0.0f); }

}  // namespace loom
