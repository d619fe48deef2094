// A Hugging Face model's config.json, to and from Loom's model shape (GPTConfig).
//
// Read: the architectures Loom builds — GPT2LMHeadModel / GPT2Model (family GPT-2) and
// LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (family Llama) — with every field that
// changes the computation checked: a value Loom cannot represent (another activation, a sliding
// window, a rope scaling other than Llama 3's, biases Loom has no tensor for, a head_dim that is
// not hidden_size / num_attention_heads, ...) is a UserError naming the file and the field, never
// a model that silently computes something else. Fields that only matter to other code (dropout,
// initializer_range, use_cache, torch_dtype) are ignored.
//
// Write: the config.json transformers' from_pretrained builds the same model from (architectures,
// model_type, torch_dtype and every field above, bos/eos ids when known).
#pragma once

#include <optional>
#include <string>

#include "core/gpt.h"

namespace loom {

struct HfModelConfig {
  GPTConfig model;
  std::string architecture;  // as config.json names it, e.g. "LlamaForCausalLM"
  std::optional<int> bos_token_id, eos_token_id;
};

// Parses the text of `path` (a config.json). UserError naming `path` and the field otherwise.
HfModelConfig parse_hf_config(const std::string& text, const std::string& path);
HfModelConfig read_hf_config(const std::string& path);

// The config.json of `model` with weights stored as `torch_dtype` ("float32", "bfloat16",
// "float16"). GPT-2 writes GPT2LMHeadModel; the Llama family LlamaForCausalLM, or
// Qwen2ForCausalLM when it has q/k/v biases (Llama's own attention_bias also biases o_proj).
std::string hf_config_json(const HfModelConfig& config, const std::string& torch_dtype);

}  // namespace loom
