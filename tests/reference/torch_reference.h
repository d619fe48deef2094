// The whole model against a PyTorch reference script: same weights, same batches, same learning
// rates. Writes the model's initial weights and batches to a temporary directory, runs the script
// (tests/reference/gpt_torch.py, llama_torch.py: independent nn implementations) on them, and
// compares:
//   logits            elementwise |a - b| <= 1e-5 + 1e-4 |b|, and ||a-b||/||b|| <= 1e-5
//   loss              relative error <= 1e-5
//   every gradient    ||a-b||/||b|| <= 1e-4 (after 2-micro-batch accumulation, before clipping)
//   10 AdamW steps    each step's loss within 1e-5 relative (warmup + cosine LR, clipping on,
//                     weight decay on matrices only)
//   final weights     ||a-b||/||b|| <= 1e-4 per tensor (less what `trim_final` leaves out).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "core/gpt.h"
#include "core/optimizer.h"
#include "test_util.h"

namespace loom::testing {

struct TorchReference {
  GPTConfig model;
  std::string script;                       // under tests/reference/
  std::vector<std::string> config_lines;    // more "key value" lines of config.txt for the script
  int B = 3, T = 13, accum = 2, steps = 10;
  float peak_lr = 1e-2f;
  AdamWSettings adamw{0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
  // Removes from a final tensor's values (both sides) the elements not to compare.
  std::function<void(const std::string& name, std::vector<float>& values)> trim_final;
};

namespace torch_reference_detail {

namespace fs = std::filesystem;

template <typename T>
void write_raw(const fs::path& path, const T* data, size_t n) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(T)));
  ASSERT_TRUE(out.good()) << "writing " << path;
}

inline std::vector<float> read_floats(const fs::path& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing " << path;
  std::vector<float> v(n);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(float)));
  EXPECT_EQ(in.gcount(), static_cast<std::streamsize>(n * sizeof(float))) << "short file " << path;
  return v;
}

}  // namespace torch_reference_detail

inline void expect_matches_torch(const TorchReference& s) {
  namespace fs = std::filesystem;
  using torch_reference_detail::read_floats;
  using torch_reference_detail::write_raw;
  GPT model(s.model);
  model.init_weights(7);
  // Biases and norm gains start at 0 and 1; perturb them so that their gradients and their role
  // in the forward pass are exercised with non-trivial values.
  std::mt19937 gen(11);
  std::normal_distribution<float> noise(0.0f, 0.1f);
  for (Parameter& p : model.parameters()) {
    if (!p.decay) {
      for (int64_t i = 0; i < p.value.numel(); ++i) p.value.f32()[i] += noise(gen);
    }
  }

  const fs::path dir = fs::temp_directory_path() / ("loom_torch_ref_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream cfg(dir / "config.txt");
  cfg << "n_layer " << s.model.n_layer << "\nn_head " << s.model.n_head << "\nn_embd " << s.model.n_embd
      << "\nvocab_size " << s.model.vocab_size << "\nmax_T " << s.model.max_seq_len << "\nB " << s.B << "\nT " << s.T
      << "\naccum " << s.accum << "\nsteps " << s.steps << "\nbeta1 " << s.adamw.beta1 << "\nbeta2 " << s.adamw.beta2
      << "\neps " << s.adamw.eps << "\nweight_decay " << s.adamw.weight_decay << "\ngrad_clip " << s.adamw.grad_clip
      << "\nthreads 1\n";
  for (const std::string& line : s.config_lines) cfg << line << "\n";
  cfg.close();
  std::ofstream manifest(dir / "tensors.txt");
  for (const Parameter& p : model.parameters()) {
    manifest << p.name;
    for (int64_t d : p.value.shape().dims()) manifest << " " << d;
    manifest << "\n";
    write_raw(dir / "params" / (p.name + ".bin"), p.value.f32(), static_cast<size_t>(p.value.numel()));
  }
  manifest.close();

  const size_t per_micro = static_cast<size_t>(s.B) * s.T;
  const size_t n_tokens = per_micro * s.accum * s.steps;
  std::vector<int32_t> tokens = random_ints(n_tokens, 3, 0, s.model.vocab_size);
  std::vector<int32_t> targets = random_ints(n_tokens, 4, 0, s.model.vocab_size);
  for (size_t i = 0; i < n_tokens; i += 5) targets[i] = -1;  // some positions do not count
  std::vector<float> lrs;
  for (int step = 0; step < s.steps; ++step) lrs.push_back(lr_at_step(step, s.steps, s.peak_lr, 3, 0.1f));
  write_raw(dir / "tokens.bin", tokens.data(), tokens.size());
  write_raw(dir / "targets.bin", targets.data(), targets.size());
  write_raw(dir / "lrs.bin", lrs.data(), lrs.size());

  const std::string command =
      std::string(LOOM_PYTHON) + " " + LOOM_SOURCE_DIR + "/tests/reference/" + s.script + " " + dir.string();
  ASSERT_EQ(std::system(command.c_str()), 0) << "the PyTorch reference failed: " << command;
  const fs::path out = dir / "out";

  // Step 0, micro-batch 0: logits and loss.
  const int V = s.model.vocab_size;
  const float loss = model.forward(tokens.data(), targets.data(), s.B, s.T);
  std::vector<float> logits(model.logits(), model.logits() + per_micro * V);
  std::vector<float> ref_logits = read_floats(out / "logits.bin", logits.size());
  EXPECT_TRUE(all_close(logits, ref_logits, 1e-4, 1e-5));
  EXPECT_LE(relative_l2(logits, ref_logits), 1e-5);
  const float ref_loss = read_floats(out / "loss.bin", 1)[0];
  EXPECT_LE(std::fabs(loss - ref_loss) / std::fabs(ref_loss), 1e-5) << "loom " << loss << " torch " << ref_loss;

  // Ten steps; step 0's accumulated gradients are compared before the update.
  AdamW optimizer(model, s.adamw);
  std::vector<float> ref_step_losses = read_floats(out / "step_losses.bin", static_cast<size_t>(s.steps));
  for (int step = 0; step < s.steps; ++step) {
    model.zero_grad();
    double step_loss = 0;
    for (int micro = 0; micro < s.accum; ++micro) {
      const size_t at = (static_cast<size_t>(step) * s.accum + micro) * per_micro;
      step_loss += model.forward(tokens.data() + at, targets.data() + at, s.B, s.T);
      model.backward(1.0f / static_cast<float>(s.accum), micro == s.accum - 1, optimizer.gradients_ready());
    }
    step_loss /= s.accum;
    if (step == 0) {
      for (const Parameter& p : model.parameters()) {
        std::vector<float> got(p.grad.f32(), p.grad.f32() + p.grad.numel());
        std::vector<float> ref = read_floats(out / "grads" / (p.name + ".bin"), got.size());
        EXPECT_LE(relative_l2(got, ref), 1e-4) << "gradient of " << p.name;
      }
    }
    optimizer.finish_gradient_reduction();
    optimizer.step(lrs[static_cast<size_t>(step)], optimizer.gradient_norm());
    const double ref = ref_step_losses[static_cast<size_t>(step)];
    EXPECT_LE(std::fabs(step_loss - ref) / std::fabs(ref), 1e-5)
        << "step " << step << ": loom " << step_loss << " torch " << ref;
  }

  for (const Parameter& p : model.parameters()) {
    std::vector<float> got(p.value.f32(), p.value.f32() + p.value.numel());
    std::vector<float> ref = read_floats(out / "final_params" / (p.name + ".bin"), got.size());
    if (s.trim_final) {
      s.trim_final(p.name, got);
      s.trim_final(p.name, ref);
    }
    EXPECT_LE(relative_l2(got, ref), 1e-4) << "final value of " << p.name;
  }
  if (!::testing::Test::HasFailure()) fs::remove_all(dir);
}

}  // namespace loom::testing
