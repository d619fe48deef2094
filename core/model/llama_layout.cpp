#include "core/base/checked_math.h"
#include "core/gpt.h"
#include "core/model/layout.h"

namespace loom {

std::vector<TensorSpec> llama_layout(const GPTConfig& config, int first_layer, int end_layer, bool first_stage,
                                     bool last_stage) {
  const int64_t C = config.n_embd, V = config.vocab_size, HS = config.head_size();
  const int64_t QKV = checked_mul(HS, config.n_head + 2 * static_cast<int64_t>(config.kv_heads()), "the q, k, v rows");
  const int64_t F = config.mlp_hidden(), F2 = checked_mul(2, F, "2 x intermediate_size");
  std::vector<TensorSpec> specs;
  int layer = -1;  // of the tensors added next
  auto add = [&](std::string name, Shape shape, Sharding sharding, Init init, bool decay, bool partial = false) {
    TensorSpec t;
    t.name = std::move(name);
    t.global = std::move(shape);
    t.sharding = sharding;
    t.init = init;
    t.decay = decay;
    t.partial_under_sequence_parallel = partial;
    t.layer = layer;
    specs.push_back(std::move(t));
  };
  // Hugging Face's LlamaPreTrainedModel draws every Linear and Embedding from N(0, 0.02) (no
  // residual scaling) and starts the RMSNorm gains at one.
  if (first_stage || (last_stage && config.tied())) {
    add("embed_tokens.weight", {V, C}, Sharding::kVocabRows, Init::kNormal, true);
  }
  for (int l = first_layer; l < end_layer; ++l) {
    layer = l;
    const std::string p = "layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {C}, Sharding::kReplicated, Init::kOnes, false, true);
    add(p + "self_attn.qkv_proj.weight", {QKV, C}, Sharding::kQkvRows, Init::kNormal, true);
    if (config.qkv_bias) add(p + "self_attn.qkv_proj.bias", {QKV}, Sharding::kQkvRows, Init::kZeros, false);
    add(p + "self_attn.o_proj.weight", {C, config.n_head * HS}, Sharding::kColumns, Init::kNormal, true);
    add(p + "post_attention_layernorm.weight", {C}, Sharding::kReplicated, Init::kOnes, false, true);
    add(p + "mlp.gate_up_proj.weight", {F2, C}, Sharding::kGateUpRows, Init::kNormal, true);
    add(p + "mlp.down_proj.weight", {C, F}, Sharding::kColumns, Init::kNormal, true);
  }
  layer = -1;
  if (last_stage) {
    add("norm.weight", {C}, Sharding::kReplicated, Init::kOnes, false, true);
    if (!config.tied()) {
      add("lm_head.weight", {V, C}, Sharding::kVocabRows, Init::kNormal, true);
      specs.back().output_projection = true;
    }
  }
  return specs;
}

}  // namespace loom
