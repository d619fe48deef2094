#include "core/gpt.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/decoder.h"
#include "core/optimizer.h"
#include "core/rng.h"
#include "core/train_step.h"
#include "parallel/solo_communicator.h"
#include "test_util.h"

namespace loom {
namespace {

GPTConfig small() { return GPTConfig{2, 4, 32, 29, 12}; }

TEST(GptTest, InitialWeightsFollowGpt2AndTheCounterRng) {
  GPT model(small());
  model.init_weights(5);
  const Parameter& fc = model.parameter("h.1.mlp.c_fc.weight");
  CounterRng rng(5, stream_id_of("h.1.mlp.c_fc.weight"));
  for (int64_t i = 0; i < fc.value.numel(); i += 97) {
    ASSERT_EQ(fc.value.f32()[i], 0.02f * rng.normal(static_cast<uint64_t>(i))) << "element " << i;
  }
  double sum_sq = 0;
  const Parameter& proj = model.parameter("h.0.attn.c_proj.weight");
  for (int64_t i = 0; i < proj.value.numel(); ++i) sum_sq += proj.value.f32()[i] * proj.value.f32()[i];
  EXPECT_NEAR(std::sqrt(sum_sq / static_cast<double>(proj.value.numel())), 0.02 / std::sqrt(4.0), 0.002);
  EXPECT_EQ(model.parameter("ln_f.weight").value.f32()[3], 1.0f);
  EXPECT_EQ(model.parameter("h.0.mlp.c_fc.bias").value.f32()[3], 0.0f);
  EXPECT_TRUE(model.parameter("wte").decay);
  EXPECT_FALSE(model.parameter("h.0.ln_2.bias").decay);
  // 12 tensors per block + wte, wpe, ln_f.{weight,bias}
  EXPECT_EQ(model.parameters().size(), 2u * 12 + 4);
  const int64_t C = 32, V = 29, T = 12, L = 2;
  EXPECT_EQ(model.num_parameters(), V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C);
}

// The KV-cache decoder must reproduce the full forward's logits at every position.
TEST(GptTest, DecoderLogitsEqualFullForwardAtEveryPosition) {
  GPT model(small());
  model.init_weights(9);
  const int B = 3, T = 12, V = 29;
  std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(B) * T, 1, 0, V);
  model.forward(tokens.data(), nullptr, B, T);
  std::vector<float> full(model.logits(), model.logits() + B * T * V);
  Decoder decoder(model, B);
  std::vector<int32_t> column(B);
  for (int t = 0; t < T; ++t) {
    for (int b = 0; b < B; ++b) column[static_cast<size_t>(b)] = tokens[static_cast<size_t>(b * T + t)];
    const float* step = decoder.step(column.data());
    for (int b = 0; b < B; ++b) {
      std::vector<float> got(step + b * V, step + (b + 1) * V);
      std::vector<float> want(full.begin() + (b * T + t) * V, full.begin() + (b * T + t + 1) * V);
      ASSERT_TRUE(testing::all_close(got, want, 1e-4, 1e-5)) << "position " << t << " row " << b;
    }
  }
  EXPECT_THROW(decoder.step(column.data()), UserError);  // past max_seq_len
  Decoder fresh(model, B);
  std::vector<int32_t> outside(B, V);
  try {
    fresh.step(outside.data());
    FAIL() << "expected an error for token " << V;
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("token id 29 at (b, t) = (0, 0)"), std::string::npos) << e.what();
  }
}

// Two micro-batches of B with loss scale 1/2 give the gradient of one batch of 2B (no ignored
// targets, so the mean of the two means is the mean over all).
TEST(GptTest, GradientAccumulationEqualsOneLargeBatch) {
  const int B = 2, T = 10, V = 29;
  std::vector<int32_t> tokens = testing::random_ints(2 * B * T, 2, 0, V);
  std::vector<int32_t> targets = testing::random_ints(2 * B * T, 3, 0, V);
  GPT big(small()), acc(small());
  big.init_weights(1);
  acc.init_weights(1);
  big.zero_grad();
  float big_loss = big.forward(tokens.data(), targets.data(), 2 * B, T);
  big.backward(1.0f);
  acc.zero_grad();
  float l0 = acc.forward(tokens.data(), targets.data(), B, T);
  acc.backward(0.5f);
  float l1 = acc.forward(tokens.data() + B * T, targets.data() + B * T, B, T);
  acc.backward(0.5f);
  EXPECT_NEAR((l0 + l1) / 2, big_loss, 1e-6);
  Tensor g1 = big.gradient_arena(), g2 = acc.gradient_arena();
  std::vector<float> a(g1.f32(), g1.f32() + g1.numel()), b(g2.f32(), g2.f32() + g2.numel());
  EXPECT_LE(testing::relative_l2(b, a), 1e-5);
}

TEST(GptTest, FiniteDifferenceOfTheLossMatchesTheGradient) {
  GPT model(GPTConfig{1, 2, 8, 11, 6});
  model.init_weights(3);
  const int B = 2, T = 6;
  std::vector<int32_t> tokens = testing::random_ints(B * T, 4, 0, 11);
  std::vector<int32_t> targets = testing::random_ints(B * T, 5, 0, 11);
  model.zero_grad();
  model.forward(tokens.data(), targets.data(), B, T);
  model.backward();
  std::vector<float> grad(model.gradient_arena().f32(), model.gradient_arena().f32() + model.num_parameters());
  float* w = model.parameter_arena().f32();
  int checked = 0;
  for (int64_t i = 0; i < model.num_parameters(); i += 37) {
    const float saved = w[i], h = 2e-3f;  // weights are ~0.02: keep the step well inside
    w[i] = saved + h;
    double plus = model.forward(tokens.data(), targets.data(), B, T);
    w[i] = saved - h;
    double minus = model.forward(tokens.data(), targets.data(), B, T);
    w[i] = saved;
    double numeric = (plus - minus) / (2 * h);
    // float32 losses (~2.4, eps 2.4e-7) divided by 2h leave ~1e-4 of noise in `numeric`.
    EXPECT_NEAR(grad[static_cast<size_t>(i)], numeric, 1e-2 * std::fabs(numeric) + 3e-4) << "parameter element " << i;
    ++checked;
  }
  EXPECT_GT(checked, 20);
}

// The validation loss is the loss train_step reports for the same weights and batches (it runs
// the same forwards), and evaluating changes no weight.
TEST(GptTest, EvaluateLossEqualsTheTrainingLossBeforeTheUpdate) {
  const GPTConfig config{2, 4, 32, 29, 16};
  GPT model(config);
  model.init_weights(3);
  parallel::SoloCommunicator dp("dp");
  std::vector<int32_t> tokens = testing::random_ints(3 * 16 * 2, 8, 0, config.vocab_size);
  std::vector<int32_t> targets = testing::random_ints(tokens.size(), 9, 0, config.vocab_size);
  for (size_t i = 0; i < targets.size(); i += 4) targets[i] = -1;
  const MicroBatch micro[] = {{tokens.data(), targets.data(), 3, 16},
                              {tokens.data() + 48, targets.data() + 48, 3, 16}};
  GPT* chunk = &model;
  const std::vector<float> before(model.parameter_arena().f32(),
                                  model.parameter_arena().f32() + model.parameter_arena().numel());
  const double evaluated = evaluate_loss({&chunk, 1}, dp, micro);
  EXPECT_EQ(0, std::memcmp(before.data(), model.parameter_arena().f32(), before.size() * sizeof(float)));
  AdamW optimizer(model, AdamWSettings{});
  EXPECT_EQ(evaluated, train_step(model, optimizer, micro, 1e-3f).loss);
  EXPECT_NE(evaluated, evaluate_loss({&chunk, 1}, dp, micro));  // the step changed the weights
}

TEST(GptTest, BadShapesAndTokensAreClearErrors) {
  EXPECT_THROW(GPT(GPTConfig{2, 3, 32, 29, 12}), UserError);   // 3 heads do not divide 32
  EXPECT_THROW(GPT(GPTConfig{0, 4, 32, 29, 12}), UserError);
  EXPECT_THROW(GPT(GPTConfig{2, 4, 32, -1, 12}), UserError);
  GPT model(small());
  std::vector<int32_t> tokens(12, 1);
  EXPECT_THROW(model.forward(tokens.data(), nullptr, 1, 13), UserError);  // longer than seq_len
  tokens[4] = 29;  // == vocab size
  try {
    model.forward(tokens.data(), nullptr, 1, 12);
    FAIL() << "expected an error for token 29";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("29"), std::string::npos) << e.what();
  }
}

TEST(GptTest, LearningRateScheduleWarmsUpThenDecaysToTheFloor) {
  EXPECT_FLOAT_EQ(lr_at_step(0, 100, 1.0f, 10, 0.1f), 0.1f);
  EXPECT_FLOAT_EQ(lr_at_step(9, 100, 1.0f, 10, 0.1f), 1.0f);
  EXPECT_FLOAT_EQ(lr_at_step(10, 100, 1.0f, 10, 0.1f), 1.0f);
  EXPECT_NEAR(lr_at_step(99, 100, 1.0f, 10, 0.1f), 0.1f, 1e-6);
  // step 54 is 44 of the 89 decay intervals: 0.1 + 0.45 (1 + cos(pi 44/89))
  EXPECT_NEAR(lr_at_step(54, 100, 1.0f, 10, 0.1f), 0.55 + 0.45 * std::cos(M_PI * 44 / 89.0), 1e-6);
  for (int s = 10; s < 99; ++s) EXPECT_GE(lr_at_step(s, 100, 1.0f, 10, 0.1f), lr_at_step(s + 1, 100, 1.0f, 10, 0.1f));
}

TEST(GptTest, SamplingIsGreedyAtZeroTemperatureAndRespectsTopK) {
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f};
  EXPECT_EQ(sample_token(logits.data(), 5, 0.0f, 0, 0.7f), 1);
  for (int i = 0; i < 100; ++i) {
    int32_t t = sample_token(logits.data(), 5, 1.0f, 2, static_cast<float>(i) / 100.0f);
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
  // With top_k = all and u just below 1 the least likely token can be drawn.
  EXPECT_EQ(sample_token(logits.data(), 5, 1.0f, 0, 0.9999f), 2);
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

// Recomputation changes what is kept, never a number: five steps in every mode give bitwise the
// losses and weights of keeping everything, and the modes keep strictly less.
TEST(GptTest, RecomputationIsBitwiseIdenticalAndSavesActivationMemory) {
  const GPTConfig config{3, 4, 32, 29, 12};
  const int B = 3, T = 12, steps = 5;
  std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(B) * T * steps, 7, 0, 29);
  std::vector<int32_t> targets = testing::random_ints(tokens.size(), 8, -1, 29);
  auto run = [&](Recompute mode, std::vector<float>* weights) {
    GPT model(config);
    model.set_recompute(mode);
    model.init_weights(4);
    AdamW optimizer(model, AdamWSettings{});
    std::vector<float> losses;
    for (int step = 0; step < steps; ++step) {
      const size_t at = static_cast<size_t>(step) * B * T;
      const MicroBatch micro{tokens.data() + at, targets.data() + at, B, T};
      losses.push_back(static_cast<float>(train_step(model, optimizer, {&micro, 1}, 1e-2f).loss));
    }
    const Tensor arena = model.parameter_arena();
    weights->assign(arena.f32(), arena.f32() + arena.numel());
    return losses;
  };
  std::vector<float> w_none, w_selective, w_full;
  const std::vector<float> none = run(Recompute::kNone, &w_none);
  EXPECT_EQ(run(Recompute::kSelective, &w_selective), none);
  EXPECT_EQ(run(Recompute::kFull, &w_full), none);
  EXPECT_EQ(w_selective, w_none);
  EXPECT_EQ(w_full, w_none);

  GPT model(config);
  const size_t kept_none = model.activation_bytes(Recompute::kNone, B, T);
  const size_t kept_selective = model.activation_bytes(Recompute::kSelective, B, T);
  const size_t kept_full = model.activation_bytes(Recompute::kFull, B, T);
  // Selective keeps one attention core (output N x C and log-sum-exp B x NH x T) instead of L.
  const size_t core = (static_cast<size_t>(B) * T * 32 + static_cast<size_t>(B) * 4 * T) * sizeof(float);
  EXPECT_EQ(kept_none - kept_selective, (config.n_layer - 1) * core);
  EXPECT_LT(kept_full, kept_selective);
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

// Three pipeline stages chained by hand (first: block 0 and the embeddings; middle: block 1;
// last: block 2 and the head) compute what the whole model computes: the same loss and, bit for
// bit, the same gradients for every tensor a single stage owns; the two copies of the tied wte
// (first and last stage) sum to the whole model's wte gradient.
TEST(GptTest, ChainedPipelineStagesEqualTheWholeModel) {
  const GPTConfig config{3, 4, 32, 29, 12};
  const int B = 2, T = 12, C = 32;
  std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(B) * T, 9, 0, 29);
  std::vector<int32_t> targets = testing::random_ints(tokens.size(), 10, -1, 29);
  GPT whole(config);
  whole.init_weights(6);
  whole.zero_grad();
  const float want_loss = whole.forward(tokens.data(), targets.data(), B, T);
  whole.backward();

  GPT first(config, ModelParallel{nullptr, false, 1, 0, 1, true, false});
  GPT middle(config, ModelParallel{nullptr, false, 1, 1, 2, false, false});
  GPT last(config, ModelParallel{nullptr, false, 1, 2, 3, false, true});
  std::vector<GPT*> stages = {&first, &middle, &last};
  for (GPT* s : stages) {
    s->init_weights(6);
    s->zero_grad();
  }
  const size_t rows = static_cast<size_t>(B) * T * C;
  first.forward(tokens.data(), nullptr, B, T);
  std::copy_n(static_cast<const float*>(first.stage_output()), rows, static_cast<float*>(middle.stage_input(B, T)));
  middle.forward(nullptr, nullptr, B, T);
  std::copy_n(static_cast<const float*>(middle.stage_output()), rows, static_cast<float*>(last.stage_input(B, T)));
  const float loss = last.forward(nullptr, targets.data(), B, T);
  EXPECT_EQ(loss, want_loss);
  last.backward();
  std::copy_n(static_cast<const float*>(last.stage_input_grad()), rows, static_cast<float*>(middle.stage_output_grad()));
  middle.backward();
  std::copy_n(static_cast<const float*>(middle.stage_input_grad()), rows, static_cast<float*>(first.stage_output_grad()));
  first.backward();

  EXPECT_EQ(first.parameters().size() + middle.parameters().size() + last.parameters().size(),
            whole.parameters().size() + 1);  // wte twice
  for (GPT* s : stages) {
    for (const Parameter& p : s->parameters()) {
      if (p.name == "wte") continue;
      const Parameter& w = whole.parameter(p.name);
      EXPECT_EQ(0, std::memcmp(p.grad.raw(), w.grad.raw(), p.grad.nbytes())) << "gradient of " << p.name;
      EXPECT_EQ(0, std::memcmp(p.value.raw(), w.value.raw(), p.value.nbytes())) << "value of " << p.name;
    }
  }
  const Parameter& wte_first = first.parameter("wte");
  const Parameter& wte_last = last.parameter("wte");
  std::vector<float> summed(static_cast<size_t>(wte_first.grad.numel()));
  for (size_t i = 0; i < summed.size(); ++i) summed[i] = wte_first.grad.f32()[i] + wte_last.grad.f32()[i];
  const Parameter& wte_whole = whole.parameter("wte");
  std::vector<float> want(wte_whole.grad.f32(), wte_whole.grad.f32() + wte_whole.grad.numel());
  // The whole model adds the embedding's and the head's contributions into one gradient; the
  // stages sum two finished ones: the same terms in another order, so they agree to fp32
  // rounding of the largest terms (|g| ~ 0.2: ulp ~ 1.5e-8), not bitwise.
  EXPECT_TRUE(testing::all_close(summed, want, 1e-5, 1e-7));
  EXPECT_LT(middle.activation_bytes(Recompute::kNone, B, T), whole.activation_bytes(Recompute::kNone, B, T) / 2);
}

}  // namespace
}  // namespace loom
