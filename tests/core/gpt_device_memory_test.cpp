// The model, its optimizer, checkpoints and Hugging Face files with every arena in memory the
// host cannot touch (GuardedBackend: the CPU standing in for a GPU). What a GPU run does with its
// weights goes through the backend or one host copy; these tests prove it on the CPU, bitwise
// against the same model on a CpuBackend.
#include <cstring>
#include <memory>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "checkpoints/checkpoint.h"
#include "checkpoints/hf_gpt2.h"
#include "checkpoints/hf_model.h"
#include "checkpoints/model_file.h"
#include "checkpoints/safetensors.h"
#include "core/backend/cpu_backend.h"
#include "core/backend/host_copy.h"
#include "core/decoder.h"
#include "core/gpt.h"
#include "core/optimizer.h"
#include "core/train_step.h"
#include "parallel/solo_communicator.h"
#include "test_util.h"
#include "core/backend/guarded_backend.h"

namespace loom {
namespace {

const GPTConfig kConfig{2, 4, 32, 23, 8};

// The Llama of these tests: grouped-query attention, q/k/v biases, an untied lm_head.
GPTConfig llama_config() {
  GPTConfig c = kConfig;
  c.family = Family::kLlama;
  c.n_kv_head = 2;
  c.intermediate_size = 40;
  c.qkv_bias = true;
  return c;
}
constexpr int kB = 3, kT = 8, kSteps = 6;
const AdamWSettings kAdam{0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};

// A one-process run on a given backend; the weights drawn on the host and uploaded.
struct DeviceRun {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<GPT> model;
  std::unique_ptr<AdamW> optimizer;
  GPT* chunk = nullptr;
  AdamW* opt = nullptr;

  DeviceRun(const GPTConfig& config, std::unique_ptr<Backend> b, Recompute recompute = Recompute::kNone)
      : backend(std::move(b)) {
    ModelParallel layout;
    layout.backend = backend.get();
    model = std::make_unique<GPT>(config, layout);
    model->set_recompute(recompute);
    model->init_weights(5);
    optimizer = std::make_unique<AdamW>(*model, kAdam, nullptr, /*bucket_elements=*/700);
    chunk = model.get();
    opt = optimizer.get();
  }
  std::span<GPT* const> chunks() { return {&chunk, 1}; }
  std::span<AdamW* const> optimizers() { return {&opt, 1}; }
  // With `packed`, the first micro-batch packs documents into its sequences (doc_starts).
  StepResult step(int s, bool packed = false) {
    const std::vector<int32_t> tokens = testing::random_ints(kB * kT, 100 + static_cast<uint32_t>(s), 0, kConfig.vocab_size);
    std::vector<int32_t> targets = testing::random_ints(kB * kT, 200 + static_cast<uint32_t>(s), 0, kConfig.vocab_size);
    targets[3] = -1;  // a position that does not count
    // Two micro-batches (gradient accumulation); the second reads the first's targets as its
    // tokens and its tokens as targets.
    std::vector<int32_t> ids(targets);
    ids[3] = 0;
    static_assert(kB == 3 && kT == 8, "the documents below fill three sequences of 8");
    const std::vector<int32_t> doc_starts = {0, 0, 0, 3, 3, 5, 5, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 6, 6};
    const MicroBatch mbs[2] = {{tokens.data(), targets.data(), kB, kT, packed ? doc_starts.data() : nullptr},
                               {ids.data(), tokens.data(), 1, kT}};
    return train_step(chunks(), optimizers(), {mbs, 2}, lr_at_step(s, kSteps, 3e-3f, 2, 0.1f));
  }
  std::vector<float> weights() const {
    std::vector<float> w(static_cast<size_t>(model->parameter_arena().numel()));
    backend->to_host(w.data(), model->parameter_arena());
    return w;
  }
  std::vector<float> moments() const {
    std::vector<float> m(static_cast<size_t>(optimizer->moment_m().numel() + optimizer->moment_v().numel()));
    backend->to_host(m.data(), optimizer->moment_m());
    backend->to_host(m.data() + optimizer->moment_m().numel(), optimizer->moment_v());
    return m;
  }
};

std::unique_ptr<Backend> cpu(Precision p) { return std::make_unique<CpuBackend>(p); }
std::unique_ptr<Backend> guarded(Precision p) { return std::make_unique<testing::GuardedBackend>(p); }

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// (precision, Llama rather than GPT-2)
class GptDeviceMemoryTest : public ::testing::TestWithParam<std::tuple<Precision, bool>> {
 protected:
  Precision precision() const { return std::get<0>(GetParam()); }
  GPTConfig config() const { return std::get<1>(GetParam()) ? llama_config() : kConfig; }
  bool llama() const { return std::get<1>(GetParam()); }
};

TEST_P(GptDeviceMemoryTest, TrainsBitwiseAsOnTheCpuBackend) {
  for (Recompute mode : {Recompute::kNone, Recompute::kFull}) {
    DeviceRun host(config(), cpu(precision()), mode);
    DeviceRun device(config(), guarded(precision()), mode);
    EXPECT_EQ(device.model->parameter_arena().device(), Device::kCUDA);
    for (int s = 0; s < kSteps; ++s) {
      const StepResult a = host.step(s), b = device.step(s);
      EXPECT_TRUE(same_bits(a.loss, b.loss)) << "step " << s << ": " << a.loss << " vs " << b.loss;
      EXPECT_TRUE(same_bits(a.grad_norm, b.grad_norm)) << "step " << s;
      EXPECT_EQ(a.updated, b.updated);
    }
    EXPECT_EQ(host.weights(), device.weights());
    EXPECT_EQ(host.moments(), device.moments());
    EXPECT_GT(static_cast<testing::GuardedBackend&>(*device.backend).ops(), 100);
    // Evaluation and a forward without targets read nothing from the host either.
    const std::vector<int32_t> tokens = testing::random_ints(kB * kT, 9, 0, kConfig.vocab_size);
    const MicroBatch mb{tokens.data(), tokens.data(), kB, kT};
    GPT* h = host.model.get();
    GPT* d = device.model.get();
    parallel::SoloCommunicator dp("dp");
    EXPECT_TRUE(same_bits(evaluate_loss({&h, 1}, dp, {&mb, 1}), evaluate_loss({&d, 1}, dp, {&mb, 1})));
    EXPECT_EQ(device.model->forward(tokens.data(), nullptr, kB, kT), 0.0f);
  }
}

// Packed micro-batches: doc_starts goes to the device with the tokens, and every op that masks or
// positions reads it there.
TEST_P(GptDeviceMemoryTest, TrainsPackedMicroBatchesBitwiseAsOnTheCpuBackend) {
  for (Recompute mode : {Recompute::kNone, Recompute::kSelective}) {
    DeviceRun host(config(), cpu(precision()), mode);
    DeviceRun device(config(), guarded(precision()), mode);
    for (int s = 0; s < kSteps; ++s) {
      const StepResult a = host.step(s, true), b = device.step(s, true);
      EXPECT_TRUE(same_bits(a.loss, b.loss)) << "step " << s << ": " << a.loss << " vs " << b.loss;
      EXPECT_TRUE(same_bits(a.grad_norm, b.grad_norm)) << "step " << s;
    }
    EXPECT_EQ(host.weights(), device.weights());
  }
}

TEST_P(GptDeviceMemoryTest, CheckpointSavedAndLoadedThroughOneHostCopy) {
  testing::TempDir dir("device_ckpt");
  parallel::SoloCommunicator world("world");
  config::RunConfig cfg;
  set_model_config(config(), cfg.mutable_model());
  DeviceRun straight(config(), cpu(precision()));
  std::vector<double> want;
  for (int s = 0; s < kSteps; ++s) want.push_back(straight.step(s).loss);
  for (bool in_place : {false, true}) {
    const std::string root = dir.str() + (in_place ? "/in_place" : "/copied");
    {
      DeviceRun first(config(), guarded(precision()));
      for (int s = 0; s < 3; ++s) first.step(s);
      checkpoint::Checkpointer c(checkpoint::Policy{root, 3, 0, false, 30}, world);
      checkpoint::Progress p;
      p.step = 3;
      c.save(cfg, p, first.chunks(), first.optimizers(), "test", in_place);
      c.wait();
    }
    DeviceRun second(config(), guarded(precision()));
    checkpoint::load_state(checkpoint::CheckpointReader(root + "/step-00000003"), second.chunks(), second.optimizers());
    for (int s = 3; s < kSteps; ++s) {
      EXPECT_TRUE(same_bits(second.step(s).loss, want[static_cast<size_t>(s)])) << "step " << s << (in_place ? " in place" : "");
    }
    EXPECT_EQ(second.weights(), straight.weights());
    EXPECT_EQ(second.moments(), straight.moments());
  }
}

TEST_P(GptDeviceMemoryTest, HuggingFaceAndModelFilesAndWholeTensorsComeFromTheDevice) {
  testing::TempDir dir("device_hf");
  DeviceRun host(config(), cpu(precision()));
  DeviceRun device(config(), guarded(precision()));
  host.step(0);
  device.step(0);
  DeviceRun back(config(), guarded(precision()));
  if (llama()) {
    // Hugging Face's tensors (q, k, v and gate, up split) read from the device and written back.
    load_hf_tensors(hf_tensors_of_model(*device.model), *back.model);
  } else {
    const std::string path = dir.str() + "/model.safetensors";
    save_hf_gpt2(path, *device.model);
    load_hf_gpt2(SafetensorsFile(path), *back.model);
  }
  EXPECT_EQ(back.weights(), host.weights());
  // The model file too.
  const std::string file = dir.str() + "/model.bin";
  save_model_file(file, "cfg", *device.model);
  DeviceRun again(config(), guarded(precision()));
  copy_into_model(load_model_file(file), file, *again.model);
  EXPECT_EQ(again.weights(), host.weights());
  for (const Parameter& p : device.model->parameters()) {
    EXPECT_EQ(gather_parameter(*device.model, p), gather_parameter(*host.model, host.model->parameter(p.name))) << p.name;
  }
}

TEST_P(GptDeviceMemoryTest, DecodesAsOnTheCpuBackend) {
  DeviceRun host(config(), cpu(precision()));
  DeviceRun device(config(), guarded(precision()));
  host.step(0);
  device.step(0);
  const std::vector<int32_t> prompt = {1, 2, 3};
  SamplingSettings sampling;
  sampling.temperature = 0.8f;
  sampling.top_k = 5;
  sampling.seed = 3;
  EXPECT_EQ(generate_tokens(*device.model, prompt, 4, 2, sampling), generate_tokens(*host.model, prompt, 4, 2, sampling));
}

INSTANTIATE_TEST_SUITE_P(Models, GptDeviceMemoryTest,
                         ::testing::Combine(::testing::Values(Precision::kF32, Precision::kBF16),
                                            ::testing::Values(false, true)),
                         [](const ::testing::TestParamInfo<std::tuple<Precision, bool>>& p) {
                           return std::string(std::get<1>(p.param) ? "llama_" : "gpt2_") +
                                  (std::get<0>(p.param) == Precision::kF32 ? "fp32" : "bf16");
                         });

}  // namespace
}  // namespace loom
