// Loom's side of the training benchmark (bench/train_bench.py runs it next to PyTorch).
//
// Trains a GPT-2 or a Llama (--family) of the given shape on random tokens (a fixed pool of four
// batches, as the PyTorch peer does) with AdamW (lr 3e-4, weight decay 0.1, betas 0.9/0.95,
// clipping at 1.0), times `steps` steps after `warmup` untimed ones, and prints one JSON line.
#include <array>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/gpt.h"
#include "core/optimizer.h"
#include "core/rng.h"
#include "core/train_step.h"
#include "launch/cli.h"
#include "launch/run_setup.h"

using namespace loom;

int main(int argc, char** argv) {
  const std::vector<FlagSpec> flags = {
      {"n-layer", "N", "blocks"}, {"n-head", "N", "heads"}, {"n-embd", "C", "width"},
      {"vocab", "V", "vocabulary"}, {"seq", "T", "sequence length"}, {"batch", "B", "batch size"},
      {"steps", "N", "timed steps"}, {"warmup", "N", "untimed steps first"},
      {"threads", "N", "threads; 0 = every core"},
      {"family", "NAME", "gpt2 or llama"}, {"n-kv-head", "N", "llama: key/value heads (default: n-head)"},
      {"intermediate", "N", "llama: SwiGLU hidden units (default: 8C/3 rounded up to 256)"},
      {"untied", "", "llama: an output projection of its own (default: tied to the embedding)"},
      {"recompute", "MODE", "activation recomputation: none, selective or full"},
      {"help", "", "show this help"}};
  try {
    ParsedArgs a = parse_args("bench_train", std::vector<std::string>(argv + 1, argv + argc), flags);
    if (a.has("help")) {
      std::printf("%s", usage_text("bench_train [options]", "Times Loom training steps.", flags).c_str());
      return 0;
    }
    GPTConfig c{a.get_int("n-layer", 4), a.get_int("n-head", 4), a.get_int("n-embd", 256),
                a.get_int("vocab", 8192), a.get_int("seq", 256)};
    const std::string family = a.get("family", "gpt2");
    if (family == "llama") {
      c.family = Family::kLlama;
      c.n_kv_head = a.get_int("n-kv-head", 0);
      c.intermediate_size = a.get_int("intermediate", 0);
      c.tie_embeddings = !a.has("untied");
    } else if (family != "gpt2") {
      fail_user("--family expects gpt2 or llama, got", family);
    }
    const int B = a.get_int("batch", 8), T = c.max_seq_len;
    const int steps = a.get_int("steps", 10), warmup = a.get_int("warmup", 2);
    if (B <= 0 || steps <= 0 || warmup < 0) fail_user("batch and steps must be positive, warmup >= 0");
    const int threads = set_thread_count(a.get_int("threads", 0));

    GPT model(c);
    model.init_weights(1);
    const std::string recompute = a.get("recompute", "none");
    if (recompute == "selective") model.set_recompute(Recompute::kSelective);
    else if (recompute == "full") model.set_recompute(Recompute::kFull);
    else if (recompute != "none") fail_user("--recompute expects none, selective or full, got", recompute);
    AdamW optimizer(model, AdamWSettings{0.9f, 0.95f, 1e-8f, 0.1f, 1.0f});
    constexpr int kPool = 4;
    std::vector<std::vector<int32_t>> tokens, targets;
    for (int i = 0; i < kPool; ++i) {
      CounterRng rng(1234, static_cast<uint64_t>(i));
      std::vector<int32_t> x(static_cast<size_t>(B) * T), y(x.size());
      for (size_t j = 0; j < x.size(); ++j) {
        std::array<uint32_t, 4> bits = rng.bits(j);
        x[j] = static_cast<int32_t>(bits[0] % static_cast<uint32_t>(c.vocab_size));
        y[j] = static_cast<int32_t>(bits[1] % static_cast<uint32_t>(c.vocab_size));
      }
      tokens.push_back(std::move(x));
      targets.push_back(std::move(y));
    }
    using Clock = std::chrono::steady_clock;
    Clock::time_point start;
    float first = 0, last = 0;
    for (int step = 0; step < warmup + steps; ++step) {
      if (step == warmup) start = Clock::now();
      const size_t i = static_cast<size_t>(step % kPool);
      const MicroBatch micro{tokens[i].data(), targets[i].data(), B, T};
      last = static_cast<float>(train_step(model, optimizer, {&micro, 1}, 3e-4f).loss);
      if (step == warmup) first = last;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("{\"impl\": \"loom\", \"params\": %lld, \"tokens_per_s\": %.2f, \"ms_per_step\": %.3f, "
                "\"loss_first\": %.6f, \"loss_last\": %.6f, \"threads\": %d, "
                "\"activation_bytes\": %zu}\n",
                static_cast<long long>(model.num_parameters()), static_cast<double>(steps) * B * T / seconds,
                1e3 * seconds / steps,
                static_cast<double>(first), static_cast<double>(last), threads,
                model.activation_bytes(model.recompute(), B, T));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train: error: %s\n", e.what());
    return 2;
  }
}
