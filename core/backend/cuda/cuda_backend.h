// CudaBackend: the Backend ops on one GPU and one stream, over kernels/cuda and cuBLASLt, in bf16
// mixed precision (bf16 activations and compute weights; f32 statistics, weight gradients, master
// weights and Adam moments; f32 device scalars for the gradient norm).
//
// Each op checks its tensors (op_checks.h: shapes, dtypes, all on the GPU), then runs its
// kernels/cuda twin on the context's stream; nothing waits for the host except to_host,
// synchronize, and from_host from pinned memory. Where a kernel's convention differs from the
// interface's, the backend adapts it:
//   * vocab_cross_entropy_backward: the kernel writes the gradient over the logits; a separate
//     dlogits is first a copy of the logits;
//   * the token embedding forward is the fused token + position kernel without positions, and
//     the vocabulary phase 3 is split into its own losses and gradient kernels (no extra work).
// Every other kernel already has the interface's convention (activation gradients overwritten;
// parameter gradients and layernorm_backward's dresidual accumulated).
//
// The backend owns the scratch the kernels ask for (LayerNorm, bias and attention backward
// partials, the embedding backward's sort, the gradient norm's partials, the device copy of the
// AdamW segment table) and the cuBLASLt workspace (in kernels/cuda/matmul.h's Matmul). Scratch
// grows to the largest size asked for and is then reused: after a step has run once, no op
// allocates. All device memory comes from the context's caching allocator, so every tensor the
// backend made must be gone before the context is.
//
// fp32 is refused: the GPU trains in bf16 (the CPU backend runs fp32). Not thread-safe: one
// backend per stream.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/op_checks.h"
#include "core/base/cuda/context.h"
#include "kernels/cuda/matmul.h"

namespace loom {

class CudaBackend final : public Backend {
 public:
  // On `context`'s device and stream; the context outlives the backend and the tensors it made.
  explicit CudaBackend(cuda::Context& context, Precision precision = Precision::kBF16);
  // On a context of its own on GPU `device`.
  explicit CudaBackend(int device, Precision precision = Precision::kBF16);
  ~CudaBackend() override;

  cuda::Context& context() { return context_; }

  Device device() const override { return Device::kCUDA; }
  std::string name() const override { return "cuda bf16"; }
  std::string unsupported(Op op, const OpShape& shape) const override;

  Tensor zeros(const Shape& shape, DType dtype) override;
  void zero(const Tensor& t) override;
  // Both tensors on the GPU (to_host and from_host cross to the host).
  void copy(const Tensor& dst, const Tensor& src) override;
  // Returns when `host` holds the values (synchronises the stream).
  void to_host(void* host, const Tensor& src) override;
  // Returns when `host` may be reused: pageable memory is staged before the copy returns; from
  // pinned memory the stream is synchronised.
  void from_host(const Tensor& dst, const void* host) override;
  void synchronize() override;

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

  DType accumulator_dtype() const override { return DType::kF32; }
  void sum_of_squares(const Tensor& result, const Tensor& x, bool accumulate) override;
  void adamw_update(const Tensor& master, const Tensor& compute, const Tensor& grad, const Tensor& m,
                    const Tensor& v, const std::vector<kernels::cpu::AdamWSegment>& segments,
                    const Tensor& global_norm, const kernels::cpu::AdamWArenaHyper& hyper) override;

 private:
  backend_checks::OpContract contract() const { return {Device::kCUDA, DType::kBF16, DType::kF32}; }
  // Device scratch of at least the size asked for, kept and grown (never shrunk) between calls.
  float* float_scratch(size_t floats);
  void* embedding_scratch(size_t bytes);
  // The segment table in device memory, uploaded when it differs from the last one.
  const kernels::cpu::AdamWSegment* device_segments(const std::vector<kernels::cpu::AdamWSegment>& segments);

  std::unique_ptr<cuda::Context> owned_context_;  // declared first: destroyed after all the memory below
  cuda::Context& context_;
  std::unique_ptr<kernels::cuda::Matmul> matmul_;
  Tensor float_scratch_;      // f32: LayerNorm, bias and attention backward partials
  Tensor embedding_scratch_;  // bytes (as i32): the embedding backward's sort
  Tensor norm_scratch_;       // f32: sum_of_squares' per-block partials
  Tensor segments_;           // the AdamW segment table's bytes (as i32)
  std::vector<kernels::cpu::AdamWSegment> uploaded_segments_;
};

// What CudaBackend::unsupported answers, without a GPU: launch/ asks it before choosing a device.
// OpShape fields: kAttention reads B, T, NH and C (the attention's channels, NH heads of C / NH);
// kAttentionDecode reads B, NH and C (T, the cache's positions, is any); the number of key/value
// heads, any divisor of NH, changes none of the attention's limits;
// kVocabCrossEntropy reads N and OC (this rank's vocabulary rows); the others N, C and OC.
std::string cuda_backend_unsupported(Op op, const OpShape& shape);

// A CudaBackend in bf16 on a context of its own on GPU `device`.
std::unique_ptr<Backend> make_cuda_backend(int device);

}  // namespace loom
