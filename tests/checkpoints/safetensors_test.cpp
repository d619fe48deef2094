// Safetensors files in Hugging Face's GPT-2 naming: the round trip is bitwise, the layout is HF's
// (checked against an independent description here and by PyTorch's logits), half-precision and
// GPT2LMHeadModel files import, and every malformed file is a UserError naming the file and tensor.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "checkpoints/hf_gpt2.h"
#include "checkpoints/safetensors.h"
#include "core/base/check.h"
#include "core/base/dtype.h"
#include "core/gpt.h"
#include "reference/safetensors_logits.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::TempDir;

const GPTConfig kModel{3, 4, 32, 37, 16};  // several layers and heads, odd vocabulary

// Random weights, with biases and LayerNorm parameters moved away from 0 and 1.
void randomize(GPT& model, uint64_t seed) {
  model.init_weights(seed);
  std::mt19937 gen(static_cast<uint32_t>(seed));
  std::normal_distribution<float> noise(0.0f, 0.1f);
  for (Parameter& p : model.parameters()) {
    if (!p.decay) {
      for (int64_t i = 0; i < p.value.numel(); ++i) p.value.f32()[i] += noise(gen);
    }
  }
}

struct FileTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// GPT2Model's tensors for a one-rank Loom model, derived here from HF's conventions alone:
// embeddings get ".weight", every other matrix is a Conv1D weight stored (in, out).
std::vector<FileTensor> hf_tensors(const GPT& model) {
  std::vector<FileTensor> out;
  for (const Parameter& p : model.parameters()) {
    const bool embedding = p.name == "wte" || p.name == "wpe";
    FileTensor t{embedding ? p.name + ".weight" : p.name, p.global_shape.dims(), {}};
    const float* v = p.value.f32();
    if (!embedding && t.shape.size() == 2) {
      const int64_t rows = t.shape[0], cols = t.shape[1];
      t.shape = {cols, rows};
      for (int64_t c = 0; c < cols; ++c) {
        for (int64_t r = 0; r < rows; ++r) t.values.push_back(v[r * cols + c]);
      }
    } else {
      t.values.assign(v, v + p.value.numel());
    }
    out.push_back(std::move(t));
  }
  return out;
}

uint16_t bf16_bits(float x) { return static_cast<uint16_t>(std::bit_cast<uint32_t>(x) >> 16); }

// Exact binary16 of a value that has one (normal or zero); the tests only use such values.
uint16_t f16_bits(float x) {
  const uint32_t b = std::bit_cast<uint32_t>(x);
  const uint32_t sign = (b >> 16) & 0x8000u;
  if ((b & 0x7fffffffu) == 0) return static_cast<uint16_t>(sign);
  const int exponent = static_cast<int>((b >> 23) & 0xffu) - 127 + 15;
  EXPECT_TRUE(exponent > 0 && exponent < 31 && (b & 0x1fffu) == 0) << x << " is not exact in binary16";
  return static_cast<uint16_t>(sign | static_cast<uint32_t>(exponent) << 10 | ((b >> 13) & 0x3ffu));
}

std::string raw_file(const std::string& header, const std::string& data) {
  const uint64_t n = header.size();
  std::string bytes(reinterpret_cast<const char*>(&n), 8);
  return bytes + header + data;
}

// A safetensors file of `tensors` in `dtype`, names prefixed by `prefix`, with metadata
// `metadata_json` (the members of __metadata__, "" for none).
std::string encode(const std::vector<FileTensor>& tensors, const std::string& metadata_json,
                   const std::string& dtype = "F32", const std::string& prefix = "") {
  std::string header = "{", data;
  if (!metadata_json.empty()) header += "\"__metadata__\": {" + metadata_json + "}";
  for (const FileTensor& t : tensors) {
    const size_t begin = data.size();
    for (float x : t.values) {
      if (dtype == "F32") {
        data.append(reinterpret_cast<const char*>(&x), 4);
      } else {
        const uint16_t h = dtype == "BF16" ? bf16_bits(x) : f16_bits(x);
        data.append(reinterpret_cast<const char*>(&h), 2);
      }
    }
    std::string shape;
    for (size_t d = 0; d < t.shape.size(); ++d) shape += (d ? ", " : "") + std::to_string(t.shape[d]);
    header += std::string(header.size() > 1 ? ", " : "") + "\"" + prefix + t.name + "\": {\"dtype\": \"" + dtype +
              "\", \"shape\": [" + shape + "], \"data_offsets\": [" + std::to_string(begin) + ", " +
              std::to_string(data.size()) + "]}";
  }
  return raw_file(header + "}", data);
}

std::string write(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir / name;
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

// What `loom ckpt import` does with a file: shape, model, tensors.
std::unique_ptr<GPT> import_model(const std::string& path, int n_head = 0) {
  const SafetensorsFile file(path);
  auto model = std::make_unique<GPT>(hf_gpt2_config_of(file, n_head));
  load_hf_gpt2(file, *model);
  return model;
}

template <typename F>
void expect_user_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no UserError; expected one mentioning " << ::testing::PrintToString(needles);
  } catch (const UserError& e) {
    for (const std::string& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

void expect_same_parameters(const GPT& got, const GPT& expected) {
  ASSERT_EQ(got.parameters().size(), expected.parameters().size());
  for (size_t i = 0; i < got.parameters().size(); ++i) {
    const Parameter& a = got.parameters()[i];
    const Parameter& b = expected.parameters()[i];
    ASSERT_EQ(a.name, b.name);
    ASSERT_EQ(a.value.numel(), b.value.numel()) << a.name;
    for (int64_t j = 0; j < a.value.numel(); ++j) {
      ASSERT_EQ(std::bit_cast<uint32_t>(a.value.f32()[j]), std::bit_cast<uint32_t>(b.value.f32()[j]))
          << a.name << " index " << j << ": got " << a.value.f32()[j] << " expected " << b.value.f32()[j];
    }
  }
}

TEST(SafetensorsTest, RoundTripIsBitwise) {
  TempDir dir("safetensors_roundtrip");
  GPT model(kModel);
  randomize(model, 7);
  save_hf_gpt2(dir / "model.safetensors", model);
  const SafetensorsFile file(dir / "model.safetensors");
  EXPECT_EQ(hf_gpt2_config_of(file), kModel);
  GPT back(kModel);
  load_hf_gpt2(file, back);
  expect_same_parameters(back, model);
}

TEST(SafetensorsTest, HuggingFaceNamesShapesAndMetadata) {
  TempDir dir("safetensors_layout");
  GPT model(kModel);
  randomize(model, 8);
  save_hf_gpt2(dir / "model.safetensors", model);
  const SafetensorsFile file(dir / "model.safetensors");
  const std::vector<FileTensor> expected = hf_tensors(model);
  ASSERT_EQ(file.tensors().size(), expected.size());  // no lm_head: tied to wte, as in GPT2Model
  for (const FileTensor& t : expected) {
    const SafetensorsFile::Entry* e = file.find(t.name);
    ASSERT_NE(e, nullptr) << t.name;
    EXPECT_EQ(e->dtype, "F32") << t.name;
    EXPECT_EQ(e->shape, t.shape) << t.name;
    EXPECT_EQ(file.read_f32(*e), t.values) << t.name;
  }
  const SafetensorsFile::Entry* c_attn = file.find("h.0.attn.c_attn.weight");
  ASSERT_NE(c_attn, nullptr);
  EXPECT_EQ(c_attn->shape, (std::vector<int64_t>{32, 96}));  // (in, out) = (C, 3C)
  const std::map<std::string, std::string> metadata = {{"format", "pt"},      {"n_head", "4"},
                                                       {"n_layer", "3"},      {"n_embd", "32"},
                                                       {"vocab_size", "37"}, {"n_positions", "16"}};
  EXPECT_EQ(file.metadata(), metadata);
}

TEST(SafetensorsTest, LogitsMatchPyTorchReadingTheFile) {
  TempDir dir("safetensors_logits");
  GPT model(kModel);
  randomize(model, 9);
  save_hf_gpt2(dir / "model.safetensors", model);
  const int B = 2, T = 11;
  const std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(B) * T, 4, 0, kModel.vocab_size);
  const std::vector<float> ref = testing::torch_logits_of(dir / "model.safetensors", tokens, B, T, kModel.vocab_size, dir);
  ASSERT_FALSE(ref.empty());
  EXPECT_TRUE(testing::all_close(testing::loom_logits_of(model, tokens, B, T), ref, 1e-4, 1e-4));
}

TEST(SafetensorsTest, ImportsLmHeadModelNamesBf16AndIgnoresBuffers) {
  TempDir dir("safetensors_bf16");
  GPT model(kModel);
  randomize(model, 10);
  std::vector<FileTensor> tensors = hf_tensors(model);
  tensors.push_back({"lm_head.weight", {37, 32}, tensors[0].values});
  for (int l = 0; l < kModel.n_layer; ++l) {
    tensors.push_back({"h." + std::to_string(l) + ".attn.bias", {1, 1, 16, 16}, std::vector<float>(256, 1.0f)});
    tensors.push_back({"h." + std::to_string(l) + ".attn.masked_bias", {}, {-1e4f}});
  }
  // GPT2LMHeadModel's names: everything but lm_head under "transformer.".
  std::string bytes = encode(tensors, "", "BF16", "transformer.");
  const std::string lm_head = "\"transformer.lm_head.weight\"";
  const std::string plain = "\"lm_head.weight\"";
  bytes.replace(bytes.find(lm_head), lm_head.size(), plain + std::string(lm_head.size() - plain.size(), ' '));
  const std::string path = write(dir, "lm_head_bf16.safetensors", bytes);
  expect_user_error([&] { import_model(path); }, {path, "n_head"});  // no metadata: must be given
  std::unique_ptr<GPT> back = import_model(path, 4);
  // Expected: the model's values rounded down to bfloat16.
  for (Parameter& p : model.parameters()) {
    for (int64_t i = 0; i < p.value.numel(); ++i) p.value.f32()[i] = bf16_to_f32(bf16_bits(p.value.f32()[i]));
  }
  expect_same_parameters(*back, model);
}

TEST(SafetensorsTest, ImportsF16) {
  TempDir dir("safetensors_f16");
  GPT model(kModel);
  std::mt19937 gen(3);
  std::uniform_int_distribution<int> k(-1023, 1023);
  for (Parameter& p : model.parameters()) {
    for (int64_t i = 0; i < p.value.numel(); ++i) p.value.f32()[i] = static_cast<float>(k(gen)) / 1024.0f;
  }
  const std::string path = write(dir, "f16.safetensors", encode(hf_tensors(model), "\"n_head\": \"4\"", "F16"));
  expect_same_parameters(*import_model(path), model);
}

TEST(SafetensorsTest, HalfPrecisionConversions) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::signbit(f16_to_f32(0x8000)) && f16_to_f32(0x8000) == 0.0f);
  EXPECT_EQ(f16_to_f32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc0a0), -5.0f);
}

// Every f16 value converts back to itself; the values between two neighbours round to the nearest,
// ties to the even one, as IEEE's round-to-nearest-even (and numpy's astype(float16)) do.
TEST(SafetensorsTest, F32ToF16RoundsToNearestEven) {
  for (uint32_t bits = 0; bits < 0x10000u; ++bits) {
    const auto h = static_cast<uint16_t>(bits);
    const float f = f16_to_f32(h);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f)))) << "NaN " << bits;
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), h) << "f16 bits " << bits << " value " << f;
    // The midpoint to the next value up (same sign) goes to the one with an even last bit.
    const uint16_t up = static_cast<uint16_t>(h + 1);
    if ((h & 0x7fffu) >= 0x7bffu) continue;  // 65504 and above: handled below
    const double mid = (static_cast<double>(f) + static_cast<double>(f16_to_f32(up))) / 2;
    const float midf = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(midf), mid) << "the midpoint is a float";
    ASSERT_EQ(f32_to_f16(midf), (h & 1u) ? up : h) << "tie after bits " << bits;
    ASSERT_EQ(f32_to_f16(std::nextafter(midf, 0.0f)), h) << "below the midpoint after bits " << bits;
    ASSERT_EQ(f32_to_f16(std::nextafter(midf, 2 * midf)), up) << "above the midpoint after bits " << bits;
  }
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);  // below the midpoint of 65504 and 65536
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // the tie goes to "65536": infinity
  EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);             // half the smallest subnormal: tie to 0
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
}

TEST(SafetensorsTest, WritesBf16AndF16RoundedToNearestEven) {
  TempDir dir("safetensors_half_write");
  const std::vector<float> values = {1.0f, -2.5f, 1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -11),
                                     3.14159265f, -1e-6f, 70000.0f, 0.0f};
  for (const StoredDType dtype : {StoredDType::kBF16, StoredDType::kF16}) {
    const std::string path = dir / (std::string(safetensors_dtype_name(dtype)) + ".safetensors");
    SafetensorsOutput t;
    t.name = "x";
    t.shape = {2, 4};
    t.fill = [&](float* dest) { std::memcpy(dest, values.data(), values.size() * 4); };
    write_safetensors(path, {t}, {{"format", "pt"}}, dtype);
    const SafetensorsFile file(path);
    ASSERT_EQ(file.tensors().size(), 1u);
    EXPECT_EQ(file.tensors()[0].dtype, safetensors_dtype_name(dtype));
    EXPECT_EQ(file.tensors()[0].end - file.tensors()[0].begin, values.size() * 2);
    const std::vector<float> back = file.read_f32(file.tensors()[0]);
    for (size_t i = 0; i < values.size(); ++i) {
      const float expected = dtype == StoredDType::kBF16 ? bf16_to_float(float_to_bf16(values[i]))
                                                         : f16_to_f32(f32_to_f16(values[i]));
      EXPECT_EQ(back[i], expected) << safetensors_dtype_name(dtype) << " index " << i << " of " << values[i];
    }
  }
  // 1 + 2^-8 is a bf16 tie: it rounds to the even 1.0; 1 + 3 * 2^-11 an f16 tie: to 1 + 2^-9.
  EXPECT_EQ(bf16_to_float(float_to_bf16(values[2])), 1.0f);
  EXPECT_EQ(f16_to_f32(f32_to_f16(values[3])), 1.0f + std::ldexp(1.0f, -9));
  EXPECT_EQ(stored_dtype_of("bf16", "--dtype"), StoredDType::kBF16);
  EXPECT_THROW(stored_dtype_of("fp8", "--dtype"), UserError);
}

TEST(SafetensorsTest, MalformedFilesNameTheFileAndTensor) {
  TempDir dir("safetensors_malformed");
  GPT model(kModel);
  randomize(model, 11);
  const std::vector<FileTensor> tensors = hf_tensors(model);
  const std::string meta = "\"n_head\": \"4\"";
  const std::string good = encode(tensors, meta);
  const std::string f32_pair = "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}";
  struct Case {
    std::string label, bytes;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"empty", "", {"fewer than the 8"}},
      {"short", "abc", {"fewer than the 8"}},
      {"truncated", good.substr(0, good.size() / 2), {"tensor \"", "outside the data buffer"}},
      {"header_length_beyond_file", raw_file("{}", "").replace(0, 1, "\xff"), {"header length", "runs past the end"}},
      {"huge_header_length", std::string(8, '\xff') + "{}", {"runs past the end"}},
      {"bad_json", raw_file("{\"a\": {\"dtype\": ", ""), {"corrupt header", "byte offset"}},
      {"not_an_object", raw_file("[1, 2]", ""), {"an array instead of an object"}},
      {"offsets_beyond_buffer", raw_file(f32_pair, std::string(4, '\0')), {"\"a\"", "data_offsets [0, 8)", "4 bytes"}},
      {"offsets_reversed", raw_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 0]}}", std::string(8, '\0')),
       {"\"a\"", "data_offsets"}},
      {"offset_past_int64", raw_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 18446744073709551615]}}", ""),
       {"\"a\"", "not non-negative integers"}},
      {"negative_offset", raw_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [-8, 0]}}", ""), {"\"a\""}},
      {"size_not_dtype_times_shape", raw_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", std::string(8, '\0')),
       {"\"a\"", "holds 8 bytes", "imply 12"}},
      {"huge_shape", raw_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [1099511627776, 1099511627776], \"data_offsets\": [0, 0]}}", ""),
       {"\"a\"", "too large"}},
      {"negative_shape", raw_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 0]}}", ""), {"\"a\"", "shape"}},
      {"unknown_dtype", raw_file("{\"a\": {\"dtype\": \"Q7\", \"shape\": [2], \"data_offsets\": [0, 8]}}", std::string(8, '\0')),
       {"\"a\"", "unknown dtype"}},
      {"missing_offsets", raw_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2]}}", std::string(8, '\0')), {"\"a\"", "data_offsets"}},
      {"listed_twice", raw_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
                                "\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                                std::string(8, '\0')),
       {"\"a\"", "listed twice"}},
      {"metadata_not_string", raw_file("{\"__metadata__\": {\"n_head\": 4}}", ""), {"__metadata__", "n_head"}},
      {"not_gpt2", raw_file(f32_pair, std::string(8, '\0')), {"wte.weight"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string path = write(dir, c.label + ".safetensors", c.bytes);
    std::vector<std::string> needles = c.needles;
    needles.push_back(path);
    expect_user_error([&] { import_model(path); }, needles);
  }

  // Well-formed files that are not this GPT-2.
  auto without = [&](const std::string& name) {
    std::vector<FileTensor> t;
    for (const FileTensor& x : tensors) {
      if (x.name != name) t.push_back(x);
    }
    return t;
  };
  auto changed = [&](const std::string& name, std::vector<int64_t> shape, const std::string& new_name = "") {
    std::vector<FileTensor> t = tensors;
    for (FileTensor& x : t) {
      if (x.name == name) {
        x.shape = shape;
        if (!new_name.empty()) x.name = new_name;
      }
    }
    return t;
  };
  std::vector<FileTensor> extra = tensors;
  extra.push_back({"h.4.ln_1.bias", {32}, std::vector<float>(32, 0.0f)});  // a gap: no h.3
  const std::vector<Case> models = {
      {"missing_tensor", encode(without("h.1.mlp.c_fc.bias"), meta), {"\"h.1.mlp.c_fc.bias\"", "has no tensor"}},
      {"loom_layout_not_conv1d", encode(changed("h.2.mlp.c_fc.weight", {128, 32}), meta),
       {"\"h.2.mlp.c_fc.weight\"", "(128, 32)", "expects (32, 128)"}},
      {"unexpected_tensor", encode(extra, meta), {"\"h.4.ln_1.bias\"", "not part of a GPT-2"}},
      {"wpe_width", encode(changed("wpe.weight", {32, 16}), meta), {"\"wpe.weight\"", "(32, 16)"}},
      {"metadata_disagrees", encode(tensors, meta + ", \"n_layer\": \"2\""), {"n_layer = 2", "imply 3"}},
      {"metadata_not_a_number", encode(tensors, "\"n_head\": \"four\""), {"n_head", "positive integer"}},
      {"heads_do_not_divide", encode(tensors, "\"n_head\": \"5\""), {"cannot build", "n_head"}},
  };
  for (const Case& c : models) {
    SCOPED_TRACE(c.label);
    const std::string path = write(dir, c.label + ".safetensors", c.bytes);
    std::vector<std::string> needles = c.needles;
    needles.push_back(path);
    expect_user_error([&] { import_model(path); }, needles);
  }
  // Bounds are fine, but Loom reads floating-point tensors only.
  const std::string ints = write(dir, "i32.safetensors",
                                 raw_file("{\"a\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                                          std::string(8, '\0')));
  expect_user_error([&] { SafetensorsFile f(ints); f.read_f32(*f.find("a")); }, {ints, "\"a\"", "I32"});
  // A head count given that the metadata contradicts.
  const std::string path = write(dir, "good.safetensors", good);
  expect_user_error([&] { import_model(path, 2); }, {path, "n_head = 4", "2 was given"});
  expect_user_error([&] { SafetensorsFile f(dir / "absent.safetensors"); }, {"absent.safetensors"});
}

}  // namespace
}  // namespace loom
