// The ops' names and the default support answer.
#include "core/backend/backend.h"

#include <string>

namespace loom {

const char* op_name(Op op) {
  switch (op) {
    case Op::kTokenEmbedding: return "token embedding";
    case Op::kPositionEmbedding: return "position embedding";
    case Op::kLayerNorm: return "LayerNorm";
    case Op::kResidualLayerNorm: return "residual + LayerNorm";
    case Op::kResidualAdd: return "residual add";
    case Op::kRMSNorm: return "RMSNorm";
    case Op::kMatmul: return "matmul";
    case Op::kGelu: return "GELU";
    case Op::kSwiGLU: return "SwiGLU";
    case Op::kRoPE: return "rotary position embeddings";
    case Op::kAttention: return "attention";
    case Op::kAttentionDecode: return "attention decode (KV cache)";
    case Op::kVocabCrossEntropy: return "vocabulary-parallel cross-entropy";
    case Op::kAdamW: return "AdamW";
    case Op::kCount: break;
  }
  return "?";
}

std::string Backend::unsupported(Op, const OpShape&) const { return {}; }

}  // namespace loom
