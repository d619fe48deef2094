// Loom's side of the GPU training benchmark (bench/gpu_train_bench.py runs it next to
// bench/torch_train.py --device cuda): GPT-2, or the Llama shapes of configs/smollm-135m.pbtxt
// and configs/llama3-1b.pbtxt, trained on one GPU in bf16 with fp32 master weights (the model of
// core/gpt.h on a CudaBackend, its AdamW and train_step: what `loom train` runs) on random
// tokens, timed with CUDA events after warm-up steps.
// Prints one JSON line: tokens/s, ms per step, MFU against --peak-tflops, first and last timed
// losses, peak device memory, and device allocations made after the first step (should be 0).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/backend/cuda/cuda_backend.h"
#include "core/base/cuda/context.h"
#include "core/gpt.h"
#include "core/optimizer.h"
#include "core/train_step.h"
#include "launch/metrics.h"

namespace {

struct Options {
  std::string model = "124m";
  int batch = 16;
  int seq = 1024;
  int steps = 20;
  int warmup = 3;
  double peak_tflops = 989.0;  // H100/H200 SXM dense bf16
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "bench_gpu_train: %s\nusage: bench_gpu_train [--model 124m|350m|774m|1.5b|smollm-135m|llama3-1b] "
               "[--batch B] [--seq T] "
               "[--steps N] [--warmup N] [--peak-tflops F]\n",
               why);
  std::exit(2);
}

loom::GPTConfig config_of(const std::string& name, int seq) {
  // n_layer, n_head, n_embd, vocab, max_seq_len
  if (name == "124m") return {12, 12, 768, 50257, seq};
  if (name == "350m") return {24, 16, 1024, 50257, seq};
  if (name == "774m") return {36, 20, 1280, 50257, seq};
  if (name == "1.5b") return {48, 25, 1600, 50257, seq};
  if (name == "smollm-135m" || name == "llama3-1b") {
    // configs/smollm-135m.pbtxt and configs/llama3-1b.pbtxt: grouped-query attention, SwiGLU, tied
    const bool small = name == "smollm-135m";
    loom::GPTConfig c = small ? loom::GPTConfig{30, 9, 576, 49152, seq}  // n_layer, n_head, n_embd, V, T
                              : loom::GPTConfig{16, 32, 2048, 128256, seq};
    c.family = loom::Family::kLlama;
    c.n_kv_head = small ? 3 : 8;
    c.intermediate_size = small ? 1536 : 8192;
    c.tie_embeddings = true;
    c.rope_theta = small ? 10000.0f : 500000.0f;
    c.rope_llama3 = !small;
    c.rope_factor = 32.0f;
    return c;
  }
  usage(("unknown --model " + name).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + a).c_str());
    const char* v = argv[++i];
    if (a == "--model") o.model = v;
    else if (a == "--batch") o.batch = std::atoi(v);
    else if (a == "--seq") o.seq = std::atoi(v);
    else if (a == "--steps") o.steps = std::atoi(v);
    else if (a == "--warmup") o.warmup = std::atoi(v);
    else if (a == "--peak-tflops") o.peak_tflops = std::atof(v);
    else usage(("unknown option " + a).c_str());
  }
  if (o.batch < 1 || o.seq < 1 || o.steps < 1 || o.warmup < 1) usage("batch, seq, steps and warmup must be >= 1");
  try {
    const loom::GPTConfig config = config_of(o.model, o.seq);
    loom::cuda::Context context(0);
    loom::CudaBackend backend(context);
    loom::ModelParallel layout;
    layout.backend = &backend;
    loom::GPT model(config, layout);
    model.init_weights(1234);
    loom::AdamW optimizer(model, loom::AdamWSettings{});
    const loom::AllocatorStats& memory = context.allocator().stats();

    std::mt19937 rng(42);
    std::uniform_int_distribution<int32_t> token(0, config.vocab_size - 1);
    const size_t n = static_cast<size_t>(o.batch) * o.seq;
    std::vector<std::vector<int32_t>> pool(8, std::vector<int32_t>(n + 1));
    for (auto& p : pool) {
      for (auto& t : p) t = token(rng);
    }
    std::vector<float> losses;
    int64_t allocations_after_first = 0;
    loom::cuda::Event start(true), stop(true);
    for (int step = 0; step < o.warmup + o.steps; ++step) {
      if (step == o.warmup) start.record(context.stream());
      const std::vector<int32_t>& p = pool[static_cast<size_t>(step) % pool.size()];
      const loom::MicroBatch mb{p.data(), p.data() + 1, o.batch, o.seq};
      // A step reads the loss and norm back, so each step ends with the device idle: what a
      // training loop that logs every step sees.
      losses.push_back(static_cast<float>(loom::train_step(model, optimizer, {&mb, 1}, 3e-4f).loss));
      if (step == 0) allocations_after_first = memory.raw_allocations;
    }
    stop.record(context.stream());
    stop.synchronize();
    const double seconds = stop.elapsed_ms_since(start) / 1000.0;
    const double tokens_per_s = static_cast<double>(o.steps) * static_cast<double>(n) / seconds;
    const double flops = tokens_per_s * loom::model_flops_per_token(config, model.num_parameters(), o.seq);
    std::printf(
        "{\"impl\":\"loom\",\"model\":\"%s\",\"params\":%lld,\"tokens_per_s\":%.1f,\"ms_per_step\":%.3f,"
        "\"mfu\":%.4f,\"loss_first\":%.4f,\"loss_last\":%.4f,\"peak_gib\":%.2f,\"allocations_after_first_step\":%lld}\n",
        o.model.c_str(), static_cast<long long>(model.num_parameters()), tokens_per_s, 1000.0 * seconds / o.steps,
        flops / (o.peak_tflops * 1e12), losses[static_cast<size_t>(o.warmup)], losses.back(),
        static_cast<double>(memory.peak_in_use_bytes) / (1 << 30),
        static_cast<long long>(memory.raw_allocations - allocations_after_first));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu_train: %s\n", e.what());
    return 1;
  }
  return 0;
}
