// The ops' names, the default support answer and the shape checks every backend shares.
#include "core/backend/backend.h"

#include <string>

#include "core/backend/op_checks.h"

namespace loom {

const char* op_name(Op op) {
  switch (op) {
    case Op::kTokenEmbedding: return "token embedding";
    case Op::kPositionEmbedding: return "position embedding";
    case Op::kLayerNorm: return "LayerNorm";
    case Op::kResidualLayerNorm: return "residual + LayerNorm";
    case Op::kResidualAdd: return "residual add";
    case Op::kMatmul: return "matmul";
    case Op::kGelu: return "GELU";
    case Op::kAttention: return "attention";
    case Op::kVocabCrossEntropy: return "vocabulary-parallel cross-entropy";
    case Op::kAdamW: return "AdamW";
    case Op::kCount: break;
  }
  return "?";
}

std::string Backend::unsupported(Op, const OpShape&) const { return {}; }

namespace backend_checks {

int64_t rows(const Tensor& t) { return t.shape().rank() == 0 ? 1 : t.shape()[0]; }

int64_t cols(const Tensor& t) {
  const int64_t r = rows(t);
  return r == 0 ? 0 : t.numel() / r;
}

bool present(const Tensor& t) { return t.raw() != nullptr; }

namespace {

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

}  // namespace backend_checks
}  // namespace loom
