#include "core/model/layout.h"

#include "core/base/checked_math.h"
#include "core/gpt.h"

namespace loom {

std::vector<TensorSpec> gpt2_layout(const GPTConfig& config, int first_layer, int end_layer, bool first_stage,
                                    bool last_stage) {
  const int64_t C = config.n_embd, V = config.vocab_size, T = config.max_seq_len;
  const int64_t C4 = checked_mul(4, C, "4 x n_embd"), C3 = checked_mul(3, C, "3 x n_embd");
  std::vector<TensorSpec> specs;
  int layer = -1;  // of the tensors added next
  auto add = [&](std::string name, Shape shape, Sharding sharding, Init init, bool decay, bool partial = false,
                 bool transposed = false) {
    specs.push_back({std::move(name), std::move(shape), sharding, init, decay, partial, transposed, false, layer});
  };
  if (first_stage || last_stage) add("wte", {V, C}, Sharding::kVocabRows, Init::kNormal, true);
  if (first_stage) add("wpe", {T, C}, Sharding::kReplicated, Init::kNormal, true, /*partial=*/true);
  for (int l = first_layer; l < end_layer; ++l) {
    layer = l;
    const std::string p = "h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", {C}, Sharding::kReplicated, Init::kOnes, false, true);
    add(p + "ln_1.bias", {C}, Sharding::kReplicated, Init::kZeros, false, true);
    add(p + "attn.c_attn.weight", {C3, C}, Sharding::kQkvRows, Init::kNormal, true, false, true);
    add(p + "attn.c_attn.bias", {C3}, Sharding::kQkvRows, Init::kZeros, false);
    add(p + "attn.c_proj.weight", {C, C}, Sharding::kColumns, Init::kResidualNormal, true, false, true);
    add(p + "attn.c_proj.bias", {C}, Sharding::kReplicated, Init::kZeros, false);
    add(p + "ln_2.weight", {C}, Sharding::kReplicated, Init::kOnes, false, true);
    add(p + "ln_2.bias", {C}, Sharding::kReplicated, Init::kZeros, false, true);
    add(p + "mlp.c_fc.weight", {C4, C}, Sharding::kRows, Init::kNormal, true, false, true);
    add(p + "mlp.c_fc.bias", {C4}, Sharding::kRows, Init::kZeros, false);
    add(p + "mlp.c_proj.weight", {C, C4}, Sharding::kColumns, Init::kResidualNormal, true, false, true);
    add(p + "mlp.c_proj.bias", {C}, Sharding::kReplicated, Init::kZeros, false);
  }
  layer = -1;
  if (last_stage) {
    add("ln_f.weight", {C}, Sharding::kReplicated, Init::kOnes, false, true);
    add("ln_f.bias", {C}, Sharding::kReplicated, Init::kZeros, false, true);
  }
  return specs;
}

}  // namespace loom
