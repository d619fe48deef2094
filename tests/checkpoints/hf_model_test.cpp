// Hugging Face model directories at the tensor level, for both families, with no model built:
// config.json read and written (and refused where Loom cannot represent it), Loom's names and
// fused tensors against Hugging Face's names and shapes (an independent description here), and
// round trips through files (single and sharded, f32 bitwise, bf16/f16 within their rounding).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "checkpoints/hf_config.h"
#include "checkpoints/hf_model.h"
#include "checkpoints/hf_tokenizer_files.h"
#include "core/base/check.h"
#include "core/base/dtype.h"
#include "core/base/file_io.h"
#include "core/model/layout.h"
#include "test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

GPTConfig llama_config(bool tied, bool qkv_bias) {
  GPTConfig c;
  c.family = Family::kLlama;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.n_embd = 32;
  c.intermediate_size = 48;
  c.vocab_size = 37;
  c.max_seq_len = 64;
  c.rope_theta = 500000.0f;
  c.norm_eps = 1e-6f;
  c.tie_embeddings = tied;
  c.qkv_bias = qkv_bias;
  return c;
}

GPTConfig gpt2_config() { return GPTConfig{3, 4, 32, 37, 16}; }

// Every tensor of the whole model's layout, with distinct random values.
LoomTensors random_tensors(const GPTConfig& c, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  LoomTensors t;
  for (const TensorSpec& spec : model_layout(c, 0, c.n_layer, true, true)) {
    t.shapes[spec.name] = spec.global.dims();
    std::vector<float>& v = t.values[spec.name];
    v.resize(static_cast<size_t>(spec.global.numel()));
    for (float& x : v) x = normal(gen);
  }
  return t;
}

std::vector<std::string> write_dir(const std::string& dir, const GPTConfig& c, const LoomTensors& t,
                                   HfWriteOptions options = {}) {
  fs::create_directories(dir);
  HfModelConfig hf;
  hf.model = c;
  hf.bos_token_id = 1;
  hf.eos_token_id = 2;
  return write_hf_model_dir(dir, hf, [&](const std::string& name) { return t.values.at(name).data(); }, options);
}

void expect_same(const LoomTensors& got, const LoomTensors& expected, float tolerance_of_one = 0) {
  ASSERT_EQ(got.values.size(), expected.values.size());
  for (const auto& [name, values] : expected.values) {
    ASSERT_TRUE(got.values.count(name)) << name;
    EXPECT_EQ(got.shapes.at(name), expected.shapes.at(name)) << name;
    const std::vector<float>& g = got.values.at(name);
    ASSERT_EQ(g.size(), values.size()) << name;
    for (size_t i = 0; i < g.size(); ++i) {
      const float bound = tolerance_of_one * std::fabs(values[i]);
      ASSERT_LE(std::fabs(g[i] - values[i]), bound) << name << " index " << i << " got " << g[i] << " expected "
                                                    << values[i] << " max error " << bound;
    }
  }
}

std::string user_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(HfConfigTest, ReadsEachArchitecture) {
  const HfModelConfig gpt2 = parse_hf_config(
      R"({"architectures": ["GPT2LMHeadModel"], "n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257,
          "n_positions": 1024, "layer_norm_epsilon": 1e-05, "n_inner": null, "activation_function": "gelu_new",
          "bos_token_id": 50256, "eos_token_id": 50256})",
      "gpt2/config.json");
  EXPECT_EQ(gpt2.model, (GPTConfig{12, 12, 768, 50257, 1024}));
  EXPECT_EQ(gpt2.eos_token_id, 50256);

  const HfModelConfig llama3 = parse_hf_config(
      R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "num_hidden_layers": 16,
          "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256,
          "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "head_dim": 64,
          "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                           "original_max_position_embeddings": 8192, "rope_type": "llama3"},
          "tie_word_embeddings": true, "attention_bias": false, "mlp_bias": false, "hidden_act": "silu",
          "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]})",
      "llama3/config.json");
  const GPTConfig& l = llama3.model;
  EXPECT_TRUE(l.llama());
  EXPECT_EQ(l.n_embd, 2048);
  EXPECT_EQ(l.n_layer, 16);
  EXPECT_EQ(l.kv_heads(), 8);
  EXPECT_EQ(l.mlp_hidden(), 8192);
  EXPECT_EQ(l.max_seq_len, 131072);
  EXPECT_EQ(l.rope_theta, 500000.0f);
  EXPECT_TRUE(l.tie_embeddings && l.rope_llama3 && !l.qkv_bias);
  EXPECT_EQ(l.rope_factor, 32.0f);
  EXPECT_EQ(l.rope_original_max_position, 8192);
  EXPECT_EQ(llama3.eos_token_id, 128001);

  const HfModelConfig qwen = parse_hf_config(
      R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 896, "num_hidden_layers": 24,
          "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936,
          "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
          "sliding_window": 32768, "use_sliding_window": false, "tie_word_embeddings": true, "hidden_act": "silu"})",
      "qwen/config.json");
  EXPECT_TRUE(qwen.model.qkv_bias);
  EXPECT_EQ(qwen.model.norm_eps, 1e-6f);

  const HfModelConfig mistral = parse_hf_config(
      R"({"architectures": ["MistralForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 1, "intermediate_size": 96, "vocab_size": 100,
          "max_position_embeddings": 256, "sliding_window": null})",
      "mistral/config.json");
  EXPECT_EQ(mistral.model.kv_heads(), 1);
  EXPECT_FALSE(mistral.model.tie_embeddings);
}

TEST(HfConfigTest, WrittenConfigReadsBackTheSameModel) {
  GPTConfig rope = llama_config(true, false);
  rope.rope_llama3 = true;
  rope.rope_factor = 32.0f;
  rope.rope_original_max_position = 8192;
  for (const GPTConfig& c : {gpt2_config(), llama_config(false, false), llama_config(true, true), rope}) {
    HfModelConfig hf;
    hf.model = c;
    hf.eos_token_id = 5;
    const std::string text = hf_config_json(hf, "bfloat16");
    const HfModelConfig back = parse_hf_config(text, "written/config.json");
    EXPECT_EQ(back.model, c) << text;
    EXPECT_EQ(back.eos_token_id, 5);
    EXPECT_FALSE(back.bos_token_id.has_value());
    EXPECT_NE(text.find("\"torch_dtype\": \"bfloat16\""), std::string::npos) << text;
    EXPECT_EQ(back.architecture, !c.llama() ? "GPT2LMHeadModel" : c.qkv_bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM");
  }
}

TEST(HfConfigTest, RefusesWhatLoomCannotRepresent) {
  const std::string llama =
      R"("hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48,
         "vocab_size": 37, "max_position_embeddings": 64)";
  const std::string gpt2 = R"("n_layer": 2, "n_head": 4, "n_embd": 32, "vocab_size": 37, "n_positions": 16)";
  const struct {
    std::string json, needle;
  } cases[] = {
      {R"({"architectures": ["BertForMaskedLM"]})", "names architecture \"BertForMaskedLM\", which Loom does not support"},
      {R"({"n_layer": 2})", "has no \"architectures\" list"},
      {"{\"architectures\": [\"GPT2LMHeadModel\"], " + gpt2 + ", \"layer_norm_epsilon\": 1e-6}",
       "\"layer_norm_epsilon\" is 1e-06 but Loom's GPT-2 uses 1e-5"},
      {"{\"architectures\": [\"GPT2LMHeadModel\"], " + gpt2 + ", \"activation_function\": \"relu\"}",
       "\"activation_function\" is \"relu\""},
      {"{\"architectures\": [\"GPT2LMHeadModel\"], " + gpt2 + ", \"n_inner\": 100}", "\"n_inner\" is 100"},
      {"{\"architectures\": [\"GPT2LMHeadModel\"], \"n_layer\": 2, \"n_head\": 4}", "has no field \"n_embd\""},
      {"{\"architectures\": [\"LlamaForCausalLM\"], " + llama + ", \"hidden_act\": \"gelu\"}", "\"hidden_act\" is \"gelu\""},
      {"{\"architectures\": [\"LlamaForCausalLM\"], " + llama + ", \"head_dim\": 16}", "\"head_dim\" is 16"},
      {"{\"architectures\": [\"LlamaForCausalLM\"], " + llama + ", \"attention_bias\": true}", "\"attention_bias\" is true"},
      {"{\"architectures\": [\"LlamaForCausalLM\"], " + llama + ", \"mlp_bias\": true}", "\"mlp_bias\" is true"},
      {"{\"architectures\": [\"LlamaForCausalLM\"], " + llama + ", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}}",
       "has rope_type \"linear\""},
      {"{\"architectures\": [\"LlamaForCausalLM\"], " + llama + ", \"num_key_value_heads\": 3}",
       "describes a model Loom cannot build: n_kv_head = 3 must divide n_head = 4"},
      {"{\"architectures\": [\"MistralForCausalLM\"], " + llama + ", \"sliding_window\": 16}", "\"sliding_window\" is 16"},
      {"{\"architectures\": [\"Qwen2ForCausalLM\"], " + llama + ", \"use_sliding_window\": true}", "\"use_sliding_window\" is true"},
      {"{\"architectures\": [\"LlamaForCausalLM\"], " + llama + ", \"vocab_size\": -3}", "\"vocab_size\" is -3"},
      {"{\"architectures\": [\"LlamaForCausalLM\"], " + llama + ", \"tie_word_embeddings\": \"yes\"}",
       "\"tie_word_embeddings\" is a string but must be true or false"},
      {"{\"architectures\": [\"LlamaForCausalLM\"]", "is not valid JSON"},
  };
  for (const auto& c : cases) {
    const std::string error = user_error_of([&] { parse_hf_config(c.json, "model/config.json"); });
    EXPECT_NE(error.find("model/config.json"), std::string::npos) << error;
    EXPECT_NE(error.find(c.needle), std::string::npos) << "expected \"" << c.needle << "\" in: " << error;
  }
}

// The names and shapes of transformers' LlamaForCausalLM state dict, written out independently
// of the mapping: q_proj (NH*HS, C), k_proj/v_proj (NKV*HS, C), gate/up (F, C), down (C, F).
TEST(HfTensorMapTest, LlamaNamesShapesAndRowsOfTheFusedTensors) {
  for (const bool tied : {false, true}) {
    for (const bool bias : {false, true}) {
      const GPTConfig c = llama_config(tied, bias);
      const int64_t C = 32, V = 37, Q = 4 * 8, KV = 2 * 8, F = 48;
      std::map<std::string, std::vector<int64_t>> expected = {{"model.embed_tokens.weight", {V, C}},
                                                              {"model.norm.weight", {C}}};
      if (!tied) expected["lm_head.weight"] = {V, C};
      for (int l = 0; l < 2; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        expected[p + "input_layernorm.weight"] = {C};
        expected[p + "post_attention_layernorm.weight"] = {C};
        expected[p + "self_attn.q_proj.weight"] = {Q, C};
        expected[p + "self_attn.k_proj.weight"] = {KV, C};
        expected[p + "self_attn.v_proj.weight"] = {KV, C};
        expected[p + "self_attn.o_proj.weight"] = {C, Q};
        if (bias) {
          expected[p + "self_attn.q_proj.bias"] = {Q};
          expected[p + "self_attn.k_proj.bias"] = {KV};
          expected[p + "self_attn.v_proj.bias"] = {KV};
        }
        expected[p + "mlp.gate_proj.weight"] = {F, C};
        expected[p + "mlp.up_proj.weight"] = {F, C};
        expected[p + "mlp.down_proj.weight"] = {C, F};
      }
      std::map<std::string, std::vector<int64_t>> got;
      for (const HfTensor& t : hf_tensor_map(c)) {
        got[t.hf_name] = t.hf_shape;
        EXPECT_FALSE(t.transposed) << t.hf_name;
        const std::map<std::string, std::pair<std::string, int64_t>> fused = {
            {"q_proj.weight", {"qkv_proj.weight", 0}},     {"k_proj.weight", {"qkv_proj.weight", Q}},
            {"v_proj.weight", {"qkv_proj.weight", Q + KV}}, {"v_proj.bias", {"qkv_proj.bias", Q + KV}},
            {"gate_proj.weight", {"gate_up_proj.weight", 0}}, {"up_proj.weight", {"gate_up_proj.weight", F}}};
        for (const auto& [suffix, where] : fused) {
          if (!t.hf_name.ends_with("." + suffix)) continue;
          const std::string stem = t.hf_name.substr(6, t.hf_name.size() - 6 - suffix.size());
          EXPECT_EQ(t.loom_name, stem + where.first) << t.hf_name;
          EXPECT_EQ(t.row_begin, where.second) << t.hf_name;
        }
      }
      EXPECT_EQ(got, expected) << "tied " << tied << " bias " << bias;
    }
  }
}

TEST(HfTensorMapTest, Gpt2NamesAndTransposedConv1D) {
  std::map<std::string, std::pair<std::vector<int64_t>, bool>> got;
  for (const HfTensor& t : hf_tensor_map(gpt2_config())) got[t.hf_name] = {t.hf_shape, t.transposed};
  EXPECT_EQ(got.size(), 2 + 12 * 3 + 2u);
  EXPECT_EQ(got.at("transformer.wte.weight").first, (std::vector<int64_t>{37, 32}));
  EXPECT_EQ(got.at("transformer.wpe.weight").first, (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(got.at("transformer.h.2.attn.c_attn.weight"), std::make_pair(std::vector<int64_t>{32, 96}, true));
  EXPECT_EQ(got.at("transformer.h.0.mlp.c_proj.weight"), std::make_pair(std::vector<int64_t>{128, 32}, true));
  EXPECT_EQ(got.at("transformer.h.1.mlp.c_fc.bias"), std::make_pair(std::vector<int64_t>{128}, false));
  EXPECT_EQ(got.count("lm_head.weight"), 0u);
}

// The fused tensors' rows land in the right Hugging Face tensors, read straight from the files.
TEST(HfModelDirTest, FusedTensorsSplitIntoHuggingFaceRows) {
  TempDir dir("hf_split");
  const GPTConfig c = llama_config(false, true);
  const LoomTensors t = random_tensors(c, 3);
  write_dir(dir.str(), c, t);
  const SafetensorsFile file(dir / "model.safetensors");
  const int64_t C = 32, Q = 32, KV = 16, F = 48;
  auto rows_equal = [&](const std::string& hf, const std::string& loom, int64_t row0, int64_t rows, int64_t cols) {
    const std::vector<float> got = file.read_f32(*file.find(hf));
    const std::vector<float>& fused = t.values.at(loom);
    ASSERT_EQ(got.size(), static_cast<size_t>(rows * cols)) << hf;
    for (int64_t i = 0; i < rows * cols; ++i) {
      ASSERT_EQ(got[static_cast<size_t>(i)], fused[static_cast<size_t>(row0 * cols + i)]) << hf << " element " << i;
    }
  };
  rows_equal("model.layers.1.self_attn.q_proj.weight", "layers.1.self_attn.qkv_proj.weight", 0, Q, C);
  rows_equal("model.layers.1.self_attn.k_proj.weight", "layers.1.self_attn.qkv_proj.weight", Q, KV, C);
  rows_equal("model.layers.1.self_attn.v_proj.weight", "layers.1.self_attn.qkv_proj.weight", Q + KV, KV, C);
  rows_equal("model.layers.0.self_attn.k_proj.bias", "layers.0.self_attn.qkv_proj.bias", Q, KV, 1);
  rows_equal("model.layers.0.mlp.gate_proj.weight", "layers.0.mlp.gate_up_proj.weight", 0, F, C);
  rows_equal("model.layers.0.mlp.up_proj.weight", "layers.0.mlp.gate_up_proj.weight", F, F, C);
  rows_equal("lm_head.weight", "lm_head.weight", 0, 37, C);
  EXPECT_EQ(file.metadata().at("format"), "pt");
}

TEST(HfModelDirTest, RoundTripsAreBitwiseSingleAndSharded) {
  GPTConfig rope = llama_config(true, false);
  rope.rope_llama3 = true;
  for (const GPTConfig& c : {gpt2_config(), llama_config(false, false), llama_config(true, true), rope}) {
    for (const uint64_t shard : {kHfDefaultMaxShardBytes, uint64_t{4000}}) {
      TempDir dir("hf_roundtrip");
      const LoomTensors t = random_tensors(c, 5);
      HfWriteOptions options;
      options.max_shard_bytes = shard;
      const std::vector<std::string> files = write_dir(dir.str(), c, t, options);
      const bool sharded = shard < kHfDefaultMaxShardBytes;
      EXPECT_EQ(fs::exists(dir / kHfIndexName), sharded);
      EXPECT_EQ(fs::exists(dir / kHfSingleFileName), !sharded);
      if (sharded) {
        EXPECT_GT(files.size(), 3u);
        for (const std::string& f : files) {
          if (!f.starts_with("model-")) continue;
          // At most the limit of tensor bytes, unless one tensor alone is larger.
          const SafetensorsFile shard_file(dir / f);
          uint64_t bytes = 0;
          for (const SafetensorsFile::Entry& e : shard_file.tensors()) bytes += e.end - e.begin;
          EXPECT_TRUE(shard_file.tensors().size() == 1 || bytes <= 4000u) << f << ": " << bytes << " bytes";
        }
      }
      EXPECT_TRUE(is_hf_model_dir(dir.str()));
      const HfModelDir hf(dir.str());
      EXPECT_EQ(hf.config().model, c);
      EXPECT_EQ(hf.config().bos_token_id, 1);
      expect_same(hf.read_tensors(), t);
    }
  }
}

TEST(HfModelDirTest, HalfPrecisionExportsRoundToNearestEven) {
  const GPTConfig c = llama_config(false, true);
  const LoomTensors t = random_tensors(c, 9);
  for (const StoredDType dtype : {StoredDType::kBF16, StoredDType::kF16}) {
    TempDir dir("hf_half");
    HfWriteOptions options;
    options.dtype = dtype;
    write_dir(dir.str(), c, t, options);
    const std::string config = read_file(dir / kHfConfigName, "config");
    EXPECT_NE(config.find(dtype == StoredDType::kBF16 ? "\"bfloat16\"" : "\"float16\""), std::string::npos) << config;
    LoomTensors rounded = t;
    for (auto& [name, values] : rounded.values) {
      for (float& v : values) {
        v = dtype == StoredDType::kBF16 ? bf16_to_float(float_to_bf16(v)) : f16_to_f32(f32_to_f16(v));
      }
    }
    const LoomTensors back = HfModelDir(dir.str()).read_tensors();
    expect_same(back, rounded);  // exactly the rounded values
    expect_same(back, t, dtype == StoredDType::kBF16 ? std::ldexp(1.0f, -8) : std::ldexp(1.0f, -11));
  }
}

TEST(HfModelDirTest, AcceptsNamesWithoutPrefixAndIgnoresBuffers) {
  TempDir dir("hf_prefix");
  const GPTConfig c = llama_config(true, false);
  const LoomTensors t = random_tensors(c, 4);
  std::vector<SafetensorsOutput> outputs;
  for (const HfTensor& h : hf_tensor_map(c)) {
    SafetensorsOutput o;
    o.name = h.hf_name.substr(6);  // LlamaModel's names: no "model."
    o.shape = h.hf_shape;
    const float* src = t.values.at(h.loom_name).data() + h.row_begin * (h.hf_shape.size() == 2 ? h.hf_shape[1] : 1);
    const size_t n = static_cast<size_t>(h.rows * (h.hf_shape.size() == 2 ? h.hf_shape[1] : 1));
    o.fill = [src, n](float* dest) { std::copy(src, src + n, dest); };
    outputs.push_back(o);
  }
  SafetensorsOutput buffer;
  buffer.name = "layers.0.self_attn.rotary_emb.inv_freq";
  buffer.shape = {4};
  buffer.fill = [](float* dest) { std::fill(dest, dest + 4, 1.0f); };
  outputs.push_back(buffer);
  HfModelConfig hf;
  hf.model = c;
  write_file_durably(dir / kHfConfigName, hf_config_json(hf, "float32"));
  write_safetensors(dir / kHfSingleFileName, outputs, {});
  expect_same(HfModelDir(dir.str()).read_tensors(), t);
}

TEST(HfTokenizerFilesTest, CountsTheVocabularyAndFindsTheFiles) {
  TempDir dir("hf_tokenizer");
  EXPECT_FALSE(hf_tokenizer_vocab_size(dir.str()).has_value());
  write_file_durably(dir / "vocab.json", R"({"a": 0, "b": 1, "c": 7})");
  EXPECT_EQ(hf_tokenizer_vocab_size(dir.str()), 8);
  write_file_durably(dir / "tokenizer.json",
                     R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 3}}, "added_tokens": [{"id": 40, "content": "<s>"}]})");
  EXPECT_EQ(hf_tokenizer_vocab_size(dir.str()), 41);
  write_file_durably(dir / "generation_config.json", R"({"bos_token_id": 1, "eos_token_id": [2, 3]})");
  const TokenIds ids = hf_generation_token_ids(dir.str());
  EXPECT_EQ(ids.bos, 1);
  EXPECT_EQ(ids.eos, 2);
  EXPECT_EQ(hf_tokenizer_files_in(dir.str()),
            (std::vector<std::string>{"tokenizer.json", "vocab.json", "generation_config.json"}));
  write_file_durably(dir / "tokenizer.json", "{");
  EXPECT_NE(user_error_of([&] { hf_tokenizer_vocab_size(dir.str()); }).find("tokenizer.json is not valid JSON"),
            std::string::npos);
}

}  // namespace
}  // namespace loom
