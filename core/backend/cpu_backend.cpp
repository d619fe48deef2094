#include "core/backend/cpu_backend.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/backend/op_checks.h"
#include "kernels/cpu/adamw.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/layernorm.h"
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
  const DType act = activation_dtype();
  const int64_t N = rows(out), C = cols(out), Vl = rows(wte);
  backend_checks::expect("token_embedding_forward", "out", out, act, kCpu, {N, C});
  backend_checks::expect("token_embedding_forward", "tokens", tokens, DType::kI32, kCpu, {N});
  backend_checks::expect("token_embedding_forward", "wte", wte, act, kCpu, {Vl, C});
  F32In w(wte);
  F32Out o(out, false);
  k::token_embedding_forward(o.get(), tokens.i32(), w.get(), dim(N), dim(C), vocab_start, dim(Vl));
  o.done();
}

void CpuBackend::position_embedding_forward(const Tensor& out, const Tensor& wpe, int T, int first_row) {
  const DType act = activation_dtype();
  const int64_t N = rows(out), C = cols(out);
  backend_checks::expect("position_embedding_forward", "out", out, act, kCpu, {N, C});
  backend_checks::expect("position_embedding_forward", "wpe", wpe, act, kCpu, {rows(wpe), C});
  LOOM_CHECK(T > 0 && T <= rows(wpe), "position_embedding_forward: T", T, "outside 1 ..", rows(wpe));
  F32In w(wpe);
  F32Out o(out, true);
  k::position_embedding_forward(o.get(), w.get(), dim(N), T, dim(C), first_row);
  o.done();
}

void CpuBackend::token_embedding_backward(const Tensor& dwte, const Tensor& dout, const Tensor& tokens,
                                          int vocab_start) {
  const int64_t N = rows(dout), C = cols(dout), Vl = rows(dwte);
  backend_checks::expect("token_embedding_backward", "dout", dout, activation_dtype(), kCpu, {N, C});
  backend_checks::expect("token_embedding_backward", "tokens", tokens, DType::kI32, kCpu, {N});
  backend_checks::expect("token_embedding_backward", "dwte", dwte, DType::kF32, kCpu, {Vl, C});
  F32In d(dout);
  k::token_embedding_backward(dwte.f32(), d.get(), tokens.i32(), dim(N), dim(C), vocab_start, dim(Vl));
}

void CpuBackend::position_embedding_backward(const Tensor& dwpe, const Tensor& dout, int T, int first_row) {
  const int64_t N = rows(dout), C = cols(dout);
  backend_checks::expect("position_embedding_backward", "dout", dout, activation_dtype(), kCpu, {N, C});
  backend_checks::expect("position_embedding_backward", "dwpe", dwpe, DType::kF32, kCpu, {rows(dwpe), C});
  LOOM_CHECK(T > 0 && T <= rows(dwpe), "position_embedding_backward: T", T, "outside 1 ..", rows(dwpe));
  F32In d(dout);
  k::position_embedding_backward(dwpe.f32(), d.get(), dim(N), T, dim(C), first_row);
}

// --- LayerNorm and the residual stream -------------------------------------------------------

void CpuBackend::layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& inp,
                                   const Tensor& weight, const Tensor& bias) {
  const DType act = activation_dtype();
  const int64_t N = rows(inp), C = cols(inp);
  const char* op = "layernorm_forward";
  backend_checks::expect(op, "inp", inp, act, kCpu, {N, C});
  backend_checks::expect(op, "out", out, act, kCpu, {N, C});
  backend_checks::expect(op, "weight", weight, act, kCpu, {C});
  backend_checks::expect(op, "bias", bias, act, kCpu, {C});
  backend_checks::expect_optional(op, "mean", mean, DType::kF32, kCpu, {N});
  backend_checks::expect_optional(op, "rstd", rstd, DType::kF32, kCpu, {N});
  F32In x(inp), w(weight), b(bias);
  F32Out o(out, false);
  k::layernorm_forward(o.get(), present(mean) ? mean.f32() : nullptr, present(rstd) ? rstd.f32() : nullptr,
                       x.get(), w.get(), b.get(), dim(N), dim(C));
  o.done();
}

void CpuBackend::residual_add(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& bias) {
  const DType act = activation_dtype();
  const int64_t N = rows(out), C = cols(out);
  const char* op = "residual_add";
  backend_checks::expect(op, "out", out, act, kCpu, {N, C});
  backend_checks::expect_optional(op, "a", a, act, kCpu, {N, C});
  backend_checks::expect_optional(op, "b", b, act, kCpu, {N, C});
  backend_checks::expect_optional(op, "bias", bias, act, kCpu, {C});
  F32In x(a), y(b), z(bias);
  F32Out o(out, false);
  k::residual_add(o.get(), x.get(), y.get(), z.get(), dim(N), dim(C));
  o.done();
}

void CpuBackend::residual_layernorm_forward(const Tensor& residual_out, const Tensor& out, const Tensor& mean,
                                            const Tensor& rstd, const Tensor& residual_in, const Tensor& delta,
                                            const Tensor& delta_bias, const Tensor& weight, const Tensor& bias) {
  LOOM_CHECK(residual_out.raw() != out.raw(), "residual_layernorm_forward: residual_out must not alias out");
  // The residual is rounded (bf16) before the LayerNorm reads it, as the GPU's fused kernel
  // does; in fp32 this is kernels/cpu's residual_layernorm_forward, the add then the norm.
  residual_add(residual_out, residual_in, delta, delta_bias);
  layernorm_forward(out, mean, rstd, residual_out, weight, bias);
}

void CpuBackend::layernorm_backward(const Tensor& dresidual, const Tensor& dweight, const Tensor& dbias,
                                    const Tensor& dout, const Tensor& inp, const Tensor& weight, const Tensor& mean,
                                    const Tensor& rstd) {
  const DType act = activation_dtype();
  const int64_t N = rows(inp), C = cols(inp);
  const char* op = "layernorm_backward";
  backend_checks::expect(op, "inp", inp, act, kCpu, {N, C});
  backend_checks::expect(op, "dout", dout, act, kCpu, {N, C});
  backend_checks::expect(op, "dresidual", dresidual, act, kCpu, {N, C});
  backend_checks::expect(op, "weight", weight, act, kCpu, {C});
  backend_checks::expect(op, "dweight", dweight, DType::kF32, kCpu, {C});
  backend_checks::expect(op, "dbias", dbias, DType::kF32, kCpu, {C});
  backend_checks::expect(op, "mean", mean, DType::kF32, kCpu, {N});
  backend_checks::expect(op, "rstd", rstd, DType::kF32, kCpu, {N});
  F32In x(inp), dy(dout), w(weight);
  F32Out dx(dresidual, true);
  k::layernorm_backward(dx.get(), dweight.f32(), dbias.f32(), dy.get(), x.get(), w.get(), mean.f32(), rstd.f32(),
                        dim(N), dim(C));
  dx.done();
}

// --- matmul ----------------------------------------------------------------------------------

void CpuBackend::matmul_forward(const Tensor& out, const Tensor& pre, const Tensor& inp, const Tensor& weight,
                                const Tensor& bias, Epilogue epilogue) {
  const DType act = activation_dtype();
  const int64_t N = rows(inp), C = cols(inp), OC = rows(weight);
  const char* op = "matmul_forward";
  backend_checks::expect(op, "inp", inp, act, kCpu, {N, C});
  backend_checks::expect(op, "weight", weight, act, kCpu, {OC, C});
  backend_checks::expect(op, "out", out, act, kCpu, {N, OC});
  if (epilogue == Epilogue::kNone) {
    LOOM_CHECK(!present(bias) && !present(pre), "matmul_forward: Epilogue::kNone takes no bias and no pre");
  } else {
    backend_checks::expect(op, "bias", bias, act, kCpu, {OC});
  }
  if (epilogue == Epilogue::kBiasGelu) {
    backend_checks::expect(op, "pre", pre, act, kCpu, {N, OC});
  } else {
    LOOM_CHECK(!present(pre), "matmul_forward: only Epilogue::kBiasGelu takes pre");
  }
  F32In x(inp), w(weight), b(bias);
  if (epilogue != Epilogue::kBiasGelu) {
    F32Out o(out, false);
    k::matmul_forward(o.get(), x.get(), w.get(), b.get(), dim(N), dim(C), dim(OC));
    o.done();
    return;
  }
  // GELU reads pre as stored (rounded in bf16), as the GPU's epilogue does.
  F32Out p(pre, false);
  k::matmul_forward(p.get(), x.get(), w.get(), b.get(), dim(N), dim(C), dim(OC));
  p.done();
  F32In rounded(pre);
  F32Out o(out, false);
  k::gelu_forward(o.get(), rounded.get(), static_cast<long>(N * OC));
  o.done();
}

void CpuBackend::matmul_backward(const Tensor& dinp, const Tensor& dweight, const Tensor& dout, const Tensor& inp,
                                 const Tensor& weight) {
  const DType act = activation_dtype();
  const int64_t N = rows(dout), OC = cols(dout);
  const int64_t C = present(weight) ? cols(weight) : cols(inp);
  const char* op = "matmul_backward";
  backend_checks::expect(op, "dout", dout, act, kCpu, {N, OC});
  if (present(dinp)) {
    backend_checks::expect(op, "dinp", dinp, act, kCpu, {N, C});
    backend_checks::expect(op, "weight", weight, act, kCpu, {OC, C});
  }
  if (present(dweight)) {
    backend_checks::expect(op, "dweight", dweight, DType::kF32, kCpu, {OC, C});
    backend_checks::expect(op, "inp", inp, act, kCpu, {N, C});
  }
  F32In dy(dout), x(present(dweight) ? inp : Tensor()), w(present(dinp) ? weight : Tensor());
  F32Out dx(dinp, false);
  // The kernel accumulates into dinp: it starts from zero, so dinp is overwritten.
  if (present(dinp)) zero_floats(dx.get(), N * C);
  k::matmul_backward(dx.get(), present(dweight) ? dweight.f32() : nullptr, nullptr, dy.get(), x.get(), w.get(),
                     dim(N), dim(C), dim(OC));
  dx.done();
}

void CpuBackend::bias_backward(const Tensor& dbias, const Tensor& dout) {
  const int64_t N = rows(dout), OC = cols(dout);
  backend_checks::expect("bias_backward", "dout", dout, activation_dtype(), kCpu, {N, OC});
  backend_checks::expect("bias_backward", "dbias", dbias, DType::kF32, kCpu, {OC});
  F32In dy(dout);
  // The matmul kernel's column sums (fixed column blocks, rows in order).
  k::matmul_backward(nullptr, nullptr, dbias.f32(), dy.get(), nullptr, nullptr, dim(N), 1, dim(OC));
}

void CpuBackend::gelu_backward(const Tensor& dinp, const Tensor& pre, const Tensor& dout) {
  const DType act = activation_dtype();
  const int64_t n = pre.numel();
  const char* op = "gelu_backward";
  backend_checks::expect(op, "pre", pre, act, kCpu, {n});
  backend_checks::expect(op, "dout", dout, act, kCpu, {n});
  backend_checks::expect(op, "dinp", dinp, act, kCpu, {n});
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

// --- attention -------------------------------------------------------------------------------

void CpuBackend::attention_forward(const Tensor& out, const Tensor& lse, const Tensor& qkv, int B, int T, int NH) {
  const DType act = activation_dtype();
  const int64_t N = static_cast<int64_t>(B) * T, Cl = cols(out);
  const char* op = "attention_forward";
  backend_checks::expect(op, "qkv", qkv, act, kCpu, {N, 3 * Cl});
  backend_checks::expect(op, "out", out, act, kCpu, {N, Cl});
  backend_checks::expect(op, "lse", lse, DType::kF32, kCpu, {static_cast<int64_t>(B) * NH * T});
  F32In x(qkv);
  F32Out o(out, false);
  k::attention_forward(o.get(), lse.f32(), x.get(), B, T, dim(Cl), NH);
  o.done();
}

void CpuBackend::attention_backward(const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                    const Tensor& lse, int B, int T, int NH) {
  const DType act = activation_dtype();
  const int64_t N = static_cast<int64_t>(B) * T, Cl = cols(out);
  const char* op = "attention_backward";
  backend_checks::expect(op, "qkv", qkv, act, kCpu, {N, 3 * Cl});
  backend_checks::expect(op, "dqkv", dqkv, act, kCpu, {N, 3 * Cl});
  backend_checks::expect(op, "out", out, act, kCpu, {N, Cl});
  backend_checks::expect(op, "dout", dout, act, kCpu, {N, Cl});
  backend_checks::expect(op, "lse", lse, DType::kF32, kCpu, {static_cast<int64_t>(B) * NH * T});
  F32In x(qkv), y(out), dy(dout);
  F32Out dx(dqkv, false);
  zero_floats(dx.get(), N * 3 * Cl);
  k::attention_backward(dx.get(), dy.get(), x.get(), y.get(), lse.f32(), B, T, dim(Cl), NH);
  dx.done();
}

// --- vocabulary-parallel cross-entropy -------------------------------------------------------

void CpuBackend::vocab_row_max(const Tensor& row_max, const Tensor& logits) {
  const int64_t N = rows(logits), Vl = cols(logits);
  backend_checks::expect("vocab_row_max", "logits", logits, activation_dtype(), kCpu, {N, Vl});
  backend_checks::expect("vocab_row_max", "row_max", row_max, DType::kF32, kCpu, {N});
  F32In x(logits);
  k::vocab_shard_row_max(row_max.f32(), x.get(), dim(N), dim(Vl));
}

void CpuBackend::vocab_sum_exp(const Tensor& sum_exp, const Tensor& target_logit, const Tensor& logits,
                               const Tensor& targets, const Tensor& row_max, int vocab_start) {
  const int64_t N = rows(logits), Vl = cols(logits);
  const char* op = "vocab_sum_exp";
  backend_checks::expect(op, "logits", logits, activation_dtype(), kCpu, {N, Vl});
  backend_checks::expect(op, "targets", targets, DType::kI32, kCpu, {N});
  for (const auto& [name, t] : {std::pair{"sum_exp", &sum_exp}, {"target_logit", &target_logit}, {"row_max", &row_max}}) {
    backend_checks::expect(op, name, *t, DType::kF32, kCpu, {N});
  }
  F32In x(logits);
  k::vocab_shard_sum_exp_and_target(sum_exp.f32(), target_logit.f32(), x.get(), targets.i32(), row_max.f32(), dim(N),
                                    dim(Vl), vocab_start);
}

void CpuBackend::vocab_losses(const Tensor& losses, const Tensor& row_max, const Tensor& sum_exp,
                              const Tensor& target_logit, const Tensor& targets) {
  const int64_t N = rows(losses);
  const char* op = "vocab_losses";
  backend_checks::expect(op, "targets", targets, DType::kI32, kCpu, {N});
  for (const auto& [name, t] : {std::pair{"losses", &losses}, {"sum_exp", &sum_exp}, {"target_logit", &target_logit},
                                {"row_max", &row_max}}) {
    backend_checks::expect(op, name, *t, DType::kF32, kCpu, {N});
  }
  k::vocab_parallel_losses(losses.f32(), row_max.f32(), sum_exp.f32(), target_logit.f32(), targets.i32(), dim(N));
}

void CpuBackend::vocab_cross_entropy_backward(const Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                                              const Tensor& row_max, const Tensor& sum_exp, int vocab_start,
                                              float dloss) {
  const int64_t N = rows(logits), Vl = cols(logits);
  const char* op = "vocab_cross_entropy_backward";
  backend_checks::expect(op, "logits", logits, activation_dtype(), kCpu, {N, Vl});
  backend_checks::expect(op, "dlogits", dlogits, activation_dtype(), kCpu, {N, Vl});
  backend_checks::expect(op, "targets", targets, DType::kI32, kCpu, {N});
  backend_checks::expect(op, "row_max", row_max, DType::kF32, kCpu, {N});
  backend_checks::expect(op, "sum_exp", sum_exp, DType::kF32, kCpu, {N});
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
  backend_checks::expect("sum_of_squares", "result", result, DType::kF64, kCpu, {1});
  backend_checks::expect("sum_of_squares", "x", x, DType::kF32, kCpu, {x.numel()});
  const double sum = k::sum_of_squares(x.f32(), x.numel());
  double* r = result.f64();
  *r = accumulate ? *r + sum : sum;
}

void CpuBackend::adamw_update(const Tensor& master, const Tensor& compute, const Tensor& grad, const Tensor& m,
                              const Tensor& v, const std::vector<k::AdamWSegment>& segments,
                              const Tensor& global_norm, const k::AdamWArenaHyper& hyper) {
  const int64_t n = master.numel();
  const char* op = "adamw_update";
  for (const auto& [name, t] : {std::pair{"master", &master}, {"grad", &grad}, {"m", &m}, {"v", &v}}) {
    backend_checks::expect(op, name, *t, DType::kF32, kCpu, {n});
  }
  const bool separate = present(compute) && compute.raw() != master.raw();
  if (separate) backend_checks::expect(op, "compute", compute, activation_dtype(), kCpu, {n});
  backend_checks::expect(op, "global_norm", global_norm, DType::kF64, kCpu, {1});
  k::check_adamw_segments(segments.data(), static_cast<int>(segments.size()), n);
  const double norm = *global_norm.f64();
  if (!std::isfinite(norm)) return;
  k::AdamWHyper h;
  h.lr = hyper.lr;
  h.beta1 = hyper.beta1;
  h.beta2 = hyper.beta2;
  h.eps = hyper.eps;
  h.step = hyper.step;
  h.grad_scale = k::clip_scale(norm, hyper.max_norm);
  for (const k::AdamWSegment& s : segments) {
    h.weight_decay = s.decay ? hyper.weight_decay : 0.0f;
    const int64_t count = s.end - s.begin;
    if (count == 0) continue;
    k::adamw_update(master.f32() + s.begin, grad.f32() + s.begin, m.f32() + s.begin, v.f32() + s.begin, count, h);
    if (!separate) continue;
    if (compute.dtype() == DType::kBF16) {
      bf16* c = compute.bf16_data();
      for (int64_t i = s.begin; i < s.end; ++i) c[i] = float_to_bf16(master.f32()[i]);
    } else {
      std::memcpy(compute.f32() + s.begin, master.f32() + s.begin, static_cast<size_t>(count) * sizeof(float));
    }
  }
}

}  // namespace loom
