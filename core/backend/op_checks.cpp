// The contract of every Backend op, stated once (op_checks.h).
#include "core/backend/op_checks.h"

#include <climits>
#include <string>
#include <utility>
#include <vector>

#include "core/base/check.h"

namespace loom::backend_checks {

int64_t rows(const Tensor& t) { return t.shape().rank() == 0 ? 1 : t.shape()[0]; }

int64_t cols(const Tensor& t) {
  const int64_t r = rows(t);
  return r == 0 ? 0 : t.numel() / r;
}

bool present(const Tensor& t) { return t.raw() != nullptr; }

namespace {

constexpr DType kF32 = DType::kF32, kI32 = DType::kI32;

std::string dims_text(std::initializer_list<int64_t> dims) {
  std::string s = "(";
  for (auto it = dims.begin(); it != dims.end(); ++it) {
    if (it != dims.begin()) s += ", ";
    s += std::to_string(*it);
  }
  return s + ")";
}

bool dims_match(const Tensor& t, std::initializer_list<int64_t> dims) {
  if (dims.size() == 1) return t.numel() == *dims.begin();
  if (dims.size() == 2) return rows(t) == dims.begin()[0] && cols(t) == dims.begin()[1];
  return t.shape().dims() == std::vector<int64_t>(dims);
}

}  // namespace

void expect(const char* op, const char* name, const Tensor& t, DType dtype, Device device,
            std::initializer_list<int64_t> dims) {
  LOOM_CHECK(present(t), op, ":", name, "is absent but required");
  LOOM_CHECK(t.dtype() == dtype && t.device() == device && dims_match(t, dims), op, ":", name, "is",
             t.shape().str(), dtype_name(t.dtype()), "on", device_name(t.device()), "; expected",
             dims_text(dims), dtype_name(dtype), "on", device_name(device));
}

void expect_optional(const char* op, const char* name, const Tensor& t, DType dtype, Device device,
                     std::initializer_list<int64_t> dims) {
  if (present(t)) expect(op, name, t, dtype, device, dims);
}

void check_token_embedding_forward(const OpContract& c, const Tensor& out, const Tensor& tokens, const Tensor& wte) {
  const int64_t N = rows(out), C = cols(out), Vl = rows(wte);
  expect("token_embedding_forward", "out", out, c.act, c.device, {N, C});
  expect("token_embedding_forward", "tokens", tokens, kI32, c.device, {N});
  expect("token_embedding_forward", "wte", wte, c.act, c.device, {Vl, C});
}

void check_position_embedding_forward(const OpContract& c, const Tensor& out, const Tensor& wpe, int T,
                                      const Tensor& doc_starts) {
  const int64_t N = rows(out), C = cols(out);
  expect("position_embedding_forward", "out", out, c.act, c.device, {N, C});
  expect("position_embedding_forward", "wpe", wpe, c.act, c.device, {rows(wpe), C});
  expect_optional("position_embedding_forward", "doc_starts", doc_starts, kI32, c.device, {N});
  LOOM_CHECK(T > 0 && T <= rows(wpe), "position_embedding_forward: T", T, "outside 1 ..", rows(wpe));
}

void check_token_embedding_backward(const OpContract& c, const Tensor& dwte, const Tensor& dout, const Tensor& tokens) {
  const int64_t N = rows(dout), C = cols(dout), Vl = rows(dwte);
  expect("token_embedding_backward", "dout", dout, c.act, c.device, {N, C});
  expect("token_embedding_backward", "tokens", tokens, kI32, c.device, {N});
  expect("token_embedding_backward", "dwte", dwte, kF32, c.device, {Vl, C});
}

void check_position_embedding_backward(const OpContract& c, const Tensor& dwpe, const Tensor& dout, int T,
                                       const Tensor& doc_starts) {
  const int64_t N = rows(dout), C = cols(dout);
  expect("position_embedding_backward", "dout", dout, c.act, c.device, {N, C});
  expect("position_embedding_backward", "dwpe", dwpe, kF32, c.device, {rows(dwpe), C});
  expect_optional("position_embedding_backward", "doc_starts", doc_starts, kI32, c.device, {N});
  LOOM_CHECK(T > 0 && T <= rows(dwpe), "position_embedding_backward: T", T, "outside 1 ..", rows(dwpe));
}

void check_layernorm_forward(const OpContract& c, const Tensor& out, const Tensor& mean, const Tensor& rstd,
                             const Tensor& inp, const Tensor& weight, const Tensor& bias) {
  const int64_t N = rows(inp), C = cols(inp);
  const char* op = "layernorm_forward";
  expect(op, "inp", inp, c.act, c.device, {N, C});
  expect(op, "out", out, c.act, c.device, {N, C});
  expect(op, "weight", weight, c.act, c.device, {C});
  expect(op, "bias", bias, c.act, c.device, {C});
  expect_optional(op, "mean", mean, kF32, c.device, {N});
  expect_optional(op, "rstd", rstd, kF32, c.device, {N});
}

void check_residual_add(const OpContract& c, const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& bias) {
  const int64_t N = rows(out), C = cols(out);
  const char* op = "residual_add";
  expect(op, "out", out, c.act, c.device, {N, C});
  expect_optional(op, "a", a, c.act, c.device, {N, C});
  expect_optional(op, "b", b, c.act, c.device, {N, C});
  expect_optional(op, "bias", bias, c.act, c.device, {C});
}

void check_residual_layernorm_forward(const OpContract& c, const Tensor& residual_out, const Tensor& out,
                                      const Tensor& mean, const Tensor& rstd, const Tensor& residual_in,
                                      const Tensor& delta, const Tensor& delta_bias, const Tensor& weight,
                                      const Tensor& bias) {
  LOOM_CHECK(residual_out.raw() != out.raw(), "residual_layernorm_forward: residual_out must not alias out");
  check_residual_add(c, residual_out, residual_in, delta, delta_bias);
  check_layernorm_forward(c, out, mean, rstd, residual_out, weight, bias);
}

void check_layernorm_backward(const OpContract& c, const Tensor& dresidual, const Tensor& dweight, const Tensor& dbias,
                              const Tensor& dout, const Tensor& inp, const Tensor& weight, const Tensor& mean,
                              const Tensor& rstd) {
  const int64_t N = rows(inp), C = cols(inp);
  const char* op = "layernorm_backward";
  expect(op, "inp", inp, c.act, c.device, {N, C});
  expect(op, "dout", dout, c.act, c.device, {N, C});
  expect(op, "dresidual", dresidual, c.act, c.device, {N, C});
  expect(op, "weight", weight, c.act, c.device, {C});
  expect(op, "dweight", dweight, kF32, c.device, {C});
  expect(op, "dbias", dbias, kF32, c.device, {C});
  expect(op, "mean", mean, kF32, c.device, {N});
  expect(op, "rstd", rstd, kF32, c.device, {N});
}

void check_rmsnorm_forward(const OpContract& c, const Tensor& out, const Tensor& rstd, const Tensor& inp,
                           const Tensor& weight, float eps) {
  const int64_t N = rows(inp), C = cols(inp);
  const char* op = "rmsnorm_forward";
  expect(op, "inp", inp, c.act, c.device, {N, C});
  expect(op, "out", out, c.act, c.device, {N, C});
  expect(op, "weight", weight, c.act, c.device, {C});
  expect_optional(op, "rstd", rstd, kF32, c.device, {N});
  LOOM_CHECK(eps > 0.0f, "rmsnorm_forward: eps must be positive, got", eps);
}

void check_residual_rmsnorm_forward(const OpContract& c, const Tensor& residual_out, const Tensor& out,
                                    const Tensor& rstd, const Tensor& residual_in, const Tensor& delta,
                                    const Tensor& delta_bias, const Tensor& weight, float eps) {
  LOOM_CHECK(residual_out.raw() != out.raw(), "residual_rmsnorm_forward: residual_out must not alias out");
  check_residual_add(c, residual_out, residual_in, delta, delta_bias);
  check_rmsnorm_forward(c, out, rstd, residual_out, weight, eps);
}

void check_rmsnorm_backward(const OpContract& c, const Tensor& dresidual, const Tensor& dweight, const Tensor& dout,
                            const Tensor& inp, const Tensor& weight, const Tensor& rstd) {
  const int64_t N = rows(inp), C = cols(inp);
  const char* op = "rmsnorm_backward";
  expect(op, "inp", inp, c.act, c.device, {N, C});
  expect(op, "dout", dout, c.act, c.device, {N, C});
  expect(op, "dresidual", dresidual, c.act, c.device, {N, C});
  expect(op, "weight", weight, c.act, c.device, {C});
  expect(op, "dweight", dweight, kF32, c.device, {C});
  expect(op, "rstd", rstd, kF32, c.device, {N});
}

void check_matmul_forward(const OpContract& c, const Tensor& out, const Tensor& pre, const Tensor& inp,
                          const Tensor& weight, const Tensor& bias, int epilogue) {
  const int64_t N = rows(inp), C = cols(inp), OC = rows(weight);
  const char* op = "matmul_forward";
  expect(op, "inp", inp, c.act, c.device, {N, C});
  expect(op, "weight", weight, c.act, c.device, {OC, C});
  expect(op, "out", out, c.act, c.device, {N, OC});
  if (epilogue == 0) {
    LOOM_CHECK(!present(bias) && !present(pre), "matmul_forward: Epilogue::kNone takes no bias and no pre");
  } else {
    expect(op, "bias", bias, c.act, c.device, {OC});
  }
  if (epilogue == 2) {
    expect(op, "pre", pre, c.act, c.device, {N, OC});
  } else {
    LOOM_CHECK(!present(pre), "matmul_forward: only Epilogue::kBiasGelu takes pre");
  }
}

void check_matmul_backward(const OpContract& c, const Tensor& dinp, const Tensor& dweight, const Tensor& dout,
                           const Tensor& inp, const Tensor& weight) {
  const int64_t N = rows(dout), OC = cols(dout);
  const int64_t C = present(weight) ? cols(weight) : cols(inp);
  const char* op = "matmul_backward";
  expect(op, "dout", dout, c.act, c.device, {N, OC});
  if (present(dinp)) {
    expect(op, "dinp", dinp, c.act, c.device, {N, C});
    expect(op, "weight", weight, c.act, c.device, {OC, C});
  }
  if (present(dweight)) {
    expect(op, "dweight", dweight, kF32, c.device, {OC, C});
    expect(op, "inp", inp, c.act, c.device, {N, C});
  }
}

void check_bias_backward(const OpContract& c, const Tensor& dbias, const Tensor& dout) {
  expect("bias_backward", "dout", dout, c.act, c.device, {rows(dout), cols(dout)});
  expect("bias_backward", "dbias", dbias, kF32, c.device, {cols(dout)});
}

void check_gelu_backward(const OpContract& c, const Tensor& dinp, const Tensor& pre, const Tensor& dout) {
  const int64_t n = pre.numel();
  expect("gelu_backward", "pre", pre, c.act, c.device, {n});
  expect("gelu_backward", "dout", dout, c.act, c.device, {n});
  expect("gelu_backward", "dinp", dinp, c.act, c.device, {n});
}

void check_swiglu_forward(const OpContract& c, const Tensor& out, const Tensor& gu) {
  const int64_t N = rows(out), F = cols(out);
  expect("swiglu_forward", "out", out, c.act, c.device, {N, F});
  expect("swiglu_forward", "gu", gu, c.act, c.device, {N, 2 * F});
  LOOM_CHECK(out.raw() != gu.raw(), "swiglu_forward: out must not alias gu");
}

void check_swiglu_backward(const OpContract& c, const Tensor& dgu, const Tensor& gu, const Tensor& dout) {
  const int64_t N = rows(dout), F = cols(dout);
  expect("swiglu_backward", "dout", dout, c.act, c.device, {N, F});
  expect("swiglu_backward", "gu", gu, c.act, c.device, {N, 2 * F});
  expect("swiglu_backward", "dgu", dgu, c.act, c.device, {N, 2 * F});
  LOOM_CHECK(dgu.raw() != gu.raw() && dgu.raw() != dout.raw(), "swiglu_backward: dgu must not alias gu or dout");
}

namespace {

// qkv (B * T, (NH + 2 * NKV) * HS) with HS = 2 * inv_freq's length, rows at positions
// first_position .. first_position + T - 1.
void check_rope(const char* op, const char* name, const OpContract& c, const Tensor& qkv, const Tensor& inv_freq,
                int B, int T, int NH, int NKV, int first_position, const Tensor& doc_starts) {
  LOOM_CHECK(B > 0 && T > 0 && NH > 0 && NKV > 0, op, ": sizes must be positive: B", B, "T", T, "NH", NH, "NKV", NKV);
  LOOM_CHECK(NH % NKV == 0, op, ": the", NKV, "key/value heads must divide the", NH, "query heads");
  const int64_t half = inv_freq.numel();
  expect(op, "inv_freq", inv_freq, kF32, c.device, {half});
  LOOM_CHECK(half > 0, op, ": inv_freq is empty; it holds head_size / 2 frequencies");
  const int64_t N = static_cast<int64_t>(B) * T, width = (NH + 2 * static_cast<int64_t>(NKV)) * 2 * half;
  expect(op, name, qkv, c.act, c.device, {N, width});
  expect_optional(op, "doc_starts", doc_starts, kI32, c.device, {N});
  LOOM_CHECK(first_position >= 0 && first_position <= INT_MAX - (T - 1), op, ": positions", first_position, "..",
             static_cast<int64_t>(first_position) + T - 1, "outside 0 ..", INT_MAX);
}

// The head size HS of an attention whose out has Cl = NH * HS channels, after checking the head
// counts: NH query heads, NKV key/value heads, NKV dividing NH.
int64_t attention_head_size(const char* op, int64_t Cl, int NH, int NKV) {
  LOOM_CHECK(NH > 0 && NKV > 0, op, ": needs positive head counts, got NH", NH, "and NKV", NKV);
  LOOM_CHECK(NH % NKV == 0, op, ": NKV", NKV, "key/value heads must divide the NH", NH, "query heads");
  LOOM_CHECK(Cl % NH == 0, op, ": NH", NH, "heads must divide out's", Cl, "channels");
  return Cl / NH;
}

}  // namespace

void check_rope_forward(const OpContract& c, const Tensor& qkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                        int first_position, const Tensor& doc_starts) {
  check_rope("rope_forward", "qkv", c, qkv, inv_freq, B, T, NH, NKV, first_position, doc_starts);
}

void check_rope_backward(const OpContract& c, const Tensor& dqkv, const Tensor& inv_freq, int B, int T, int NH,
                         int NKV, const Tensor& doc_starts) {
  check_rope("rope_backward", "dqkv", c, dqkv, inv_freq, B, T, NH, NKV, 0, doc_starts);
}

void check_attention_forward(const OpContract& c, const Tensor& out, const Tensor& lse, const Tensor& qkv, int B,
                             int T, int NH, int NKV, const Tensor& doc_starts) {
  const int64_t N = static_cast<int64_t>(B) * T, Cl = cols(out);
  const char* op = "attention_forward";
  expect(op, "out", out, c.act, c.device, {N, Cl});
  const int64_t HS = attention_head_size(op, Cl, NH, NKV);
  expect(op, "qkv", qkv, c.act, c.device, {N, Cl + 2 * NKV * HS});  // [q: NH | k: NKV | v: NKV heads]
  expect(op, "lse", lse, kF32, c.device, {static_cast<int64_t>(B) * NH * T});
  expect_optional(op, "doc_starts", doc_starts, kI32, c.device, {N});
}

void check_attention_backward(const OpContract& c, const Tensor& dqkv, const Tensor& dout, const Tensor& qkv,
                              const Tensor& out, const Tensor& lse, int B, int T, int NH, int NKV,
                              const Tensor& doc_starts) {
  const int64_t N = static_cast<int64_t>(B) * T, Cl = cols(out);
  const char* op = "attention_backward";
  expect(op, "out", out, c.act, c.device, {N, Cl});
  const int64_t HS = attention_head_size(op, Cl, NH, NKV), W = Cl + 2 * NKV * HS;
  expect(op, "qkv", qkv, c.act, c.device, {N, W});
  expect(op, "dqkv", dqkv, c.act, c.device, {N, W});
  expect(op, "dout", dout, c.act, c.device, {N, Cl});
  expect(op, "lse", lse, kF32, c.device, {static_cast<int64_t>(B) * NH * T});
  expect_optional(op, "doc_starts", doc_starts, kI32, c.device, {N});
}

void check_attention_decode(const OpContract& c, const Tensor& out, const Tensor& k_cache, const Tensor& v_cache,
                            const Tensor& qkv, int NH, int NKV, int pos) {
  const int64_t B = rows(out), Cl = cols(out);
  // max_T is the cache's own; a cache of another rank is refused by expect() below.
  const int64_t max_T = k_cache.shape().rank() == 3 ? k_cache.shape()[1] : 0;
  const char* op = "attention_decode";
  expect(op, "out", out, c.act, c.device, {B, Cl});
  const int64_t HS = attention_head_size(op, Cl, NH, NKV), KV = NKV * HS;
  expect(op, "qkv", qkv, c.act, c.device, {B, Cl + 2 * KV});
  expect(op, "k_cache", k_cache, c.act, c.device, {B, max_T, KV});
  expect(op, "v_cache", v_cache, c.act, c.device, {B, max_T, KV});
  LOOM_CHECK(pos >= 0 && pos < max_T, "attention_decode: position", pos, "outside the cache's", max_T, "positions");
  LOOM_CHECK(k_cache.raw() != v_cache.raw(), "attention_decode: k_cache and v_cache must be different tensors");
}

void check_vocab_row_max(const OpContract& c, const Tensor& row_max, const Tensor& logits) {
  expect("vocab_row_max", "logits", logits, c.act, c.device, {rows(logits), cols(logits)});
  expect("vocab_row_max", "row_max", row_max, kF32, c.device, {rows(logits)});
}

void check_vocab_sum_exp(const OpContract& c, const Tensor& sum_exp, const Tensor& target_logit, const Tensor& logits,
                         const Tensor& targets, const Tensor& row_max) {
  const int64_t N = rows(logits);
  const char* op = "vocab_sum_exp";
  expect(op, "logits", logits, c.act, c.device, {N, cols(logits)});
  expect(op, "targets", targets, kI32, c.device, {N});
  for (const auto& [name, t] : {std::pair{"sum_exp", &sum_exp}, {"target_logit", &target_logit}, {"row_max", &row_max}}) {
    expect(op, name, *t, kF32, c.device, {N});
  }
}

void check_vocab_losses(const OpContract& c, const Tensor& losses, const Tensor& row_max, const Tensor& sum_exp,
                        const Tensor& target_logit, const Tensor& targets) {
  const int64_t N = rows(losses);
  const char* op = "vocab_losses";
  expect(op, "targets", targets, kI32, c.device, {N});
  for (const auto& [name, t] : {std::pair{"losses", &losses}, {"sum_exp", &sum_exp}, {"target_logit", &target_logit},
                                {"row_max", &row_max}}) {
    expect(op, name, *t, kF32, c.device, {N});
  }
}

void check_vocab_cross_entropy_backward(const OpContract& c, const Tensor& dlogits, const Tensor& logits,
                                        const Tensor& targets, const Tensor& row_max, const Tensor& sum_exp) {
  const int64_t N = rows(logits), Vl = cols(logits);
  const char* op = "vocab_cross_entropy_backward";
  expect(op, "logits", logits, c.act, c.device, {N, Vl});
  expect(op, "dlogits", dlogits, c.act, c.device, {N, Vl});
  expect(op, "targets", targets, kI32, c.device, {N});
  expect(op, "row_max", row_max, kF32, c.device, {N});
  expect(op, "sum_exp", sum_exp, kF32, c.device, {N});
}

void check_sum_of_squares(const OpContract& c, const Tensor& result, const Tensor& x) {
  expect("sum_of_squares", "result", result, c.accumulator, c.device, {1});
  expect("sum_of_squares", "x", x, kF32, c.device, {x.numel()});
}

void check_adamw_update(const OpContract& c, const Tensor& master, const Tensor& compute, const Tensor& grad,
                        const Tensor& m, const Tensor& v, const Tensor& global_norm) {
  const int64_t n = master.numel();
  const char* op = "adamw_update";
  for (const auto& [name, t] : {std::pair{"master", &master}, {"grad", &grad}, {"m", &m}, {"v", &v}}) {
    expect(op, name, *t, kF32, c.device, {n});
  }
  if (present(compute) && compute.raw() != master.raw()) expect(op, "compute", compute, c.act, c.device, {n});
  expect(op, "global_norm", global_norm, c.accumulator, c.device, {1});
}

}  // namespace loom::backend_checks
