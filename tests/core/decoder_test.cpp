// The KV-cache decoder on a bf16 model (CpuBackend's emulation of the GPU's rounding points): its
// logits against the bf16 model's full forward at every position, and generation that is
// deterministic. (The fp32 decoder against the fp32 forward: tests/core/gpt_test.cpp.)
//
// The tolerance against the forward, derived. Both paths run the same backend ops on the same
// bf16 weights and round to bf16 at the same points (every op's output), so they can differ only
// where the f32 value before a rounding differs: the matmuls see (B, C) inputs instead of
// (B x T, C) ones and the attention is attention_decode instead of the tiled forward, which may
// sum in another order (~1e-7 relative in f32). Such a difference changes a bf16 rounding only for
// a value within ~1e-7 of a rounding boundary, and then by one bf16 ulp (2u, u = 2^-9). A flip of
// a logit's own rounding moves it by 2u |logit|; a flip upstream moves one of C = 64 inputs of a
// dot product by 2u of its size, which moves a logit by at most 2u of the row's largest logit.
// Asserted elementwise: |got - want| <= 2u |want| + 2u max |want| (measured: bitwise equal).
#include "core/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "core/backend/cpu_backend.h"
#include "core/gpt.h"
#include "test_util.h"

namespace loom {
namespace {

constexpr double kU = 1.0 / 512;  // bf16's unit roundoff

const GPTConfig kConfig{2, 4, 64, 53, 16};

// A model of `config` on `backend`, initialised from `seed`.
std::unique_ptr<GPT> make_model(Backend& backend, uint64_t seed, const GPTConfig& config = kConfig) {
  ModelParallel layout;
  layout.backend = &backend;
  auto model = std::make_unique<GPT>(config, layout);
  model->init_weights(seed);
  return model;
}

// The decoder's logits for tokens (B, T), position by position: (B, T, V).
std::vector<float> decoded_logits(const GPT& model, const std::vector<int32_t>& tokens, int B, int T) {
  const int V = model.config().vocab_size;
  Decoder decoder(model, B);
  std::vector<float> all(static_cast<size_t>(B) * T * V);
  std::vector<int32_t> column(static_cast<size_t>(B));
  for (int t = 0; t < T; ++t) {
    for (int b = 0; b < B; ++b) column[static_cast<size_t>(b)] = tokens[static_cast<size_t>(b * T + t)];
    const float* step = decoder.step(column.data());
    for (int b = 0; b < B; ++b) {
      std::memcpy(all.data() + (static_cast<size_t>(b) * T + t) * V, step + static_cast<size_t>(b) * V,
                  static_cast<size_t>(V) * sizeof(float));
    }
  }
  return all;
}

// The full forward's logits (B, T, V), widened to f32.
std::vector<float> forward_logits(GPT& model, const std::vector<int32_t>& tokens, int B, int T) {
  model.forward(tokens.data(), nullptr, B, T);
  const Tensor view = model.logits_view();
  Tensor wide = Tensor::zeros(view.shape(), DType::kF32);
  CpuBackend().copy(wide, view);
  return std::vector<float>(wide.f32(), wide.f32() + wide.numel());
}

TEST(DecoderTest, Bf16LogitsEqualTheBf16ForwardAtEveryPosition) {
  CpuBackend backend(Precision::kBF16);
  const std::unique_ptr<GPT> model = make_model(backend, 9);
  const int B = 3, T = kConfig.max_seq_len, V = kConfig.vocab_size;
  const std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(B) * T, 1, 0, V);
  // Decoded first, so that the decoder itself must bring the bf16 compute weights up to date
  // after init_weights (a forward would otherwise have done it).
  const std::vector<float> got = decoded_logits(*model, tokens, B, T);
  const std::vector<float> want = forward_logits(*model, tokens, B, T);
  double largest = 0;
  for (float x : want) largest = std::max(largest, static_cast<double>(std::fabs(x)));
  EXPECT_TRUE(testing::all_close(got, want, 2 * kU, 2 * kU * largest));

  // It is bf16: the fp32 model of the same weights decodes other logits, each op's output rounded
  // to 8 significant bits (measured: 2.4u apart norm-wise, where two fp32 paths differ by ~1e-6).
  // 20u allows an error of ~u per op of the two blocks and the head.
  CpuBackend fp32;
  const std::vector<float> fp32_logits = decoded_logits(*make_model(fp32, 9), tokens, B, T);
  const double apart = testing::relative_l2(got, fp32_logits);
  EXPECT_GT(apart, 1e-4) << "the bf16 decoder computes what fp32 does: is it rounding?";
  EXPECT_LT(apart, 20 * kU) << "the bf16 decoder is not the same model as the fp32 one";
}

// A Llama (grouped-query attention, rotary positions from the step's position, untied lm_head,
// q/k/v biases): the decoder's logits are the full forward's at every position, in fp32 to f32
// rounding and in bf16 to bf16's (the same rounding points as GPT-2's decoder).
TEST(DecoderTest, LlamaLogitsEqualTheForwardAtEveryPosition) {
  GPTConfig llama = kConfig;
  llama.family = Family::kLlama;
  llama.n_kv_head = 2;
  llama.intermediate_size = 96;
  llama.qkv_bias = true;
  llama.rope_theta = 500.0f;  // fast rotations over 16 positions
  const int B = 3, T = llama.max_seq_len, V = llama.vocab_size;
  const std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(B) * T, 5, 0, V);
  for (Precision precision : {Precision::kF32, Precision::kBF16}) {
    SCOPED_TRACE(precision == Precision::kF32 ? "fp32" : "bf16");
    CpuBackend backend(precision);
    const std::unique_ptr<GPT> model = make_model(backend, 12, llama);
    // Biases start at zero: give them values, so that their path is exercised.
    for (Parameter& p : model->parameters()) {
      if (p.name.find("qkv_proj.bias") != std::string::npos) {
        for (int64_t i = 0; i < p.value.numel(); ++i) p.value.f32()[i] = 0.01f * static_cast<float>(i % 7);
      }
    }
    const std::vector<float> got = decoded_logits(*model, tokens, B, T);
    const std::vector<float> want = forward_logits(*model, tokens, B, T);
    double largest = 0;
    for (float x : want) largest = std::max(largest, static_cast<double>(std::fabs(x)));
    if (precision == Precision::kF32) {
      EXPECT_LE(testing::relative_l2(got, want), 1e-5);
    } else {
      EXPECT_TRUE(testing::all_close(got, want, 2 * kU, 2 * kU * largest));
    }
  }
}

// Top-p keeps the fewest most likely tokens reaching p; stop tokens and the stop predicate end a
// sample (keeping the stop token), the others go on.
TEST(DecoderTest, TopPAndStopping) {
  const std::vector<float> logits = {0.0f, 3.0f, 2.9f, -1.0f, 1.0f};  // probabilities ~ .03 .49 .44 .01 .07
  for (int i = 0; i < 100; ++i) {
    const int32_t t = sample_token(logits.data(), 5, 1.0f, 0, static_cast<float>(i) / 100.0f, 0.5f);
    EXPECT_TRUE(t == 1 || t == 2) << "top-p 0.5 keeps the two most likely, got " << t;
    EXPECT_EQ(sample_token(logits.data(), 5, 1.0f, 0, static_cast<float>(i) / 100.0f, 0.4f), 1);
  }
  CpuBackend backend;
  const std::unique_ptr<GPT> model = make_model(backend, 4);
  const std::vector<int32_t> prompt = {3, 14, 15};
  SamplingSettings greedy;
  const std::vector<int32_t> free_run = generate_tokens(*model, prompt, 8, 1, greedy)[0];
  ASSERT_EQ(free_run.size(), 8u);
  SamplingSettings stopping = greedy;
  stopping.stop_tokens = {free_run[2]};
  const std::vector<int32_t> stopped = generate_tokens(*model, prompt, 8, 1, stopping)[0];
  const auto first = std::find(free_run.begin(), free_run.end(), free_run[2]);
  EXPECT_EQ(stopped, std::vector<int32_t>(free_run.begin(), first + 1)) << "ends at the first stop token, kept";
  SamplingSettings predicate = greedy;
  predicate.stop = [](int sample, const std::vector<int32_t>& tokens) { return sample == 0 && tokens.size() == 3; };
  const std::vector<std::vector<int32_t>> two = generate_tokens(*model, prompt, 8, 2, predicate);
  EXPECT_EQ(two[0], std::vector<int32_t>(free_run.begin(), free_run.begin() + 3));
  EXPECT_EQ(two[1], free_run) << "the other sample goes on";
}

TEST(DecoderTest, Bf16GenerationIsDeterministic) {
  CpuBackend backend(Precision::kBF16);
  const std::unique_ptr<GPT> model = make_model(backend, 4);
  const std::vector<int32_t> prompt = {3, 14, 15, 9, 26};
  SamplingSettings sampling;
  sampling.temperature = 0.8f;
  sampling.top_k = 10;
  sampling.seed = 42;
  auto generate = [&](int threads) {
    testing::ScopedThreadCount scoped(threads);
    return generate_tokens(*model, prompt, kConfig.max_seq_len - static_cast<int>(prompt.size()) + 1, 4, sampling);
  };
  const std::vector<std::vector<int32_t>> first = generate(1);
  EXPECT_EQ(first, generate(1));
  EXPECT_EQ(first, generate(2));
  // The samples draw from streams of their own: they are not one sample four times.
  EXPECT_FALSE(first[0] == first[1] && first[1] == first[2] && first[2] == first[3]);

  // The logits themselves, bit for bit, at any thread count.
  const int B = 2, T = kConfig.max_seq_len;
  const std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(B) * T, 2, 0, kConfig.vocab_size);
  std::vector<float> one, two;
  {
    testing::ScopedThreadCount scoped(1);
    one = decoded_logits(*model, tokens, B, T);
  }
  {
    testing::ScopedThreadCount scoped(2);
    two = decoded_logits(*model, tokens, B, T);
  }
  EXPECT_TRUE(testing::bitwise_equal(one, two));
}

TEST(DecoderTest, RefusesAShardOfTheModel) {
  CpuBackend backend;
  ModelParallel stage;
  stage.backend = &backend;
  stage.end_layer = 1;
  stage.last_stage = false;
  GPT first_stage(kConfig, stage);
  EXPECT_THROW(Decoder(first_stage, 1), Error);
}

}  // namespace
}  // namespace loom
