// CpuBackend: the Backend ops on kernels/cpu, in fp32 or in emulated bf16 mixed precision.
//
// fp32: each op is its kernels/cpu twin on the tensors' own floats (the results of the model
// before the Backend existed, bit for bit). Where the interface overwrites an activation
// gradient and the CPU kernel accumulates, the gradient is zeroed first.
//
// bf16 (the GPU's rounding points, emulated): bf16 tensors are widened to f32 before the
// kernel runs and its bf16 outputs are rounded to nearest even once, after it. So an op computes
// in f32 on bf16 inputs as the GPU's kernels do, and a fused op rounds where the GPU's does (the
// residual stream is rounded before the LayerNorm that reads it). Debian's OpenBLAS has no bf16
// GEMM (cblas_sbgemm): matmuls widen their bf16 operands to f32 around sgemm. Emulation costs
// copies; its speed is not the point (docs/benchmarks.md reports it).
#pragma once

#include "core/backend/backend.h"
#include "core/backend/op_checks.h"

namespace loom {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(Precision precision = Precision::kF32) : Backend(precision) {}

  Device device() const override { return Device::kCPU; }
  std::string name() const override;

  Tensor zeros(const Shape& shape, DType dtype) override;
  void zero(const Tensor& t) override;
  void copy(const Tensor& dst, const Tensor& src) override;
  void to_host(void* host, const Tensor& src) override;
  void from_host(const Tensor& dst, const void* host) override;
  void synchronize() override {}

  void token_embedding_forward(const Tensor& out, const Tensor& tokens, const Tensor& wte, int vocab_start) override;
  void position_embedding_forward(const Tensor& out, const Tensor& wpe, int T, int first_row,
                                  const Tensor& doc_starts) override;
  void token_embedding_backward(const Tensor& dwte, const Tensor& dout, const Tensor& tokens,
                                int vocab_start) override;
  void position_embedding_backward(const Tensor& dwpe, const Tensor& dout, int T, int first_row,
                                   const Tensor& doc_starts) override;

  void layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& inp,
                         const Tensor& weight, const Tensor& bias) override;
  void residual_layernorm_forward(const Tensor& residual_out, const Tensor& out, const Tensor& mean,
                                  const Tensor& rstd, const Tensor& residual_in, const Tensor& delta,
                                  const Tensor& delta_bias, const Tensor& weight, const Tensor& bias) override;
  void residual_add(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& bias) override;
  void layernorm_backward(const Tensor& dresidual, const Tensor& dweight, const Tensor& dbias, const Tensor& dout,
                          const Tensor& inp, const Tensor& weight, const Tensor& mean, const Tensor& rstd) override;
  void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& inp, const Tensor& weight,
                       float eps) override;
  void residual_rmsnorm_forward(const Tensor& residual_out, const Tensor& out, const Tensor& rstd,
                                const Tensor& residual_in, const Tensor& delta, const Tensor& delta_bias,
                                const Tensor& weight, float eps) override;
  void rmsnorm_backward(const Tensor& dresidual, const Tensor& dweight, const Tensor& dout, const Tensor& inp,
                        const Tensor& weight, const Tensor& rstd) override;

  void matmul_forward(const Tensor& out, const Tensor& pre, const Tensor& inp, const Tensor& weight,
                      const Tensor& bias, Epilogue epilogue) override;
  void matmul_backward(const Tensor& dinp, const Tensor& dweight, const Tensor& dout, const Tensor& inp,
                       const Tensor& weight) override;
  void bias_backward(const Tensor& dbias, const Tensor& dout) override;
  void gelu_backward(const Tensor& dinp, const Tensor& pre, const Tensor& dout) override;
  void swiglu_forward(const Tensor& out, const Tensor& gu) override;
  void swiglu_backward(const Tensor& dgu, const Tensor& gu, const Tensor& dout) override;
  void rope_forward(const Tensor& qkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                    int first_position, const Tensor& doc_starts) override;
  void rope_backward(const Tensor& dqkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                     const Tensor& doc_starts) override;

  void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& qkv, int B, int T, int NH,
                         int NKV, const Tensor& doc_starts) override;
  void attention_backward(const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                          const Tensor& lse, int B, int T, int NH, int NKV, const Tensor& doc_starts) override;
  void attention_decode(const Tensor& out, const Tensor& k_cache, const Tensor& v_cache, const Tensor& qkv, int NH,
                        int NKV, int pos) override;

  void vocab_row_max(const Tensor& row_max, const Tensor& logits) override;
  void vocab_sum_exp(const Tensor& sum_exp, const Tensor& target_logit, const Tensor& logits, const Tensor& targets,
                     const Tensor& row_max, int vocab_start) override;
  void vocab_losses(const Tensor& losses, const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                    const Tensor& targets) override;
  void vocab_cross_entropy_backward(const Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                                    const Tensor& row_max, const Tensor& sum_exp, int vocab_start,
                                    float dloss) override;

  DType accumulator_dtype() const override { return DType::kF64; }
  void sum_of_squares(const Tensor& result, const Tensor& x, bool accumulate) override;
  void adamw_update(const Tensor& master, const Tensor& compute, const Tensor& grad, const Tensor& m,
                    const Tensor& v, const std::vector<kernels::cpu::AdamWSegment>& segments,
                    const Tensor& global_norm, const kernels::cpu::AdamWArenaHyper& hyper) override;

 private:
  backend_checks::OpContract contract() const { return {Device::kCPU, activation_dtype(), DType::kF64}; }
};

}  // namespace loom
