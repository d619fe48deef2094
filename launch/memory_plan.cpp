#include "launch/memory_plan.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/base/checked_math.h"
#include "core/base/format.h"
#include "core/gpt.h"
#include "launch/run_shape.h"

namespace loom {

namespace {

constexpr int64_t kFloat = sizeof(float);

std::string bytes_text(int64_t n) { return format_bytes(static_cast<uint64_t>(n)); }

}  // namespace

int64_t MemoryEstimate::per_rank() const {
  int64_t total = 0;
  for (int64_t part : {weights, gradients, optimizer, activations, data}) total = checked_add(total, part, "the memory a rank needs");
  return total;
}

std::string MemoryEstimate::describe() const {
  std::string s = bytes_text(per_rank()) + " per rank (weights " + bytes_text(weights) + ", gradients " +
                  bytes_text(gradients) + ", optimizer " + bytes_text(optimizer) + ", activations " +
                  bytes_text(activations) + ", data " + bytes_text(data) + ")";
  if (rank0_whole_model > 0) s += " + " + bytes_text(rank0_whole_model) + " on rank 0 for the whole model";
  return s;
}

MemoryEstimate estimate_memory(const config::RunConfig& cfg) {
  const GPTConfig model = model_config_of(cfg);
  const config::ParallelConfig& p = cfg.parallel();
  const config::TrainConfig& t = cfg.train();
  const std::vector<int> split = pipeline_split(cfg);
  const int pp = p.pp(), chunks = p.virtual_stages(), dp = p.dp(), tp = p.tp();
  const int64_t B = t.micro_batch_size(), accum = t.grad_accum_steps();
  const int64_t T = cfg.data().has_tokens() ? cfg.data().tokens().seq_len() : model.max_seq_len;
  const auto recompute = static_cast<Recompute>(t.recompute());
  // Micro-batches whose activations a stage holds at once: all of a step's on one stage, up to
  // pp (times the chunks, interleaved) in a pipeline.
  const int64_t in_flight = pp == 1 ? 1 : std::min<int64_t>(accum, static_cast<int64_t>(pp) * chunks);

  // Blocks before each virtual stage (a config may have millions of stages: no quadratic loop).
  std::vector<int> first_layer(split.size(), 0);
  for (size_t s = 1; s < split.size(); ++s) first_layer[s] = first_layer[s - 1] + split[s - 1];

  MemoryEstimate worst;
  for (int stage = 0; stage < pp; ++stage) {
    for (int r = 0; r < tp; ++r) {
      MemoryEstimate e;
      for (int c = 0; c < chunks; ++c) {
        const int virtual_stage = c * pp + stage;
        StageShape shape;
        shape.tp = tp;
        shape.tp_rank = r;
        shape.first_layer = first_layer[static_cast<size_t>(virtual_stage)];
        shape.end_layer = shape.first_layer + split[static_cast<size_t>(virtual_stage)];
        shape.first_stage = virtual_stage == 0;
        shape.last_stage = virtual_stage == pp * chunks - 1;
        shape.sequence_parallel = p.sequence_parallel();
        shape.arena_multiple = dp;
        shape.precision = cpu_precision_of(cfg);
        const int64_t arena = checked_mul(GPT::arena_elements(model, shape), kFloat, "the parameter bytes");
        e.weights = checked_add(e.weights, arena, "the parameter bytes");
        // bf16: the copy of the weights the ops read, 2 bytes an element.
        if (shape.precision == Precision::kBF16) e.weights = checked_add(e.weights, arena / 2, "the parameter bytes");
        e.gradients = checked_add(e.gradients, arena, "the gradient bytes");
        // m and v of the owned 1/dp slice, and the reduce-scattered gradient slice when dp > 1.
        const int64_t slice = arena / dp;
        e.optimizer = checked_add(e.optimizer, checked_mul(slice, dp > 1 ? 3 : 2, "the optimizer bytes"),
                                  "the optimizer bytes");
        const int64_t slot = checked_mul(GPT::activation_elements(model, shape, recompute, B, T), kFloat,
                                         "the activation bytes");
        e.activations = checked_add(e.activations, checked_mul(slot, in_flight, "the activation bytes"),
                                    "the activation bytes");
      }
      // Token and target ids of a step (the addition task makes every replica's rows).
      e.data = checked_mul(checked_mul(checked_mul(B, dp, "the batch"), T, "the batch"), accum * 2 * 4,
                           "the batch bytes");
      if (e.per_rank() > worst.per_rank()) worst = e;
    }
  }
  // Rank 0's whole model (weights only): none when one process trains the whole model itself.
  const bool one_process = tp * pp * dp == 1 && chunks == 1;
  worst.rank0_whole_model =
      one_process ? 0 : checked_mul(GPT::arena_elements(model, StageShape{}), kFloat, "the whole model's bytes");
  return worst;
}

int64_t host_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

void check_memory_fits(const MemoryEstimate& estimate, int ranks_on_host, bool has_rank0, int64_t available) {
  if (available <= 0) return;
  int64_t need = checked_mul(estimate.per_rank(), std::max(1, ranks_on_host), "the memory a host needs");
  if (has_rank0) need = checked_add(need, estimate.rank0_whole_model, "the memory a host needs");
  if (need <= available) return;
  fail_user("this run needs about", bytes_text(need), "on this host (" + std::to_string(ranks_on_host),
            ranks_on_host == 1 ? "rank" : "ranks", "here; estimated", estimate.describe() + "), but the host has",
            bytes_text(available), "available: lower train.micro_batch_size, model.n_layer, model.n_embd or the sequence length, "
            "set train.recompute, or spread the model over more ranks (parallel.tp, parallel.pp)");
}

}  // namespace loom
