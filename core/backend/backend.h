// Backend: the ops a model stage needs, on one device and one stream, on Tensor views.
//
// The model (embedding, blocks, head, optimizer) is written once against this interface; a
// backend runs it on a device in a precision:
//   CpuBackend   kernels/cpu (OpenBLAS, OpenMP), fp32, or bf16 mixed precision emulated
//   CudaBackend  kernels/cuda and cuBLASLt, bf16 mixed precision
// The op vocabulary is the fused one the GPU uses (residual + LayerNorm, matmul with a bias or
// bias + GELU epilogue, the phases of the vocabulary-parallel cross-entropy, AdamW over arena
// segments); the CPU implements each by its existing kernel.
//
// Precision (precision.h) fixes the dtypes: activations and the compute copy of the weights are
// activation_dtype() (f32 or bf16); statistics (LayerNorm mean and rstd, the attention's
// log-sum-exp, softmax row statistics, losses), weight gradients, master weights and Adam moments
// are always f32. Each op computes in f32 and rounds its outputs to their dtype once: the
// rounding points of the GPU, which the CPU's bf16 mode reproduces.
//
// THE BACKWARD CONVENTION (every op, every backend):
//   * activation gradients are OVERWRITTEN  (dinp =, dqkv =, dlogits =, d(gelu input) =);
//   * parameter gradients ACCUMULATE         (dweight +=, dbias +=, dwte +=, dwpe +=), so that
//     micro-batches of a step sum into the same arena without a copy;
//   * the residual stream's gradient ACCUMULATES (layernorm_backward's dresidual +=): the
//     residual connection adds the branch's gradient to the gradient flowing past it.
// Forward outputs are overwritten, except position_embedding_forward, which adds the positions
// to the token embeddings already in `out`.
//
// Shapes are written next to each argument: N token rows, C channels, OC output channels, Vl
// vocabulary rows of this rank, B x T = N, NH (query) heads, NKV key/value heads, HS head size.
// Tensors are contiguous and row-major; an "absent" tensor is a default-constructed Tensor().
// Every op checks its shapes and dtypes (loom::Error naming the op and the tensor) before it runs.
//
// Document masking (packing): several documents may share one sequence of T tokens. doc_starts
// (B * T) i32 on the device gives, for the token at position t of a sequence, the position in that
// sequence where its document begins: 0 <= doc_starts[t] <= t, non-decreasing along a sequence, and
// either doc_starts[t - 1] or t. Key j is then visible to query i iff doc_starts[i] <= j <= i, and a
// token's position (the learned position embedding's row, RoPE's angle) is t - doc_starts[t]: each
// document computes as if it were a sequence of its own. An absent doc_starts is one document per
// sequence (doc_starts all 0), on the unmasked path. The ops that take it: attention forward and
// backward, rope forward and backward (over the whole (B, T) sequence) and the position embedding
// (over a rank's slice of rows, to which doc_starts is sliced as `out` is: see there). The ops
// check its shape and dtype, not its values: GPT::forward checks those on the host
// (check_doc_starts) before they reach the device.
//
// Not thread-safe: one backend per stream.
#pragma once

#include <cstdint>
#include <string>

#include "core/backend/precision.h"
#include "core/tensor.h"
#include "kernels/cpu/adamw.h"

namespace loom {

// What a matmul does after the product (the GPU's cuBLASLt epilogues).
enum class Epilogue : uint8_t {
  kNone = 0,      // out = inp @ weight^T
  kBias = 1,      // out = inp @ weight^T + bias
  kBiasGelu = 2,  // pre = inp @ weight^T + bias (kept for the backward); out = gelu(pre)
};

// The ops, for supports() and for messages.
enum class Op : uint8_t {
  kTokenEmbedding,
  kPositionEmbedding,
  kLayerNorm,
  kResidualLayerNorm,
  kResidualAdd,
  kRMSNorm,
  kMatmul,
  kGelu,
  kSwiGLU,
  kRoPE,
  kAttention,
  kAttentionDecode,
  kVocabCrossEntropy,
  kAdamW,
  kCount
};
const char* op_name(Op op);

// The sizes supports() is asked about; fields an op does not have stay 0.
struct OpShape {
  int64_t N = 0, C = 0, OC = 0;
  int64_t B = 0, T = 0, NH = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  virtual Device device() const = 0;
  Precision precision() const { return precision_; }
  // f32 or bf16: activations and the compute copy of the weights.
  DType activation_dtype() const { return activation_dtype_of(precision_); }
  // "cpu fp32", "cpu bf16 (emulated)", "cuda bf16"
  virtual std::string name() const = 0;

  // Empty when the backend runs `op` at `shape`, else one sentence saying why not (the CUDA
  // attention takes head sizes 32, 64 and 128 only). Asked before a run starts, so that a model
  // the device cannot run is refused then, not in its first step.
  virtual std::string unsupported(Op op, const OpShape& shape) const;
  bool supports(Op op, const OpShape& shape) const { return unsupported(op, shape).empty(); }

  // --- memory on this backend's device ------------------------------------------------------
  // A new tensor whose bytes live on the device (zero-filled).
  virtual Tensor zeros(const Shape& shape, DType dtype) = 0;
  virtual void zero(const Tensor& t) = 0;
  // dst = src, same shape; f32 <-> bf16 converts (rounding to nearest even).
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;
  // Host memory <-> a device tensor of the same number of elements and dtype.
  virtual void to_host(void* host, const Tensor& src) = 0;
  virtual void from_host(const Tensor& dst, const void* host) = 0;
  // Returns when every op enqueued so far has finished (a no-op on the CPU).
  virtual void synchronize() = 0;

  // --- embeddings ---------------------------------------------------------------------------
  // out (N, C) = wte[tokens - vocab_start] for the tokens of this rank's slice
  // [vocab_start, vocab_start + Vl) of wte (Vl, C), 0 for the others (a tensor-parallel region
  // sums the slices). tokens (N) i32 on the device.
  virtual void token_embedding_forward(const Tensor& out, const Tensor& tokens, const Tensor& wte,
                                       int vocab_start) = 0;
  // out (N, C) += wpe[(first_row + n) % T - doc_starts[n]]; wpe (max_T, C). doc_starts (N) i32 or
  // absent covers the same rows as out: under sequence parallelism, rows [first_row, first_row + N)
  // of the whole (B * T) array (its values stay positions within the sequence, not row numbers).
  virtual void position_embedding_forward(const Tensor& out, const Tensor& wpe, int T, int first_row,
                                          const Tensor& doc_starts) = 0;
  // dwte (Vl, C) f32 += the rows of dout (N, C) whose token lies in this rank's slice.
  virtual void token_embedding_backward(const Tensor& dwte, const Tensor& dout, const Tensor& tokens,
                                        int vocab_start) = 0;
  // dwpe (max_T, C) f32 [(first_row + n) % T - doc_starts[n]] += dout (N, C) [n]; doc_starts (N)
  // i32 or absent, the rows of dout as in the forward.
  virtual void position_embedding_backward(const Tensor& dwpe, const Tensor& dout, int T, int first_row,
                                           const Tensor& doc_starts) = 0;

  // --- LayerNorm and the residual stream ----------------------------------------------------
  // out (N, C) = LayerNorm(inp) * weight + bias (C); mean, rstd (N) f32, absent in inference.
  virtual void layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& inp,
                                 const Tensor& weight, const Tensor& bias) = 0;
  // residual_out (N, C) = residual_in + delta + delta_bias (C), summed in that order (each of the
  // three may be absent), then out = LayerNorm(residual_out) as layernorm_forward.
  virtual void residual_layernorm_forward(const Tensor& residual_out, const Tensor& out, const Tensor& mean,
                                          const Tensor& rstd, const Tensor& residual_in, const Tensor& delta,
                                          const Tensor& delta_bias, const Tensor& weight, const Tensor& bias) = 0;
  // out (N, C) = a + b + bias (C), in that order (bias may be absent): the residual add after
  // a stage's last block, where no LayerNorm follows.
  virtual void residual_add(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& bias) = 0;
  // dresidual (N, C) += d(LayerNorm)/d(inp) of dout (N, C); dweight, dbias (C) f32 +=.
  virtual void layernorm_backward(const Tensor& dresidual, const Tensor& dweight, const Tensor& dbias,
                                  const Tensor& dout, const Tensor& inp, const Tensor& weight, const Tensor& mean,
                                  const Tensor& rstd) = 0;

  // --- RMSNorm (Llama's: y = x / sqrt(mean(x^2) + eps) * weight, no bias, f32 math) ---------
  // out (N, C) = RMSNorm(inp) * weight (C); rstd (N) f32, absent in inference. eps > 0.
  virtual void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& inp, const Tensor& weight,
                               float eps) = 0;
  // residual_out (N, C) = residual_in + delta + delta_bias (C), summed in that order (each of the
  // three may be absent), then out = RMSNorm(residual_out) as rmsnorm_forward.
  virtual void residual_rmsnorm_forward(const Tensor& residual_out, const Tensor& out, const Tensor& rstd,
                                        const Tensor& residual_in, const Tensor& delta, const Tensor& delta_bias,
                                        const Tensor& weight, float eps) = 0;
  // dresidual (N, C) += d(RMSNorm)/d(inp) of dout (N, C); dweight (C) f32 +=.
  virtual void rmsnorm_backward(const Tensor& dresidual, const Tensor& dweight, const Tensor& dout,
                                const Tensor& inp, const Tensor& weight, const Tensor& rstd) = 0;

  // --- matmul (torch.nn.Linear's layout: weight (OC, C)) ------------------------------------
  // out (N, OC) = inp (N, C) @ weight^T, then the epilogue with bias (OC); pre (N, OC) for
  // kBiasGelu (else absent).
  virtual void matmul_forward(const Tensor& out, const Tensor& pre, const Tensor& inp, const Tensor& weight,
                              const Tensor& bias, Epilogue epilogue) = 0;
  // dinp (N, C) = dout (N, OC) @ weight (absent: not wanted);
  // dweight (OC, C) f32 += dout^T @ inp (absent: not wanted).
  virtual void matmul_backward(const Tensor& dinp, const Tensor& dweight, const Tensor& dout, const Tensor& inp,
                               const Tensor& weight) = 0;
  // dbias (OC) f32 += the column sums of dout (N, OC).
  virtual void bias_backward(const Tensor& dbias, const Tensor& dout) = 0;
  // dinp (n) = gelu'(pre) * dout; pre is kBiasGelu's `pre`. dinp may alias dout.
  virtual void gelu_backward(const Tensor& dinp, const Tensor& pre, const Tensor& dout) = 0;
  // Llama's MLP activation on the fused gate and up matmul's output gu (N, 2F), whose row holds
  // [gate (F) | up (F)]: out (N, F) = silu(gate) * up, silu(g) = g * sigmoid(g). out must not
  // overlap gu.
  virtual void swiglu_forward(const Tensor& out, const Tensor& gu) = 0;
  // dgu (N, 2F) = [dout * up * silu'(gate) | dout * silu(gate)], from gu (N, 2F) and dout (N, F)
  // (overwrites). dgu must not overlap gu or dout.
  virtual void swiglu_backward(const Tensor& dgu, const Tensor& gu, const Tensor& dout) = 0;

  // --- rotary position embeddings (Llama's "rotate half"), in place on a fused QKV -----------
  // qkv (N = B * T, (NH + 2 * NKV) * HS) holds q (NH heads), k and v (NKV heads each, NKV divides
  // NH: grouped-query attention) of head size HS per row; inv_freq (HS / 2) f32, from
  // kernels/cpu/rope.h's rope_inverse_frequencies. Rotates q and k of row n by the angles
  // float(p) * inv_freq of its position p = first_position + n % T, in f32 (kernels/cpu/rope.h
  // has the formulas); v is left as it is. Decoding rotates a step's rows with T = 1 and
  // first_position = the position decoded. doc_starts (N) i32 or absent: packed documents, row n
  // at position first_position + n % T - doc_starts[n].
  virtual void rope_forward(const Tensor& qkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                            int first_position, const Tensor& doc_starts) = 0;
  // The gradient of qkv before rope_forward (positions 0 .. T - 1, less doc_starts as there) from
  // the gradient after it: dqkv (N, (NH + 2 * NKV) * HS) is overwritten in place by the transposed
  // rotation of its dq and dk; dv is left as it is.
  virtual void rope_backward(const Tensor& dqkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                             const Tensor& doc_starts) = 0;

  // --- causal self-attention over a fused QKV, grouped-query heads ---------------------------
  // qkv (N, (NH + 2 * NKV) * HS) holds per row [q: NH * HS | k: NKV * HS | v: NKV * HS], HS =
  // Cl / NH; query head h reads key/value head h / (NH / NKV) (Hugging Face's repeat_kv order),
  // NKV dividing NH: NKV == NH is multi-head attention, NKV == 1 multi-query. K and V are read in
  // place, never repeated. out (N, Cl = NH * HS); lse (B, NH, T) f32, the softmax's log-sum-exp
  // kept for the backward. doc_starts (N) i32 or absent: query i of a sequence sees keys
  // doc_starts[i] .. i only (absent: 0 .. i).
  virtual void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& qkv, int B, int T, int NH,
                                 int NKV, const Tensor& doc_starts) = 0;
  // dqkv (N, (NH + 2 * NKV) * HS) = the gradient of qkv given dout (N, Cl): a kv head's k and v
  // gradients sum over its NH / NKV query heads, in a fixed order (bitwise reproducible).
  // doc_starts as the forward's: the gradient of the masked attention.
  virtual void attention_backward(const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                  const Tensor& lse, int B, int T, int NH, int NKV, const Tensor& doc_starts) = 0;

  // --- causal self-attention of one new position over a KV cache (decoding; no backward) -----
  // qkv (B, (NH + 2 * NKV) * HS) holds q, k and v of position `pos` of each of B sequences, laid
  // out as attention_forward's (HS = Cl / NH); its k and v are written into row pos of k_cache and
  // v_cache (B, max_T, NKV * HS), then out (B, Cl) = the attention of q over cache rows 0 .. pos,
  // which hold the keys and values of the sequence's positions so far: what attention_forward
  // gives position pos. out is overwritten; the caches' other rows are left as they are, and rows
  // after pos are never read.
  virtual void attention_decode(const Tensor& out, const Tensor& k_cache, const Tensor& v_cache, const Tensor& qkv,
                                int NH, int NKV, int pos) = 0;

  // --- vocabulary-parallel cross-entropy, in phases between which the tp group reduces ------
  // logits (N, Vl) of this rank's slice [vocab_start, vocab_start + Vl); targets (N) i32, -1 not
  // counted. All statistics (N) f32.
  //   1. row_max = max over this rank's columns                      (then all-reduce max)
  //   2. sum_exp = sum exp(logit - row_max); target_logit = the target's logit where this rank
  //      holds it, else 0                                            (then all-reduce sum)
  //   3. losses = log(sum_exp) + row_max - target_logit; 0 where not counted
  //   4. dlogits (N, Vl) = dloss * (softmax - onehot) on counted rows, 0 on the others; dlogits
  //      may alias logits (the logits become their gradient in place).
  virtual void vocab_row_max(const Tensor& row_max, const Tensor& logits) = 0;
  virtual void vocab_sum_exp(const Tensor& sum_exp, const Tensor& target_logit, const Tensor& logits,
                             const Tensor& targets, const Tensor& row_max, int vocab_start) = 0;
  virtual void vocab_losses(const Tensor& losses, const Tensor& row_max, const Tensor& sum_exp,
                            const Tensor& target_logit, const Tensor& targets) = 0;
  virtual void vocab_cross_entropy_backward(const Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                                            const Tensor& row_max, const Tensor& sum_exp, int vocab_start,
                                            float dloss) = 0;

  // --- optimizer ------------------------------------------------------------------------------
  // The dtype of device scalars that accumulate (sum_of_squares' result): f64 on the CPU (as
  // its optimizer always summed), f32 on the GPU.
  virtual DType accumulator_dtype() const = 0;
  // result (1) accumulator_dtype() = (accumulate ? result : 0) + the sum of x (n) f32 squared. A
  // device scalar: the host reads it once per step.
  virtual void sum_of_squares(const Tensor& result, const Tensor& x, bool accumulate) = 0;
  // AdamW (torch's formulas) over the arena segments of master (n) f32, with grad, m, v (n) f32;
  // compute (n) in activation_dtype() receives the updated weights when it is not master itself
  // (bf16 precision; absent otherwise). The gradient is scaled for clipping by the global norm,
  // a device scalar (1) of accumulator_dtype() holding the norm itself (not its square); a norm
  // that is not finite skips the update.
  virtual void adamw_update(const Tensor& master, const Tensor& compute, const Tensor& grad, const Tensor& m,
                            const Tensor& v, const std::vector<kernels::cpu::AdamWSegment>& segments,
                            const Tensor& global_norm, const kernels::cpu::AdamWArenaHyper& hyper) = 0;

 protected:
  explicit Backend(Precision precision) : precision_(precision) {}

 private:
  Precision precision_;
};

}  // namespace loom
