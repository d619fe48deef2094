#include "checkpoints/hf_config.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <set>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "data/json.h"

namespace loom {

namespace {

// The members of one config.json object, each read at most once with its type checked; every
// failure names the file and the field.
class ConfigFields {
 public:
  ConfigFields(const JsonValue& object, std::string path) : object_(object), path_(std::move(path)) {}

  // The member, or null when absent or JSON null (transformers treats both as "not set").
  const JsonValue* find(const char* key) const {
    const JsonValue* v = object_.find(key);
    return v == nullptr || v->kind == JsonValue::Kind::kNull ? nullptr : v;
  }
  [[noreturn]] void fail(const char* key, const auto&... why) const {
    fail_user("Hugging Face config", path_, "field", std::string("\"") + key + "\"", why...);
  }
  int positive_int(const char* key, std::optional<int> fallback = std::nullopt) const {
    const JsonValue* v = find(key);
    if (v == nullptr) {
      if (!fallback) fail_user("Hugging Face config", path_, "has no field", std::string("\"") + key + "\"");
      return *fallback;
    }
    const std::optional<int64_t> n = v->kind == JsonValue::Kind::kNumber ? v->as_int64() : std::nullopt;
    if (!n || *n <= 0 || *n > (int64_t{1} << 30)) fail(key, "is", v->text, "but must be a positive integer below 2^30");
    return static_cast<int>(*n);
  }
  double number(const char* key, double fallback) const {
    const JsonValue* v = find(key);
    if (v == nullptr) return fallback;
    if (v->kind != JsonValue::Kind::kNumber) fail(key, "is", json_kind_name(v->kind), "but must be a number");
    return std::strtod(v->text.c_str(), nullptr);
  }
  bool boolean(const char* key, bool fallback) const {
    const JsonValue* v = find(key);
    if (v == nullptr) return fallback;
    if (v->kind != JsonValue::Kind::kBool) fail(key, "is", json_kind_name(v->kind), "but must be true or false");
    return v->boolean;
  }
  std::string text(const char* key, const std::string& fallback) const {
    const JsonValue* v = find(key);
    if (v == nullptr) return fallback;
    if (v->kind != JsonValue::Kind::kString) fail(key, "is", json_kind_name(v->kind), "but must be a string");
    return v->text;
  }
  // A token id: an integer, or a list of them (Llama 3's several end tokens: the first is kept).
  std::optional<int> token_id(const char* key) const {
    const JsonValue* v = find(key);
    if (v != nullptr && v->kind == JsonValue::Kind::kArray && !v->array.empty()) v = &v->array[0];
    const std::optional<int64_t> n = v && v->kind == JsonValue::Kind::kNumber ? v->as_int64() : std::nullopt;
    if (!n || *n < 0 || *n > (int64_t{1} << 30)) return std::nullopt;
    return static_cast<int>(*n);
  }
  const std::string& path() const { return path_; }

 private:
  const JsonValue& object_;
  std::string path_;
};

void read_gpt2(const ConfigFields& f, GPTConfig& c) {
  c.family = Family::kGpt2;
  c.n_layer = f.positive_int("n_layer");
  c.n_head = f.positive_int("n_head");
  c.n_embd = f.positive_int("n_embd");
  c.vocab_size = f.positive_int("vocab_size");
  c.max_seq_len = f.positive_int("n_positions");
  const double eps = f.number("layer_norm_epsilon", 1e-5);
  if (std::fabs(eps - 1e-5) > 1e-12) f.fail("layer_norm_epsilon", "is", eps, "but Loom's GPT-2 uses 1e-5");
  const std::string act = f.text("activation_function", "gelu_new");
  if (act != "gelu_new" && act != "gelu_pytorch_tanh") {
    f.fail("activation_function", "is", "\"" + act + "\"", "but Loom's GPT-2 uses GELU with the tanh approximation (gelu_new)");
  }
  if (f.find("n_inner") && f.positive_int("n_inner") != 4 * c.n_embd) {
    f.fail("n_inner", "is", f.positive_int("n_inner"), "but Loom's GPT-2 MLP has 4 x n_embd =", 4 * c.n_embd, "units");
  }
  if (!f.boolean("tie_word_embeddings", true)) f.fail("tie_word_embeddings", "is false but Loom's GPT-2 ties them");
  if (!f.boolean("scale_attn_weights", true)) f.fail("scale_attn_weights", "is false but Loom scales by 1/sqrt(head size)");
  if (f.boolean("scale_attn_by_inverse_layer_idx", false)) {
    f.fail("scale_attn_by_inverse_layer_idx", "is true, which Loom's GPT-2 does not do");
  }
  if (f.boolean("add_cross_attention", false)) f.fail("add_cross_attention", "is true; Loom has no cross-attention");
}

void read_llama(const ConfigFields& f, const std::string& architecture, GPTConfig& c) {
  const bool qwen2 = architecture == "Qwen2ForCausalLM", mistral = architecture == "MistralForCausalLM";
  c.family = Family::kLlama;
  c.n_embd = f.positive_int("hidden_size");
  c.n_layer = f.positive_int("num_hidden_layers");
  c.n_head = f.positive_int("num_attention_heads");
  c.n_kv_head = f.positive_int("num_key_value_heads", c.n_head);
  c.intermediate_size = f.positive_int("intermediate_size");
  c.vocab_size = f.positive_int("vocab_size");
  c.max_seq_len = f.positive_int("max_position_embeddings");
  c.norm_eps = static_cast<float>(f.number("rms_norm_eps", 1e-6));
  c.rope_theta = static_cast<float>(f.number("rope_theta", 10000.0));
  c.tie_embeddings = f.boolean("tie_word_embeddings", false);
  if (f.find("head_dim") && f.positive_int("head_dim") * c.n_head != c.n_embd) {
    f.fail("head_dim", "is", f.positive_int("head_dim"), "but Loom needs hidden_size / num_attention_heads =",
           c.n_embd / c.n_head);
  }
  const std::string act = f.text("hidden_act", "silu");
  if (act != "silu") f.fail("hidden_act", "is", "\"" + act + "\"", "but Loom's Llama MLP is SwiGLU (silu)");
  if (f.boolean("mlp_bias", false)) f.fail("mlp_bias", "is true; Loom's Llama MLP has no biases");
  if (qwen2) {
    c.qkv_bias = true;  // Qwen2's q, k and v always have biases, its o_proj none
    if (f.boolean("use_sliding_window", false)) f.fail("use_sliding_window", "is true; Loom has no sliding-window attention");
  } else if (f.boolean("attention_bias", false)) {
    f.fail("attention_bias", "is true (biases on q, k, v and o_proj); Loom's Llama has q/k/v biases only (Qwen2's)");
  }
  if (mistral && f.find("sliding_window") && f.positive_int("sliding_window") < c.max_seq_len) {
    f.fail("sliding_window", "is", f.positive_int("sliding_window"),
           "; Loom has no sliding-window attention (null, or a window >= max_position_embeddings, is needed)");
  }
  if (const JsonValue* rs = f.find("rope_scaling")) {
    if (rs->kind != JsonValue::Kind::kObject) f.fail("rope_scaling", "is", json_kind_name(rs->kind), "but must be an object or null");
    const ConfigFields r(*rs, f.path());
    const std::string type = r.text("rope_type", r.text("type", ""));
    if (type != "llama3" && type != "default") {
      f.fail("rope_scaling", "has rope_type", "\"" + type + "\";", "Loom implements only Llama 3's (\"llama3\")");
    }
    if (type == "llama3") {
      c.rope_llama3 = true;
      c.rope_factor = static_cast<float>(r.number("factor", 8.0));
      c.rope_low_freq_factor = static_cast<float>(r.number("low_freq_factor", 1.0));
      c.rope_high_freq_factor = static_cast<float>(r.number("high_freq_factor", 4.0));
      c.rope_original_max_position = r.positive_int("original_max_position_embeddings", 8192);
    }
  }
}

// The shortest text that reads back as the same float, always with a '.' or an exponent (so
// that Python reads a float).
std::string float_text(float v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, end);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

HfModelConfig parse_hf_config(const std::string& text, const std::string& path) {
  JsonValue root;
  try {
    root = json_parse(text);
  } catch (const JsonError& e) {
    fail_user("Hugging Face config", path, "is not valid JSON:", e.what());
  }
  if (root.kind != JsonValue::Kind::kObject) fail_user("Hugging Face config", path, "is not a JSON object");
  const ConfigFields f(root, path);
  HfModelConfig out;
  const JsonValue* archs = f.find("architectures");
  if (archs == nullptr || archs->kind != JsonValue::Kind::kArray || archs->array.size() != 1 ||
      archs->array[0].kind != JsonValue::Kind::kString) {
    fail_user("Hugging Face config", path,
              "has no \"architectures\" list of one name (expected e.g. [\"LlamaForCausalLM\"])");
  }
  out.architecture = archs->array[0].text;
  static const std::set<std::string> llama = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
  if (out.architecture == "GPT2LMHeadModel" || out.architecture == "GPT2Model") {
    read_gpt2(f, out.model);
  } else if (llama.count(out.architecture)) {
    read_llama(f, out.architecture, out.model);
  } else {
    fail_user("Hugging Face config", path, "names architecture", "\"" + out.architecture + "\",",
              "which Loom does not support (GPT2LMHeadModel, GPT2Model, LlamaForCausalLM, MistralForCausalLM,",
              "Qwen2ForCausalLM)");
  }
  out.bos_token_id = f.token_id("bos_token_id");
  out.eos_token_id = f.token_id("eos_token_id");
  try {
    out.model.validate();
  } catch (const UserError& e) {
    fail_user("Hugging Face config", path, "describes a model Loom cannot build:", e.what());
  }
  return out;
}

HfModelConfig read_hf_config(const std::string& path) { return parse_hf_config(read_file(path, "Hugging Face config"), path); }

std::string hf_config_json(const HfModelConfig& config, const std::string& torch_dtype) {
  const GPTConfig& c = config.model;
  std::string j = "{\n";
  auto add = [&](const std::string& key, const std::string& value) { j += "  \"" + key + "\": " + value + ",\n"; };
  auto add_int = [&](const std::string& key, int64_t v) { add(key, std::to_string(v)); };
  auto add_text = [&](const std::string& key, const std::string& v) { add(key, "\"" + v + "\""); };
  if (!c.llama()) {
    add("architectures", "[\"GPT2LMHeadModel\"]");
    add_text("model_type", "gpt2");
    add_int("n_layer", c.n_layer);
    add_int("n_head", c.n_head);
    add_int("n_embd", c.n_embd);
    add_int("vocab_size", c.vocab_size);
    add_int("n_positions", c.max_seq_len);
    add_int("n_ctx", c.max_seq_len);
    add("n_inner", "null");
    add_text("activation_function", "gelu_new");
    add("layer_norm_epsilon", "1e-05");
    add("tie_word_embeddings", "true");
  } else {
    const bool qwen2 = c.qkv_bias;
    add("architectures", qwen2 ? "[\"Qwen2ForCausalLM\"]" : "[\"LlamaForCausalLM\"]");
    add_text("model_type", qwen2 ? "qwen2" : "llama");
    add_int("hidden_size", c.n_embd);
    add_int("num_hidden_layers", c.n_layer);
    add_int("num_attention_heads", c.n_head);
    add_int("num_key_value_heads", c.kv_heads());
    add_int("head_dim", c.head_size());
    add_int("intermediate_size", c.mlp_hidden());
    add_int("vocab_size", c.vocab_size);
    add_int("max_position_embeddings", c.max_seq_len);
    add("rms_norm_eps", float_text(c.norm_eps));
    add("rope_theta", float_text(c.rope_theta));
    if (c.rope_llama3) {
      add("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": " + float_text(c.rope_factor) +
                              ", \"low_freq_factor\": " + float_text(c.rope_low_freq_factor) +
                              ", \"high_freq_factor\": " + float_text(c.rope_high_freq_factor) +
                              ", \"original_max_position_embeddings\": " +
                              std::to_string(c.rope_original_max_position) + "}");
    } else {
      add("rope_scaling", "null");
    }
    add("tie_word_embeddings", c.tie_embeddings ? "true" : "false");
    add_text("hidden_act", "silu");
    if (qwen2) {
      add("use_sliding_window", "false");
      add_int("max_window_layers", c.n_layer);
    } else {
      add("attention_bias", "false");
      add("mlp_bias", "false");
    }
  }
  if (config.bos_token_id) add_int("bos_token_id", *config.bos_token_id);
  if (config.eos_token_id) add_int("eos_token_id", *config.eos_token_id);
  j += "  \"torch_dtype\": \"" + torch_dtype + "\"\n}\n";
  return j;
}

}  // namespace loom
