#include "core/backend/cpu_backend.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/backend/op_checks.h"
#include "kernels/cpu/adamw.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/swiglu.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/vocab_parallel_cross_entropy.h"

namespace loom {

namespace k = kernels::cpu;
using backend_checks::cols;
using backend_checks::present;
using backend_checks::rows;

namespace {

constexpr Device kCpu = Device::kCPU;

// Conversions smaller than this run on the calling thread: an OpenMP region costs more than
// widening a few thousand values.
[[maybe_unused]] constexpr int64_t kParallelConversion = 1 << 15;  // unused without OpenMP

int dim(int64_t n) {
  LOOM_CHECK(n >= 0 && n <= INT32_MAX, "a dimension of", n, "is more than the CPU kernels index");
  return static_cast<int>(n);
}

// An optional i32 input (doc_starts): null when absent, which the kernels take as "no documents".
const int32_t* i32_or_null(const Tensor& t) { return present(t) ? t.i32() : nullptr; }

// The floats a kernel reads: an f32 tensor's own, or a bf16 tensor widened into a copy; null for
// an absent tensor.
class F32In {
 public:
  explicit F32In(const Tensor& t) {
    if (!present(t)) return;
    if (t.dtype() == DType::kF32) {
      data_ = t.f32();
      return;
    }
    LOOM_CHECK(t.dtype() == DType::kBF16, "an op input of dtype", dtype_name(t.dtype()));
    copy_.resize(static_cast<size_t>(t.numel()));
    const bf16* src = t.bf16_data();
#pragma omp parallel for simd schedule(static) if (t.numel() >= kParallelConversion)
    for (int64_t i = 0; i < t.numel(); ++i) copy_[static_cast<size_t>(i)] = bf16_to_float(src[i]);
    data_ = copy_.data();
  }
  const float* get() const { return data_; }

 private:
  std::vector<float> copy_;
  const float* data_ = nullptr;
};

// The floats a kernel writes: an f32 tensor's own, or for a bf16 tensor a buffer that done()
// rounds into it. With `keep`, the buffer starts with the tensor's values (a kernel that
// accumulates, or an output that aliases an input).
class F32Out {
 public:
  F32Out(const Tensor& t, bool keep) : tensor_(t) {
    if (!present(t)) return;
    if (t.dtype() == DType::kF32) {
      data_ = t.f32();
      return;
    }
    LOOM_CHECK(t.dtype() == DType::kBF16, "an op output of dtype", dtype_name(t.dtype()));
    copy_.assign(static_cast<size_t>(t.numel()), 0.0f);
    if (keep) {
      const bf16* src = t.bf16_data();
#pragma omp parallel for simd schedule(static) if (t.numel() >= kParallelConversion)
      for (int64_t i = 0; i < t.numel(); ++i) copy_[static_cast<size_t>(i)] = bf16_to_float(src[i]);
    }
    data_ = copy_.data();
  }
  float* get() const { return data_; }
  // Rounds a bf16 output into its tensor; nothing to do for f32.
  void done() {
    if (copy_.empty()) return;
    bf16* dst = tensor_.bf16_data();
#pragma omp parallel for simd schedule(static) if (tensor_.numel() >= kParallelConversion)
    for (int64_t i = 0; i < tensor_.numel(); ++i) dst[i] = float_to_bf16(copy_[static_cast<size_t>(i)]);
  }

 private:
  Tensor tensor_;
  std::vector<float> copy_;
  float* data_ = nullptr;
};

void zero_floats(float* p, int64_t n) { std::memset(p, 0, static_cast<size_t>(n) * sizeof(float)); }

}  // namespace

std::string CpuBackend::name() const {
  return precision() == Precision::kBF16 ? "cpu bf16 (emulated)" : "cpu fp32";
}

Tensor CpuBackend::zeros(const Shape& shape, DType dtype) { return Tensor::zeros(shape, dtype, kCpu); }

void CpuBackend::zero(const Tensor& t) {
  LOOM_CHECK(t.device() == kCpu, "CpuBackend::zero of a", device_name(t.device()), "tensor");
  if (t.numel() > 0) std::memset(t.raw(), 0, t.nbytes());
}

void CpuBackend::copy(const Tensor& dst, const Tensor& src) {
  LOOM_CHECK(dst.numel() == src.numel() && dst.device() == kCpu && src.device() == kCpu, "CpuBackend::copy of",
             src.shape().str(), "into", dst.shape().str());
  const int64_t n = src.numel();
  if (dst.dtype() == src.dtype()) {
    if (dst.raw() != src.raw() && n > 0) std::memmove(dst.raw(), src.raw(), src.nbytes());
  } else if (dst.dtype() == DType::kBF16 && src.dtype() == DType::kF32) {
    const float* s = src.f32();
    bf16* d = dst.bf16_data();
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(s[i]);
  } else if (dst.dtype() == DType::kF32 && src.dtype() == DType::kBF16) {
    const bf16* s = src.bf16_data();
    float* d = dst.f32();
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_float(s[i]);
  } else {
    LOOM_CHECK(false, "CpuBackend::copy from", dtype_name(src.dtype()), "to", dtype_name(dst.dtype()));
  }
}

void CpuBackend::to_host(void* host, const Tensor& src) {
  if (src.numel() > 0) std::memcpy(host, src.raw(), src.nbytes());
}

void CpuBackend::from_host(const Tensor& dst, const void* host) {
  if (dst.numel() > 0) std::memcpy(dst.raw(), host, dst.nbytes());
}

// --- embeddings ------------------------------------------------------------------------------

void CpuBackend::token_embedding_forward(const Tensor& out, const Tensor& tokens, const Tensor& wte,
                                         int vocab_start) {
  backend_checks::check_token_embedding_forward(contract(), out, tokens, wte);
  const int64_t N = rows(out), C = cols(out), Vl = rows(wte);
  F32In w(wte);
  F32Out o(out, false);
  k::token_embedding_forward(o.get(), tokens.i32(), w.get(), dim(N), dim(C), vocab_start, dim(Vl));
  o.done();
}

void CpuBackend::position_embedding_forward(const Tensor& out, const Tensor& wpe, int T, int first_row,
                                            const Tensor& doc_starts) {
  backend_checks::check_position_embedding_forward(contract(), out, wpe, T, doc_starts);
  const int64_t N = rows(out), C = cols(out);
  F32In w(wpe);
  F32Out o(out, true);
  k::position_embedding_forward(o.get(), w.get(), dim(N), T, dim(C), first_row, i32_or_null(doc_starts));
  o.done();
}

void CpuBackend::token_embedding_backward(const Tensor& dwte, const Tensor& dout, const Tensor& tokens,
                                          int vocab_start) {
  backend_checks::check_token_embedding_backward(contract(), dwte, dout, tokens);
  const int64_t N = rows(dout), C = cols(dout), Vl = rows(dwte);
  F32In d(dout);
  k::token_embedding_backward(dwte.f32(), d.get(), tokens.i32(), dim(N), dim(C), vocab_start, dim(Vl));
}

void CpuBackend::position_embedding_backward(const Tensor& dwpe, const Tensor& dout, int T, int first_row,
                                             const Tensor& doc_starts) {
  backend_checks::check_position_embedding_backward(contract(), dwpe, dout, T, doc_starts);
  const int64_t N = rows(dout), C = cols(dout);
  F32In d(dout);
  k::position_embedding_backward(dwpe.f32(), d.get(), dim(N), T, dim(C), first_row, i32_or_null(doc_starts));
}

// --- LayerNorm and the residual stream -------------------------------------------------------

void CpuBackend::layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& inp,
                                   const Tensor& weight, const Tensor& bias) {
  backend_checks::check_layernorm_forward(contract(), out, mean, rstd, inp, weight, bias);
  const int64_t N = rows(inp), C = cols(inp);
  F32In x(inp), w(weight), b(bias);
  F32Out o(out, false);
  k::layernorm_forward(o.get(), present(mean) ? mean.f32() : nullptr, present(rstd) ? rstd.f32() : nullptr,
                       x.get(), w.get(), b.get(), dim(N), dim(C));
  o.done();
}

void CpuBackend::residual_add(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& bias) {
  backend_checks::check_residual_add(contract(), out, a, b, bias);
  const int64_t N = rows(out), C = cols(out);
  F32In x(a), y(b), z(bias);
  F32Out o(out, false);
  k::residual_add(o.get(), x.get(), y.get(), z.get(), dim(N), dim(C));
  o.done();
}

void CpuBackend::residual_layernorm_forward(const Tensor& residual_out, const Tensor& out, const Tensor& mean,
                                            const Tensor& rstd, const Tensor& residual_in, const Tensor& delta,
                                            const Tensor& delta_bias, const Tensor& weight, const Tensor& bias) {
  backend_checks::check_residual_layernorm_forward(contract(), residual_out, out, mean, rstd, residual_in, delta,
                                                   delta_bias, weight, bias);
  // The residual is rounded (bf16) before the LayerNorm reads it, as the GPU's fused kernel
  // does; in fp32 this is kernels/cpu's residual_layernorm_forward, the add then the norm.
  residual_add(residual_out, residual_in, delta, delta_bias);
  layernorm_forward(out, mean, rstd, residual_out, weight, bias);
}

void CpuBackend::layernorm_backward(const Tensor& dresidual, const Tensor& dweight, const Tensor& dbias,
                                    const Tensor& dout, const Tensor& inp, const Tensor& weight, const Tensor& mean,
                                    const Tensor& rstd) {
  backend_checks::check_layernorm_backward(contract(), dresidual, dweight, dbias, dout, inp, weight, mean, rstd);
  const int64_t N = rows(inp), C = cols(inp);
  F32In x(inp), dy(dout), w(weight);
  F32Out dx(dresidual, true);
  k::layernorm_backward(dx.get(), dweight.f32(), dbias.f32(), dy.get(), x.get(), w.get(), mean.f32(), rstd.f32(),
                        dim(N), dim(C));
  dx.done();
}

// --- RMSNorm ---------------------------------------------------------------------------------

void CpuBackend::rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& inp, const Tensor& weight,
                                 float eps) {
  backend_checks::check_rmsnorm_forward(contract(), out, rstd, inp, weight, eps);
  const int64_t N = rows(inp), C = cols(inp);
  F32In x(inp), w(weight);
  F32Out o(out, false);
  k::rmsnorm_forward(o.get(), present(rstd) ? rstd.f32() : nullptr, x.get(), w.get(), eps, dim(N), dim(C));
  o.done();
}

void CpuBackend::residual_rmsnorm_forward(const Tensor& residual_out, const Tensor& out, const Tensor& rstd,
                                          const Tensor& residual_in, const Tensor& delta, const Tensor& delta_bias,
                                          const Tensor& weight, float eps) {
  backend_checks::check_residual_rmsnorm_forward(contract(), residual_out, out, rstd, residual_in, delta,
                                                 delta_bias, weight, eps);
  // The residual is rounded (bf16) before the RMSNorm reads it, as the GPU's fused kernel does;
  // in fp32 this is kernels/cpu's residual_rmsnorm_forward, the add then the norm.
  residual_add(residual_out, residual_in, delta, delta_bias);
  rmsnorm_forward(out, rstd, residual_out, weight, eps);
}

void CpuBackend::rmsnorm_backward(const Tensor& dresidual, const Tensor& dweight, const Tensor& dout,
                                  const Tensor& inp, const Tensor& weight, const Tensor& rstd) {
  backend_checks::check_rmsnorm_backward(contract(), dresidual, dweight, dout, inp, weight, rstd);
  const int64_t N = rows(inp), C = cols(inp);
  F32In x(inp), dy(dout), w(weight);
  F32Out dx(dresidual, true);
  k::rmsnorm_backward(dx.get(), dweight.f32(), dy.get(), x.get(), w.get(), rstd.f32(), dim(N), dim(C));
  dx.done();
}

// --- matmul ----------------------------------------------------------------------------------

void CpuBackend::matmul_forward(const Tensor& out, const Tensor& pre, const Tensor& inp, const Tensor& weight,
                                const Tensor& bias, Epilogue epilogue) {
  backend_checks::check_matmul_forward(contract(), out, pre, inp, weight, bias, static_cast<int>(epilogue));
  const int64_t N = rows(inp), C = cols(inp), OC = rows(weight);
  F32In x(inp), w(weight), b(bias);
  if (epilogue != Epilogue::kBiasGelu) {
    F32Out o(out, false);
    k::matmul_forward(o.get(), x.get(), w.get(), b.get(), dim(N), dim(C), dim(OC));
    o.done();
    return;
  }
  // GELU reads pre before it is rounded to bf16, as cuBLASLt's GELU epilogue does (the GPU's
  // path for output widths that are multiples of 8: every GPT-2 MLP); pre is stored rounded.
  F32Out p(pre, false);
  k::matmul_forward(p.get(), x.get(), w.get(), b.get(), dim(N), dim(C), dim(OC));
  F32Out o(out, false);
  k::gelu_forward(o.get(), p.get(), static_cast<long>(N * OC));
  p.done();
  o.done();
}

void CpuBackend::matmul_backward(const Tensor& dinp, const Tensor& dweight, const Tensor& dout, const Tensor& inp,
                                 const Tensor& weight) {
  backend_checks::check_matmul_backward(contract(), dinp, dweight, dout, inp, weight);
  const int64_t N = rows(dout), OC = cols(dout);
  const int64_t C = present(weight) ? cols(weight) : cols(inp);
  F32In dy(dout), x(present(dweight) ? inp : Tensor()), w(present(dinp) ? weight : Tensor());
  F32Out dx(dinp, false);
  // The kernel accumulates into dinp: it starts from zero, so dinp is overwritten.
  if (present(dinp)) zero_floats(dx.get(), N * C);
  k::matmul_backward(dx.get(), present(dweight) ? dweight.f32() : nullptr, nullptr, dy.get(), x.get(), w.get(),
                     dim(N), dim(C), dim(OC));
  dx.done();
}

void CpuBackend::bias_backward(const Tensor& dbias, const Tensor& dout) {
  backend_checks::check_bias_backward(contract(), dbias, dout);
  const int64_t N = rows(dout), OC = cols(dout);
  F32In dy(dout);
  // The matmul kernel's column sums (fixed column blocks, rows in order).
  k::matmul_backward(nullptr, nullptr, dbias.f32(), dy.get(), nullptr, nullptr, dim(N), 1, dim(OC));
}

void CpuBackend::gelu_backward(const Tensor& dinp, const Tensor& pre, const Tensor& dout) {
  backend_checks::check_gelu_backward(contract(), dinp, pre, dout);
  const int64_t n = pre.numel();
  F32In x(pre), dy(dout);
  // dinp may alias dout: the kernel accumulates, so it writes a fresh zeroed buffer then.
  const bool aliased = dinp.raw() == dout.raw();
  std::vector<float> fresh;
  F32Out dx(dinp, false);
  float* target = dx.get();
  if (aliased && dinp.dtype() == DType::kF32) {
    fresh.assign(static_cast<size_t>(n), 0.0f);
    target = fresh.data();
  } else {
    zero_floats(target, n);
  }
  k::gelu_backward(target, x.get(), dy.get(), static_cast<long>(n));
  if (target != dx.get()) std::memcpy(dx.get(), target, static_cast<size_t>(n) * sizeof(float));
  dx.done();
}

void CpuBackend::swiglu_forward(const Tensor& out, const Tensor& gu) {
  backend_checks::check_swiglu_forward(contract(), out, gu);
  const int64_t N = rows(out), F = cols(out);
  if (N == 0 || F == 0) return;
  F32In x(gu);
  F32Out y(out, false);
  k::swiglu_forward(y.get(), x.get(), dim(N), dim(F));
  y.done();
}

void CpuBackend::swiglu_backward(const Tensor& dgu, const Tensor& gu, const Tensor& dout) {
  backend_checks::check_swiglu_backward(contract(), dgu, gu, dout);
  const int64_t N = rows(dout), F = cols(dout);
  if (N == 0 || F == 0) return;
  F32In x(gu), dy(dout);
  F32Out dx(dgu, false);  // overwritten: the kernel writes every element
  k::swiglu_backward(dx.get(), x.get(), dy.get(), dim(N), dim(F));
  dx.done();
}

// --- rotary position embeddings --------------------------------------------------------------

// In place: a bf16 qkv is widened, rotated in f32 and rounded back once (v comes back unchanged:
// a bf16 value widened and rounded is itself).
void CpuBackend::rope_forward(const Tensor& qkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                              int first_position, const Tensor& doc_starts) {
  backend_checks::check_rope_forward(contract(), qkv, inv_freq, B, T, NH, NKV, first_position, doc_starts);
  F32Out x(qkv, true);
  k::rope_forward(x.get(), inv_freq.f32(), B, T, NH, NKV, dim(2 * inv_freq.numel()), first_position,
                  i32_or_null(doc_starts));
  x.done();
}

void CpuBackend::rope_backward(const Tensor& dqkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                               const Tensor& doc_starts) {
  backend_checks::check_rope_backward(contract(), dqkv, inv_freq, B, T, NH, NKV, doc_starts);
  F32Out dx(dqkv, true);
  k::rope_backward(dx.get(), inv_freq.f32(), B, T, NH, NKV, dim(2 * inv_freq.numel()), 0, i32_or_null(doc_starts));
  dx.done();
}

// --- attention -------------------------------------------------------------------------------

void CpuBackend::attention_forward(const Tensor& out, const Tensor& lse, const Tensor& qkv, int B, int T, int NH,
                                   int NKV, const Tensor& doc_starts) {
  backend_checks::check_attention_forward(contract(), out, lse, qkv, B, T, NH, NKV, doc_starts);
  const int64_t Cl = cols(out);
  F32In x(qkv);
  F32Out o(out, false);
  k::attention_forward(o.get(), lse.f32(), x.get(), B, T, dim(Cl), NH, NKV, i32_or_null(doc_starts));
  o.done();
}

void CpuBackend::attention_backward(const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                    const Tensor& lse, int B, int T, int NH, int NKV, const Tensor& doc_starts) {
  backend_checks::check_attention_backward(contract(), dqkv, dout, qkv, out, lse, B, T, NH, NKV, doc_starts);
  const int64_t N = static_cast<int64_t>(B) * T, Cl = cols(out);
  F32In x(qkv), y(out), dy(dout);
  F32Out dx(dqkv, false);
  zero_floats(dx.get(), N * cols(qkv));
  k::attention_backward(dx.get(), dy.get(), x.get(), y.get(), lse.f32(), B, T, dim(Cl), NH, NKV,
                        i32_or_null(doc_starts));
  dx.done();
}

void CpuBackend::attention_decode(const Tensor& out, const Tensor& k_cache, const Tensor& v_cache, const Tensor& qkv,
                                  int NH, int NKV, int pos) {
  backend_checks::check_attention_decode(contract(), out, k_cache, v_cache, qkv, NH, NKV, pos);
  // Cl = NH * HS channels of q and out; KV = NKV * HS of k, v and a cache row; W a qkv row.
  const int64_t B = rows(out), Cl = cols(out), max_T = k_cache.shape()[1], KV = k_cache.shape()[2];
  const int64_t W = Cl + 2 * KV;
  if (out.dtype() == DType::kF32) {
    k::attention_decode(out.f32(), k_cache.f32(), v_cache.f32(), qkv.f32(), dim(B), pos, dim(max_T), dim(Cl), NH,
                        NKV);
    return;
  }
  // bf16: the kernel runs on f32 copies of the cache rows it reads (0 .. pos of each sequence, a
  // cache of pos + 1 rows), so that a step widens O(pos) rows, not max_T. It appends the new key
  // and value to those copies itself; the bf16 caches take them below. Both are exact copies of
  // qkv's bf16 values, so the attention reads what the full forward's attention reads.
  const int64_t n_keys = pos + 1;
  std::vector<float> keys(static_cast<size_t>(B * n_keys * KV)), values(keys.size());
  for (int64_t b = 0; b < B; ++b) {
    const bf16* k_rows = k_cache.bf16_data() + b * max_T * KV;
    const bf16* v_rows = v_cache.bf16_data() + b * max_T * KV;
    for (int64_t i = 0; i < pos * KV; ++i) {
      keys[static_cast<size_t>(b * n_keys * KV + i)] = bf16_to_float(k_rows[i]);
      values[static_cast<size_t>(b * n_keys * KV + i)] = bf16_to_float(v_rows[i]);
    }
  }
  F32In x(qkv);
  F32Out o(out, false);
  k::attention_decode(o.get(), keys.data(), values.data(), x.get(), dim(B), pos, dim(n_keys), dim(Cl), NH, NKV);
  o.done();
  const bf16* row = qkv.bf16_data();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t at = (b * max_T + pos) * KV;
    std::memcpy(k_cache.bf16_data() + at, row + b * W + Cl, static_cast<size_t>(KV) * sizeof(bf16));
    std::memcpy(v_cache.bf16_data() + at, row + b * W + Cl + KV, static_cast<size_t>(KV) * sizeof(bf16));
  }
}

// --- vocabulary-parallel cross-entropy -------------------------------------------------------

void CpuBackend::vocab_row_max(const Tensor& row_max, const Tensor& logits) {
  backend_checks::check_vocab_row_max(contract(), row_max, logits);
  const int64_t N = rows(logits), Vl = cols(logits);
  F32In x(logits);
  k::vocab_shard_row_max(row_max.f32(), x.get(), dim(N), dim(Vl));
}

void CpuBackend::vocab_sum_exp(const Tensor& sum_exp, const Tensor& target_logit, const Tensor& logits,
                               const Tensor& targets, const Tensor& row_max, int vocab_start) {
  backend_checks::check_vocab_sum_exp(contract(), sum_exp, target_logit, logits, targets, row_max);
  const int64_t N = rows(logits), Vl = cols(logits);
  F32In x(logits);
  k::vocab_shard_sum_exp_and_target(sum_exp.f32(), target_logit.f32(), x.get(), targets.i32(), row_max.f32(), dim(N),
                                    dim(Vl), vocab_start);
}

void CpuBackend::vocab_losses(const Tensor& losses, const Tensor& row_max, const Tensor& sum_exp,
                              const Tensor& target_logit, const Tensor& targets) {
  backend_checks::check_vocab_losses(contract(), losses, row_max, sum_exp, target_logit, targets);
  const int64_t N = rows(losses);
  k::vocab_parallel_losses(losses.f32(), row_max.f32(), sum_exp.f32(), target_logit.f32(), targets.i32(), dim(N));
}

void CpuBackend::vocab_cross_entropy_backward(const Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                                              const Tensor& row_max, const Tensor& sum_exp, int vocab_start,
                                              float dloss) {
  backend_checks::check_vocab_cross_entropy_backward(contract(), dlogits, logits, targets, row_max, sum_exp);
  const int64_t N = rows(logits), Vl = cols(logits);
  const std::vector<float> dlosses(static_cast<size_t>(N), dloss);
  F32In x(logits);
  // In place (dlogits == logits) the kernel reads each row before writing it.
  F32Out dx(dlogits, false);
  k::vocab_shard_cross_entropy_backward(dx.get(), x.get(), targets.i32(), row_max.f32(), sum_exp.f32(),
                                        dlosses.data(), dim(N), dim(Vl), vocab_start);
  dx.done();
}

// --- optimizer -------------------------------------------------------------------------------

void CpuBackend::sum_of_squares(const Tensor& result, const Tensor& x, bool accumulate) {
  backend_checks::check_sum_of_squares(contract(), result, x);
  const double sum = k::sum_of_squares(x.f32(), x.numel());
  double* r = result.f64();
  *r = accumulate ? *r + sum : sum;
}

void CpuBackend::adamw_update(const Tensor& master, const Tensor& compute, const Tensor& grad, const Tensor& m,
                              const Tensor& v, const std::vector<k::AdamWSegment>& segments,
                              const Tensor& global_norm, const k::AdamWArenaHyper& hyper) {
  backend_checks::check_adamw_update(contract(), master, compute, grad, m, v, global_norm);
  // The compute copy is master itself in fp32, a bf16 rounding of it in bf16.
  const bool separate = present(compute) && compute.raw() != master.raw();
  LOOM_CHECK(!separate || compute.dtype() == DType::kBF16, "adamw_update: a separate compute copy must be bf16");
  k::adamw_update_segments(master.f32(), separate ? compute.bf16_data() : nullptr, grad.f32(), m.f32(), v.f32(),
                           master.numel(), segments.data(), static_cast<int>(segments.size()), *global_norm.f64(),
                           hyper);
}

}  // namespace loom
