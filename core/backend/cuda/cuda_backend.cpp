#include "core/backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "core/backend/op_checks.h"
#include "core/base/check.h"
#include "core/base/cuda/check.h"
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_decode.h"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/swiglu.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope.h"

namespace loom {

namespace k = kernels::cuda;
using backend_checks::cols;
using backend_checks::present;
using backend_checks::rows;

namespace {

constexpr Device kGpu = Device::kCUDA;
constexpr DType kBf16 = DType::kBF16;
constexpr DType kF32 = DType::kF32;
constexpr DType kI32 = DType::kI32;

Precision bf16_only(Precision precision) {
  if (precision != Precision::kBF16) {
    fail_user("the CUDA backend trains in bf16 mixed precision only (bf16 compute, fp32 master weights), not",
              std::string(precision_name(precision)) + ";", "use bf16 on the GPU, or the CPU backend for fp32");
  }
  return precision;
}

// The kernels index rows and columns with 32-bit ints.
int dim(int64_t n) {
  LOOM_CHECK(n >= 0 && n <= INT32_MAX, "a dimension of", n, "is more than the CUDA kernels index (2^31 - 1)");
  return static_cast<int>(n);
}

bf16* bf16_or_null(const Tensor& t) { return present(t) ? t.bf16_data() : nullptr; }
float* f32_or_null(const Tensor& t) { return present(t) ? t.f32() : nullptr; }

std::string attention_unsupported(const OpShape& s) {
  if (s.B <= 0 || s.T <= 0 || s.NH <= 0 || s.C <= 0) {
    return str_cat("the CUDA attention needs positive sizes, got B", s.B, "T", s.T, "NH", s.NH, "C", s.C);
  }
  if (s.C % s.NH != 0) return str_cat("the CUDA attention needs NH =", s.NH, "to divide C =", s.C);
  const int64_t head_size = s.C / s.NH;
  if (head_size != 32 && head_size != 64 && head_size != 128) {
    return str_cat("the CUDA attention takes head sizes (C / NH) of 32, 64 or 128 only (its tiles are compiled "
                   "for those), got",
                   head_size);
  }
  if (s.B > 65535 || s.NH > 65535) {
    return str_cat("the CUDA attention launches a (tiles, NH, B) grid, so NH =", s.NH, "and B =", s.B,
                   "must be at most 65535");
  }
  return {};
}

std::string attention_decode_unsupported(const OpShape& s) {
  if (s.B <= 0 || s.NH <= 0 || s.C <= 0) {
    return str_cat("the CUDA decoding attention needs positive sizes, got B", s.B, "NH", s.NH, "C", s.C);
  }
  if (s.C % s.NH != 0) return str_cat("the CUDA decoding attention needs NH =", s.NH, "to divide C =", s.C);
  if (s.C / s.NH > k::kAttentionDecodeMaxHeadSize) {
    return str_cat("the CUDA decoding attention takes head sizes (C / NH) of at most", k::kAttentionDecodeMaxHeadSize,
                   "(8 channels in each of a warp's 32 lanes), got", s.C / s.NH);
  }
  if (s.B > 65535) {
    return str_cat("the CUDA decoding attention launches an (NH, B) grid, so B =", s.B, "must be at most 65535");
  }
  return {};
}

// An optional i32 input (doc_starts): null when absent, which the kernels take as "no documents".
const int32_t* i32_or_null(const Tensor& t) { return present(t) ? t.i32() : nullptr; }

}  // namespace

std::string cuda_backend_unsupported(Op op, const OpShape& shape) {
  for (const auto& [name, value] : {std::pair{"N", shape.N}, {"C", shape.C}, {"OC", shape.OC}, {"B", shape.B},
                                    {"T", shape.T}, {"NH", shape.NH}}) {
    if (value > INT32_MAX) {
      return str_cat("the CUDA kernels index with 32-bit ints, but", name, "=", value, "is more than 2^31 - 1");
    }
  }
  switch (op) {
    case Op::kAttention: return attention_unsupported(shape);
    case Op::kAttentionDecode: return attention_decode_unsupported(shape);
    case Op::kRoPE:
      // A row's cos and sin live in shared memory.
      if (shape.NH > 0 && shape.C / shape.NH > k::kRopeMaxHeadSize) {
        return str_cat("the CUDA rotary position embeddings take head sizes (C / NH) of at most",
                       k::kRopeMaxHeadSize, "(a row's cos and sin in shared memory), got", shape.C / shape.NH);
      }
      return {};
    case Op::kTokenEmbedding:
      // The embedding backward's grid has a column tile of 256 per y-block (at most 65535).
      if (shape.C > int64_t{65535} * 256) {
        return str_cat("the CUDA embedding backward takes at most", int64_t{65535} * 256, "channels, got", shape.C);
      }
      return {};
    case Op::kVocabCrossEntropy:
      // The row kernels step through a row in int columns, kept clear of overflow.
      if (shape.OC > (int64_t{1} << 30)) {
        return str_cat("the CUDA cross-entropy takes at most 2^30 vocabulary rows per rank, got", shape.OC);
      }
      return {};
    default: return {};
  }
}

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

CudaBackend::CudaBackend(cuda::Context& context, Precision precision)
    : Backend(bf16_only(precision)), context_(context) {
  matmul_ = std::make_unique<k::Matmul>(context_.allocator());
}

CudaBackend::CudaBackend(int device, Precision precision)
    : Backend(bf16_only(precision)), owned_context_(std::make_unique<cuda::Context>(device)),
      context_(*owned_context_) {
  matmul_ = std::make_unique<k::Matmul>(context_.allocator());
}

CudaBackend::~CudaBackend() {
  // Queued kernels may still use the scratch; destructors do not throw, so the status is ignored.
  cudaStreamSynchronize(context_.stream());
  matmul_.reset();
  float_scratch_ = Tensor();
  embedding_scratch_ = Tensor();
  norm_scratch_ = Tensor();
  segments_ = Tensor();
}

std::string CudaBackend::unsupported(Op op, const OpShape& shape) const { return cuda_backend_unsupported(op, shape); }

// --- scratch ---------------------------------------------------------------------------------

float* CudaBackend::float_scratch(size_t floats) {
  if (static_cast<size_t>(float_scratch_.numel()) < floats) {
    // The old block goes back to the allocator; kernels queued on this stream that still read it
    // run before any later user of the block (one stream: see caching_allocator.h).
    float_scratch_ = Tensor::empty({static_cast<int64_t>(floats)}, kF32, context_.allocator());
  }
  return float_scratch_.f32();
}

void* CudaBackend::embedding_scratch(size_t bytes) {
  const auto words = static_cast<int64_t>((bytes + 3) / 4);
  if (embedding_scratch_.numel() < words) embedding_scratch_ = Tensor::empty({words}, kI32, context_.allocator());
  return embedding_scratch_.raw();  // an allocator block: 256-byte aligned, as the sort wants
}

const k::AdamWSegment* CudaBackend::device_segments(const std::vector<k::AdamWSegment>& segments) {
  const auto same = [](const k::AdamWSegment& a, const k::AdamWSegment& b) {
    return a.begin == b.begin && a.end == b.end && a.decay == b.decay;
  };
  const bool unchanged = present(segments_) && segments.size() == uploaded_segments_.size() &&
                         std::equal(segments.begin(), segments.end(), uploaded_segments_.begin(), same);
  if (unchanged) return static_cast<const k::AdamWSegment*>(segments_.raw());
  static_assert(sizeof(k::AdamWSegment) % 4 == 0, "the table is held as i32 words");
  const size_t bytes = segments.size() * sizeof(k::AdamWSegment);
  const auto words = static_cast<int64_t>(bytes / 4);
  if (segments_.numel() < words || !present(segments_)) {
    segments_ = Tensor::empty({std::max<int64_t>(words, 1)}, kI32, context_.allocator());
  }
  uploaded_segments_ = segments;
  // From pageable memory the copy returns once uploaded_segments_ is staged; the kernels that
  // read the old table are queued before it on the same stream.
  if (bytes > 0) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(segments_.raw(), uploaded_segments_.data(), bytes, cudaMemcpyHostToDevice,
                                    context_.stream()));
  }
  return static_cast<const k::AdamWSegment*>(segments_.raw());
}

// --- memory ----------------------------------------------------------------------------------

Tensor CudaBackend::zeros(const Shape& shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype, context_.allocator());
  zero(t);
  return t;
}

void CudaBackend::zero(const Tensor& t) {
  LOOM_CHECK(t.device() == kGpu, "CudaBackend::zero of a", device_name(t.device()), "tensor");
  if (t.nbytes() > 0) LOOM_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), context_.stream()));
}

void CudaBackend::copy(const Tensor& dst, const Tensor& src) {
  LOOM_CHECK(dst.numel() == src.numel() && dst.device() == kGpu && src.device() == kGpu, "CudaBackend::copy of",
             src.shape().str(), "on", device_name(src.device()), "into", dst.shape().str(), "on",
             device_name(dst.device()), "(both on the GPU, the same number of elements)");
  const cudaStream_t s = context_.stream();
  const int64_t n = src.numel();
  if (n == 0) return;
  if (dst.dtype() == src.dtype()) {
    if (dst.raw() != src.raw()) {
      LOOM_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, s));
    }
  } else if (dst.dtype() == kBf16 && src.dtype() == kF32) {
    k::f32_to_bf16(dst.bf16_data(), src.f32(), n, s);
  } else if (dst.dtype() == kF32 && src.dtype() == kBf16) {
    k::bf16_to_f32(dst.f32(), src.bf16_data(), n, s);
  } else {
    LOOM_CHECK(false, "CudaBackend::copy from", dtype_name(src.dtype()), "to", dtype_name(dst.dtype()));
  }
}

void CudaBackend::to_host(void* host, const Tensor& src) {
  LOOM_CHECK(src.device() == kGpu, "CudaBackend::to_host of a", device_name(src.device()), "tensor");
  if (src.nbytes() == 0) return;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(host, src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, context_.stream()));
  context_.synchronize();
}

void CudaBackend::from_host(const Tensor& dst, const void* host) {
  LOOM_CHECK(dst.device() == kGpu, "CudaBackend::from_host into a", device_name(dst.device()), "tensor");
  if (dst.nbytes() == 0) return;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), host, dst.nbytes(), cudaMemcpyHostToDevice, context_.stream()));
  cudaPointerAttributes attributes{};
  LOOM_CUDA_CHECK(cudaPointerGetAttributes(&attributes, host));
  if (attributes.type == cudaMemoryTypeHost) context_.synchronize();  // pinned: copied asynchronously
}

void CudaBackend::synchronize() { context_.synchronize(); }

// --- embeddings ------------------------------------------------------------------------------

void CudaBackend::token_embedding_forward(const Tensor& out, const Tensor& tokens, const Tensor& wte,
                                          int vocab_start) {
  backend_checks::check_token_embedding_forward(contract(), out, tokens, wte);
  const int64_t N = rows(out), C = cols(out), Vl = rows(wte);
  if (N == 0) return;
  // The fused token + position kernel without positions (T = 1 is then not used).
  k::embedding_forward(out.bf16_data(), tokens.i32(), wte.bf16_data(), nullptr, dim(N), 1, dim(C), vocab_start,
                       dim(Vl), 0, context_.stream());
}

void CudaBackend::position_embedding_forward(const Tensor& out, const Tensor& wpe, int T, int first_row,
                                             const Tensor& doc_starts) {
  backend_checks::check_position_embedding_forward(contract(), out, wpe, T, doc_starts);
  const int64_t N = rows(out), C = cols(out);
  if (N == 0) return;
  k::position_embedding_forward(out.bf16_data(), wpe.bf16_data(), dim(N), T, dim(C), first_row, context_.stream(),
                                i32_or_null(doc_starts));
}

void CudaBackend::token_embedding_backward(const Tensor& dwte, const Tensor& dout, const Tensor& tokens,
                                           int vocab_start) {
  backend_checks::check_token_embedding_backward(contract(), dwte, dout, tokens);
  const int64_t N = rows(dout), C = cols(dout), Vl = rows(dwte);
  if (N == 0) return;
  void* scratch = embedding_scratch(k::embedding_backward_scratch_bytes(dim(N)));
  k::embedding_backward(dwte.f32(), nullptr, dout.bf16_data(), tokens.i32(), dim(N), 1, dim(C), vocab_start,
                        dim(Vl), 0, scratch, context_.stream());
}

void CudaBackend::position_embedding_backward(const Tensor& dwpe, const Tensor& dout, int T, int first_row,
                                              const Tensor& doc_starts) {
  backend_checks::check_position_embedding_backward(contract(), dwpe, dout, T, doc_starts);
  const int64_t N = rows(dout), C = cols(dout);
  if (N == 0) return;
  k::position_embedding_backward(dwpe.f32(), dout.bf16_data(), dim(N), T, dim(C), first_row, context_.stream(),
                                 i32_or_null(doc_starts));
}

// --- LayerNorm and the residual stream -------------------------------------------------------

void CudaBackend::layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& inp,
                                    const Tensor& weight, const Tensor& bias) {
  backend_checks::check_layernorm_forward(contract(), out, mean, rstd, inp, weight, bias);
  const int64_t N = rows(inp), C = cols(inp);
  if (N == 0) return;
  k::layernorm_forward(out.bf16_data(), f32_or_null(mean), f32_or_null(rstd), inp.bf16_data(), weight.bf16_data(),
                       bias.bf16_data(), dim(N), dim(C), context_.stream());
}

void CudaBackend::residual_layernorm_forward(const Tensor& residual_out, const Tensor& out, const Tensor& mean,
                                             const Tensor& rstd, const Tensor& residual_in, const Tensor& delta,
                                             const Tensor& delta_bias, const Tensor& weight, const Tensor& bias) {
  backend_checks::check_residual_layernorm_forward(contract(), residual_out, out, mean, rstd, residual_in, delta,
                                                   delta_bias, weight, bias);
  const int64_t N = rows(out), C = cols(out);
  if (N == 0) return;
  if (!present(residual_in) && !present(delta)) {
    // The fused kernel wants a row to start from; the bias alone is the residual add's.
    residual_add(residual_out, residual_in, delta, delta_bias);
    layernorm_forward(out, mean, rstd, residual_out, weight, bias);
    return;
  }
  k::residual_layernorm_forward(residual_out.bf16_data(), out.bf16_data(), f32_or_null(mean), f32_or_null(rstd),
                                bf16_or_null(residual_in), bf16_or_null(delta), bf16_or_null(delta_bias),
                                weight.bf16_data(), bias.bf16_data(), dim(N), dim(C), context_.stream());
}

void CudaBackend::residual_add(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& bias) {
  backend_checks::check_residual_add(contract(), out, a, b, bias);
  const int64_t N = rows(out), C = cols(out);
  if (N == 0) return;
  k::residual_add(out.bf16_data(), bf16_or_null(a), bf16_or_null(b), bf16_or_null(bias), dim(N), dim(C),
                  context_.stream());
}

void CudaBackend::layernorm_backward(const Tensor& dresidual, const Tensor& dweight, const Tensor& dbias,
                                     const Tensor& dout, const Tensor& inp, const Tensor& weight, const Tensor& mean,
                                     const Tensor& rstd) {
  backend_checks::check_layernorm_backward(contract(), dresidual, dweight, dbias, dout, inp, weight, mean, rstd);
  const int64_t N = rows(inp), C = cols(inp);
  if (N == 0) return;
  float* scratch = float_scratch(k::layernorm_backward_scratch_floats(dim(N), dim(C)));
  k::layernorm_backward(dresidual.bf16_data(), dweight.f32(), dbias.f32(), dout.bf16_data(), inp.bf16_data(),
                        weight.bf16_data(), mean.f32(), rstd.f32(), dim(N), dim(C), scratch, context_.stream());
}

// --- RMSNorm ---------------------------------------------------------------------------------

void CudaBackend::rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& inp, const Tensor& weight,
                                  float eps) {
  backend_checks::check_rmsnorm_forward(contract(), out, rstd, inp, weight, eps);
  const int64_t N = rows(inp), C = cols(inp);
  if (N == 0) return;
  k::rmsnorm_forward(out.bf16_data(), f32_or_null(rstd), inp.bf16_data(), weight.bf16_data(), eps, dim(N), dim(C),
                     context_.stream());
}

void CudaBackend::residual_rmsnorm_forward(const Tensor& residual_out, const Tensor& out, const Tensor& rstd,
                                           const Tensor& residual_in, const Tensor& delta, const Tensor& delta_bias,
                                           const Tensor& weight, float eps) {
  backend_checks::check_residual_rmsnorm_forward(contract(), residual_out, out, rstd, residual_in, delta,
                                                 delta_bias, weight, eps);
  const int64_t N = rows(out), C = cols(out);
  if (N == 0) return;
  if (!present(residual_in) && !present(delta)) {
    // The fused kernel wants a row to start from; the bias alone is the residual add's.
    residual_add(residual_out, residual_in, delta, delta_bias);
    rmsnorm_forward(out, rstd, residual_out, weight, eps);
    return;
  }
  k::residual_rmsnorm_forward(residual_out.bf16_data(), out.bf16_data(), f32_or_null(rstd),
                              bf16_or_null(residual_in), bf16_or_null(delta), bf16_or_null(delta_bias),
                              weight.bf16_data(), eps, dim(N), dim(C), context_.stream());
}

void CudaBackend::rmsnorm_backward(const Tensor& dresidual, const Tensor& dweight, const Tensor& dout,
                                   const Tensor& inp, const Tensor& weight, const Tensor& rstd) {
  backend_checks::check_rmsnorm_backward(contract(), dresidual, dweight, dout, inp, weight, rstd);
  const int64_t N = rows(inp), C = cols(inp);
  if (N == 0) return;
  float* scratch = float_scratch(k::rmsnorm_backward_scratch_floats(dim(N), dim(C)));
  k::rmsnorm_backward(dresidual.bf16_data(), dweight.f32(), dout.bf16_data(), inp.bf16_data(), weight.bf16_data(),
                      rstd.f32(), dim(N), dim(C), scratch, context_.stream());
}

// --- matmul ----------------------------------------------------------------------------------

void CudaBackend::matmul_forward(const Tensor& out, const Tensor& pre, const Tensor& inp, const Tensor& weight,
                                 const Tensor& bias, Epilogue epilogue) {
  backend_checks::check_matmul_forward(contract(), out, pre, inp, weight, bias, static_cast<int>(epilogue));
  const int64_t N = rows(inp), C = cols(inp), OC = rows(weight);
  if (N == 0) return;
  const k::Epilogue e = epilogue == Epilogue::kNone   ? k::Epilogue::kNone
                        : epilogue == Epilogue::kBias ? k::Epilogue::kBias
                                                      : k::Epilogue::kBiasGelu;
  matmul_->forward(out.bf16_data(), bf16_or_null(pre), inp.bf16_data(), weight.bf16_data(), bf16_or_null(bias),
                   dim(N), dim(C), dim(OC), e, context_.stream());
}

void CudaBackend::matmul_backward(const Tensor& dinp, const Tensor& dweight, const Tensor& dout, const Tensor& inp,
                                  const Tensor& weight) {
  backend_checks::check_matmul_backward(contract(), dinp, dweight, dout, inp, weight);
  const int64_t N = rows(dout), OC = cols(dout);
  const int64_t C = present(weight) ? cols(weight) : cols(inp);
  if (N == 0 || (!present(dinp) && !present(dweight))) return;
  // Matmul::backward overwrites dinp and accumulates dweight: the interface's convention.
  matmul_->backward(bf16_or_null(dinp), f32_or_null(dweight), dout.bf16_data(),
                    present(dweight) ? inp.bf16_data() : nullptr, present(dinp) ? weight.bf16_data() : nullptr,
                    dim(N), dim(C), dim(OC), context_.stream());
}

void CudaBackend::bias_backward(const Tensor& dbias, const Tensor& dout) {
  backend_checks::check_bias_backward(contract(), dbias, dout);
  const int64_t N = rows(dout), OC = cols(dout);
  if (N == 0) return;
  float* scratch = float_scratch(k::bias_backward_scratch_floats(dim(N), dim(OC)));
  k::bias_backward(dbias.f32(), dout.bf16_data(), dim(N), dim(OC), scratch, context_.stream());
}

void CudaBackend::gelu_backward(const Tensor& dinp, const Tensor& pre, const Tensor& dout) {
  backend_checks::check_gelu_backward(contract(), dinp, pre, dout);
  const int64_t n = pre.numel();
  if (n == 0) return;
  k::gelu_backward(dinp.bf16_data(), pre.bf16_data(), dout.bf16_data(), n, context_.stream());
}

void CudaBackend::swiglu_forward(const Tensor& out, const Tensor& gu) {
  backend_checks::check_swiglu_forward(contract(), out, gu);
  const int64_t N = rows(out), F = cols(out);
  if (N == 0 || F == 0) return;
  k::swiglu_forward(out.bf16_data(), gu.bf16_data(), dim(N), dim(F), context_.stream());
}

void CudaBackend::swiglu_backward(const Tensor& dgu, const Tensor& gu, const Tensor& dout) {
  backend_checks::check_swiglu_backward(contract(), dgu, gu, dout);
  const int64_t N = rows(dout), F = cols(dout);
  if (N == 0 || F == 0) return;
  k::swiglu_backward(dgu.bf16_data(), gu.bf16_data(), dout.bf16_data(), dim(N), dim(F), context_.stream());
}

// --- rotary position embeddings --------------------------------------------------------------

void CudaBackend::rope_forward(const Tensor& qkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                               int first_position, const Tensor& doc_starts) {
  backend_checks::check_rope_forward(contract(), qkv, inv_freq, B, T, NH, NKV, first_position, doc_starts);
  k::rope_forward(qkv.bf16_data(), inv_freq.f32(), B, T, NH, NKV, dim(2 * inv_freq.numel()), first_position,
                  context_.stream(), i32_or_null(doc_starts));
}

void CudaBackend::rope_backward(const Tensor& dqkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                                const Tensor& doc_starts) {
  backend_checks::check_rope_backward(contract(), dqkv, inv_freq, B, T, NH, NKV, doc_starts);
  k::rope_backward(dqkv.bf16_data(), inv_freq.f32(), B, T, NH, NKV, dim(2 * inv_freq.numel()), 0, context_.stream(),
                   i32_or_null(doc_starts));
}

// --- attention -------------------------------------------------------------------------------

namespace {

void require_attention(int B, int T, int NH, int64_t Cl, const char* op) {
  OpShape shape;
  shape.B = B;
  shape.T = T;
  shape.NH = NH;
  shape.C = Cl;
  shape.N = static_cast<int64_t>(B) * T;
  const std::string why = cuda_backend_unsupported(Op::kAttention, shape);
  LOOM_CHECK(why.empty(), op, ":", why);
}

}  // namespace

void CudaBackend::attention_forward(const Tensor& out, const Tensor& lse, const Tensor& qkv, int B, int T, int NH,
                                    int NKV, const Tensor& doc_starts) {
  backend_checks::check_attention_forward(contract(), out, lse, qkv, B, T, NH, NKV, doc_starts);
  const int64_t Cl = cols(out);
  require_attention(B, T, NH, Cl, "attention_forward");
  k::attention_forward(out.bf16_data(), lse.f32(), qkv.bf16_data(), B, T, dim(Cl), NH, NKV, context_.stream(),
                       i32_or_null(doc_starts));
}

void CudaBackend::attention_backward(const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                     const Tensor& lse, int B, int T, int NH, int NKV, const Tensor& doc_starts) {
  backend_checks::check_attention_backward(contract(), dqkv, dout, qkv, out, lse, B, T, NH, NKV, doc_starts);
  const int64_t Cl = cols(out);
  require_attention(B, T, NH, Cl, "attention_backward");
  float* scratch = float_scratch(k::attention_backward_scratch_floats(B, T, NH));
  k::attention_backward(dqkv.bf16_data(), dout.bf16_data(), qkv.bf16_data(), out.bf16_data(), lse.f32(), B, T,
                        dim(Cl), NH, NKV, scratch, context_.stream(), i32_or_null(doc_starts));
}

void CudaBackend::attention_decode(const Tensor& out, const Tensor& k_cache, const Tensor& v_cache,
                                   const Tensor& qkv, int NH, int NKV, int pos) {
  backend_checks::check_attention_decode(contract(), out, k_cache, v_cache, qkv, NH, NKV, pos);
  const int64_t B = rows(out), Cl = cols(out), max_T = k_cache.shape()[1];
  OpShape shape;
  shape.B = B;
  shape.T = max_T;
  shape.NH = NH;
  shape.C = Cl;
  const std::string why = cuda_backend_unsupported(Op::kAttentionDecode, shape);
  LOOM_CHECK(why.empty(), "attention_decode :", why);
  k::attention_decode(out.bf16_data(), k_cache.bf16_data(), v_cache.bf16_data(), qkv.bf16_data(), dim(B), pos,
                      dim(max_T), dim(Cl), NH, NKV, context_.stream());
}

// --- vocabulary-parallel cross-entropy -------------------------------------------------------
// Rows of logits are contiguous: the kernels' row stride is Vl.

void CudaBackend::vocab_row_max(const Tensor& row_max, const Tensor& logits) {
  backend_checks::check_vocab_row_max(contract(), row_max, logits);
  const int64_t N = rows(logits), Vl = cols(logits);
  if (N == 0) return;
  k::vocab_parallel_row_max(row_max.f32(), logits.bf16_data(), dim(N), dim(Vl), dim(Vl), context_.stream());
}

void CudaBackend::vocab_sum_exp(const Tensor& sum_exp, const Tensor& target_logit, const Tensor& logits,
                                const Tensor& targets, const Tensor& row_max, int vocab_start) {
  backend_checks::check_vocab_sum_exp(contract(), sum_exp, target_logit, logits, targets, row_max);
  const int64_t N = rows(logits), Vl = cols(logits);
  if (N == 0) return;
  k::vocab_parallel_sum_exp(sum_exp.f32(), target_logit.f32(), logits.bf16_data(), targets.i32(), row_max.f32(),
                            dim(N), dim(Vl), dim(Vl), vocab_start, context_.stream());
}

void CudaBackend::vocab_losses(const Tensor& losses, const Tensor& row_max, const Tensor& sum_exp,
                               const Tensor& target_logit, const Tensor& targets) {
  backend_checks::check_vocab_losses(contract(), losses, row_max, sum_exp, target_logit, targets);
  const int64_t N = rows(losses);
  k::vocab_parallel_losses(losses.f32(), row_max.f32(), sum_exp.f32(), target_logit.f32(), targets.i32(), dim(N),
                           context_.stream());
}

void CudaBackend::vocab_cross_entropy_backward(const Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                                               const Tensor& row_max, const Tensor& sum_exp, int vocab_start,
                                               float dloss) {
  backend_checks::check_vocab_cross_entropy_backward(contract(), dlogits, logits, targets, row_max, sum_exp);
  const int64_t N = rows(logits), Vl = cols(logits);
  if (N == 0) return;
  // The kernel turns the logits into their gradient in place: elsewhere, it works on a copy.
  copy(dlogits, logits);
  k::vocab_parallel_cross_entropy_backward(dlogits.bf16_data(), targets.i32(), row_max.f32(), sum_exp.f32(), dloss,
                                           dim(N), dim(Vl), dim(Vl), vocab_start, context_.stream());
}

// --- optimizer -------------------------------------------------------------------------------

void CudaBackend::sum_of_squares(const Tensor& result, const Tensor& x, bool accumulate) {
  backend_checks::check_sum_of_squares(contract(), result, x);
  if (!present(norm_scratch_)) {
    norm_scratch_ = Tensor::empty({static_cast<int64_t>(k::gradient_norm_scratch_floats())}, kF32,
                                  context_.allocator());
  }
  k::sum_of_squares(result.f32(), x.numel() > 0 ? x.f32() : nullptr, x.numel(), accumulate, norm_scratch_.f32(),
                    context_.stream());
}

void CudaBackend::adamw_update(const Tensor& master, const Tensor& compute, const Tensor& grad, const Tensor& m,
                               const Tensor& v, const std::vector<kernels::cpu::AdamWSegment>& segments,
                               const Tensor& global_norm, const kernels::cpu::AdamWArenaHyper& hyper) {
  backend_checks::check_adamw_update(contract(), master, compute, grad, m, v, global_norm);
  const int64_t n = master.numel();
  // In bf16 the compute copy is always a tensor of its own.
  kernels::cpu::check_adamw_segments(segments.data(), static_cast<int>(segments.size()), n);
  if (n == 0 || segments.empty()) return;
  // The kernel reads the norm on the device and skips the update when it is not finite.
  k::adamw_update(master.f32(), compute.bf16_data(), grad.f32(), m.f32(), v.f32(), n, device_segments(segments),
                  static_cast<int>(segments.size()), global_norm.f32(), hyper, context_.stream());
}

}  // namespace loom
