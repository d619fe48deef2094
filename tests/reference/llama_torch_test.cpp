// The Llama family against PyTorch (tests/reference/llama_torch.py: an independent implementation
// of Hugging Face's LlamaForCausalLM definitions, checked against transformers' own model when
// that package is installed): logits, loss, every gradient and 10 AdamW steps, with the
// tolerances of the GPT-2 test (torch_reference.h).
#include <string>
#include <vector>

#include "tests/reference/torch_reference.h"

namespace loom {
namespace {

testing::TorchReference llama_reference(const GPTConfig& model) {
  testing::TorchReference s;
  s.model = model;
  s.script = "llama_torch.py";
  const GPTConfig& c = s.model;
  s.config_lines = {"n_kv_head " + std::to_string(c.kv_heads()),
                    "intermediate " + std::to_string(c.mlp_hidden()),
                    "rope_theta " + std::to_string(c.rope_theta),
                    "norm_eps " + std::to_string(c.norm_eps),
                    "tied " + std::to_string(c.tie_embeddings ? 1 : 0),
                    "qkv_bias " + std::to_string(c.qkv_bias ? 1 : 0),
                    "rope_llama3 " + std::to_string(c.rope_llama3 ? 1 : 0),
                    "rope_factor " + std::to_string(c.rope_factor),
                    "rope_low_freq_factor " + std::to_string(c.rope_low_freq_factor),
                    "rope_high_freq_factor " + std::to_string(c.rope_high_freq_factor),
                    "rope_original_max_position " + std::to_string(c.rope_original_max_position)};
  return s;
}

GPTConfig tiny_llama() {
  GPTConfig c{2, 4, 32, 37, 16};  // head size 8; odd vocabulary; T = 13 below max_seq_len
  c.family = Family::kLlama;
  c.intermediate_size = 48;
  return c;
}

// Grouped-query attention (two query heads per key/value head), an untied lm_head, Llama 3's
// base and frequency scaling with a short original context, so that the 13 positions see all
// three bands of the scaling (kept, smoothed, divided by the factor).
TEST(LlamaVsTorchTest, GroupedQueryAttentionUntiedWithLlama3Scaling) {
  GPTConfig c = tiny_llama();
  c.n_kv_head = 2;
  c.rope_theta = 500000.0f;
  c.norm_eps = 1e-6f;
  c.rope_llama3 = true;
  c.rope_factor = 8.0f;
  c.rope_low_freq_factor = 1.0f;
  c.rope_high_freq_factor = 4.0f;
  c.rope_original_max_position = 256;
  testing::expect_matches_torch(llama_reference(c));
}

// Multi-query attention (one key/value head), tied embeddings and Qwen2's q, k, v biases.
TEST(LlamaVsTorchTest, MultiQueryTiedWithQkvBias) {
  GPTConfig c = tiny_llama();
  c.n_kv_head = 1;
  c.tie_embeddings = true;
  c.qkv_bias = true;
  c.intermediate_size = 40;
  testing::expect_matches_torch(llama_reference(c));
}

// Full multi-head attention with the default MLP width.
TEST(LlamaVsTorchTest, MultiHeadDefaultWidth) {
  GPTConfig c = tiny_llama();
  c.intermediate_size = 0;  // 8 x 32 / 3 rounded up to 256
  testing::expect_matches_torch(llama_reference(c));
}

}  // namespace
}  // namespace loom
