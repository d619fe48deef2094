// GuardedBackend: a CpuBackend whose memory the host cannot touch, standing in for a GPU in
// tests that run without one.
//
// Every tensor it allocates is tagged Device::kCUDA and lives in pages that are mapped
// PROT_NONE except while one of its own ops (or to_host / from_host) runs. So a model, optimizer
// or checkpoint that reads or writes "device" memory from the host, instead of through the
// backend, dies with SIGSEGV in the test, and one that hands an op a host tensor (or a tensor
// tagged for the CPU) fails its check: the mistakes a GPU run would make, found on the CPU. The
// arithmetic is CpuBackend's, so results are bitwise those of a CpuBackend in the same precision.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/backend/cpu_backend.h"
#include "core/base/check.h"

namespace loom::testing {

class GuardedBackend final : public Backend {
 public:
  explicit GuardedBackend(Precision precision) : Backend(precision), cpu_(precision) {}
  ~GuardedBackend() override {
    for (const Region& r : regions_) munmap(r.base, r.bytes);
  }

  Device device() const override { return Device::kCUDA; }
  std::string name() const override { return "guarded " + cpu_.name(); }
  DType accumulator_dtype() const override { return cpu_.accumulator_dtype(); }
  std::string unsupported(Op op, const OpShape& shape) const override { return cpu_.unsupported(op, shape); }

  Tensor zeros(const Shape& shape, DType dtype) override {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t bytes = (static_cast<size_t>(shape.numel()) * dtype_size(dtype) + page - 1) / page * page + page;
    void* base = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);  // zero-filled
    LOOM_CHECK(base != MAP_FAILED, "GuardedBackend: mmap of", bytes, "bytes failed");
    regions_.push_back({static_cast<char*>(base), bytes});
    return Tensor::view(base, shape, dtype, Device::kCUDA);
  }
  void zero(const Tensor& t) override { Open o(*this); cpu_.zero(host(t)); }
  void copy(const Tensor& dst, const Tensor& src) override { Open o(*this); cpu_.copy(host(dst), host(src)); }
  void to_host(void* out, const Tensor& src) override {
    Open o(*this);
    if (src.numel() > 0) std::memcpy(out, host(src).raw(), src.nbytes());
  }
  void from_host(const Tensor& dst, const void* in) override {
    Open o(*this);
    if (dst.numel() > 0) std::memcpy(host(dst).raw(), in, dst.nbytes());
  }
  void synchronize() override {}

  void token_embedding_forward(const Tensor& out, const Tensor& tokens, const Tensor& wte, int vocab_start) override {
    Open o(*this);
    cpu_.token_embedding_forward(host(out), host(tokens), host(wte), vocab_start);
  }
  void position_embedding_forward(const Tensor& out, const Tensor& wpe, int T, int first_row,
                                  const Tensor& doc_starts) override {
    Open o(*this);
    cpu_.position_embedding_forward(host(out), host(wpe), T, first_row, host(doc_starts));
  }
  void token_embedding_backward(const Tensor& dwte, const Tensor& dout, const Tensor& tokens, int vocab_start) override {
    Open o(*this);
    cpu_.token_embedding_backward(host(dwte), host(dout), host(tokens), vocab_start);
  }
  void position_embedding_backward(const Tensor& dwpe, const Tensor& dout, int T, int first_row,
                                   const Tensor& doc_starts) override {
    Open o(*this);
    cpu_.position_embedding_backward(host(dwpe), host(dout), T, first_row, host(doc_starts));
  }
  void layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& inp,
                         const Tensor& weight, const Tensor& bias) override {
    Open o(*this);
    cpu_.layernorm_forward(host(out), host(mean), host(rstd), host(inp), host(weight), host(bias));
  }
  void residual_layernorm_forward(const Tensor& residual_out, const Tensor& out, const Tensor& mean, const Tensor& rstd,
                                  const Tensor& residual_in, const Tensor& delta, const Tensor& delta_bias,
                                  const Tensor& weight, const Tensor& bias) override {
    Open o(*this);
    cpu_.residual_layernorm_forward(host(residual_out), host(out), host(mean), host(rstd), host(residual_in),
                                    host(delta), host(delta_bias), host(weight), host(bias));
  }
  void residual_add(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& bias) override {
    Open o(*this);
    cpu_.residual_add(host(out), host(a), host(b), host(bias));
  }
  void layernorm_backward(const Tensor& dresidual, const Tensor& dweight, const Tensor& dbias, const Tensor& dout,
                          const Tensor& inp, const Tensor& weight, const Tensor& mean, const Tensor& rstd) override {
    Open o(*this);
    cpu_.layernorm_backward(host(dresidual), host(dweight), host(dbias), host(dout), host(inp), host(weight),
                            host(mean), host(rstd));
  }
  void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& inp, const Tensor& weight,
                       float eps) override {
    Open o(*this);
    cpu_.rmsnorm_forward(host(out), host(rstd), host(inp), host(weight), eps);
  }
  void residual_rmsnorm_forward(const Tensor& residual_out, const Tensor& out, const Tensor& rstd,
                                const Tensor& residual_in, const Tensor& delta, const Tensor& delta_bias,
                                const Tensor& weight, float eps) override {
    Open o(*this);
    cpu_.residual_rmsnorm_forward(host(residual_out), host(out), host(rstd), host(residual_in), host(delta),
                                  host(delta_bias), host(weight), eps);
  }
  void rmsnorm_backward(const Tensor& dresidual, const Tensor& dweight, const Tensor& dout, const Tensor& inp,
                        const Tensor& weight, const Tensor& rstd) override {
    Open o(*this);
    cpu_.rmsnorm_backward(host(dresidual), host(dweight), host(dout), host(inp), host(weight), host(rstd));
  }
  void matmul_forward(const Tensor& out, const Tensor& pre, const Tensor& inp, const Tensor& weight, const Tensor& bias,
                      Epilogue epilogue) override {
    Open o(*this);
    cpu_.matmul_forward(host(out), host(pre), host(inp), host(weight), host(bias), epilogue);
  }
  void matmul_backward(const Tensor& dinp, const Tensor& dweight, const Tensor& dout, const Tensor& inp,
                       const Tensor& weight) override {
    Open o(*this);
    cpu_.matmul_backward(host(dinp), host(dweight), host(dout), host(inp), host(weight));
  }
  void bias_backward(const Tensor& dbias, const Tensor& dout) override {
    Open o(*this);
    cpu_.bias_backward(host(dbias), host(dout));
  }
  void gelu_backward(const Tensor& dinp, const Tensor& pre, const Tensor& dout) override {
    Open o(*this);
    cpu_.gelu_backward(host(dinp), host(pre), host(dout));
  }
  void swiglu_forward(const Tensor& out, const Tensor& gu) override {
    Open o(*this);
    cpu_.swiglu_forward(host(out), host(gu));
  }
  void swiglu_backward(const Tensor& dgu, const Tensor& gu, const Tensor& dout) override {
    Open o(*this);
    cpu_.swiglu_backward(host(dgu), host(gu), host(dout));
  }
  void rope_forward(const Tensor& qkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                    int first_position, const Tensor& doc_starts) override {
    Open o(*this);
    cpu_.rope_forward(host(qkv), host(inv_freq), B, T, NH, NKV, first_position, host(doc_starts));
  }
  void rope_backward(const Tensor& dqkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                     const Tensor& doc_starts) override {
    Open o(*this);
    cpu_.rope_backward(host(dqkv), host(inv_freq), B, T, NH, NKV, host(doc_starts));
  }
  void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& qkv, int B, int T, int NH, int NKV,
                         const Tensor& doc_starts) override {
    Open o(*this);
    cpu_.attention_forward(host(out), host(lse), host(qkv), B, T, NH, NKV, host(doc_starts));
  }
  void attention_backward(const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                          const Tensor& lse, int B, int T, int NH, int NKV, const Tensor& doc_starts) override {
    Open o(*this);
    cpu_.attention_backward(host(dqkv), host(dout), host(qkv), host(out), host(lse), B, T, NH, NKV,
                            host(doc_starts));
  }
  void attention_decode(const Tensor& out, const Tensor& k_cache, const Tensor& v_cache, const Tensor& qkv, int NH,
                        int NKV, int pos) override {
    Open o(*this);
    cpu_.attention_decode(host(out), host(k_cache), host(v_cache), host(qkv), NH, NKV, pos);
  }
  void vocab_row_max(const Tensor& row_max, const Tensor& logits) override {
    Open o(*this);
    cpu_.vocab_row_max(host(row_max), host(logits));
  }
  void vocab_sum_exp(const Tensor& sum_exp, const Tensor& target_logit, const Tensor& logits, const Tensor& targets,
                     const Tensor& row_max, int vocab_start) override {
    Open o(*this);
    cpu_.vocab_sum_exp(host(sum_exp), host(target_logit), host(logits), host(targets), host(row_max), vocab_start);
  }
  void vocab_losses(const Tensor& losses, const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                    const Tensor& targets) override {
    Open o(*this);
    cpu_.vocab_losses(host(losses), host(row_max), host(sum_exp), host(target_logit), host(targets));
  }
  void vocab_cross_entropy_backward(const Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                                    const Tensor& row_max, const Tensor& sum_exp, int vocab_start, float dloss) override {
    Open o(*this);
    cpu_.vocab_cross_entropy_backward(host(dlogits), host(logits), host(targets), host(row_max), host(sum_exp),
                                      vocab_start, dloss);
  }
  void sum_of_squares(const Tensor& result, const Tensor& x, bool accumulate) override {
    Open o(*this);
    cpu_.sum_of_squares(host(result), host(x), accumulate);
  }
  void adamw_update(const Tensor& master, const Tensor& compute, const Tensor& grad, const Tensor& m, const Tensor& v,
                    const std::vector<kernels::cpu::AdamWSegment>& segments, const Tensor& global_norm,
                    const kernels::cpu::AdamWArenaHyper& hyper) override {
    Open o(*this);
    cpu_.adamw_update(host(master), host(compute), host(grad), host(m), host(v), segments, host(global_norm), hyper);
  }

  // Ops run so far: a test can check that the model really ran here.
  int64_t ops() const { return ops_; }

 private:
  struct Region {
    char* base;
    size_t bytes;
  };
  // The pages readable for the duration of one op.
  struct Open {
    GuardedBackend& b;
    explicit Open(GuardedBackend& backend) : b(backend) {
      ++b.ops_;
      for (const Region& r : b.regions_) mprotect(r.base, r.bytes, PROT_READ | PROT_WRITE);
    }
    ~Open() {
      for (const Region& r : b.regions_) mprotect(r.base, r.bytes, PROT_NONE);
    }
  };

  // The same bytes tagged for the CpuBackend; a present tensor must be this backend's.
  Tensor host(const Tensor& t) const {
    if (t.raw() == nullptr) return t;  // absent
    const char* p = static_cast<const char*>(t.raw());
    bool inside = false;
    for (const Region& r : regions_) inside = inside || (p >= r.base && p + t.nbytes() <= r.base + r.bytes);
    LOOM_CHECK(t.device() == Device::kCUDA && inside, "GuardedBackend: a tensor", t.shape().str(), "on",
               device_name(t.device()), inside ? "" : "outside this backend's memory", "was handed to an op");
    return Tensor::view(t.raw(), t.shape(), t.dtype(), Device::kCPU);
  }

  CpuBackend cpu_;
  std::vector<Region> regions_;
  int64_t ops_ = 0;
};

}  // namespace loom::testing
