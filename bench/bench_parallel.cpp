// Training throughput of one parallel layout, split into compute and communication (run under
// mpirun; bench/parallel_bench.py runs the layouts side by side).
//
// Trains a GPT of the given shape on random tokens for `steps` timed steps after `warmup`, with the
// process grid's groups wrapped in TimedCommunicator. Rank 0 prints one JSON line: global tokens
// per second, ms per step, and per step the seconds its ranks spent blocked in tensor-, data- and
// pipeline-parallel communication (the maximum over ranks) and the bytes each group moved.
// Pipeline stages split the blocks evenly.
#include <array>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core/gpt.h"
#include "core/optimizer.h"
#include "core/rng.h"
#include "core/train_step.h"
#include "launch/cli.h"
#include "launch/run_setup.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_grid.h"
#include "parallel/timed_communicator.h"

using namespace loom;

int main(int argc, char** argv) {
  parallel::MpiSession mpi(&argc, &argv);
  const std::vector<FlagSpec> flags = {
      {"n-layer", "N", "blocks"}, {"n-head", "N", "heads"}, {"n-embd", "C", "width"},
      {"vocab", "V", "vocabulary"}, {"seq", "T", "sequence length"},
      {"batch", "B", "sequences per micro-batch and replica"}, {"steps", "N", "timed steps"},
      {"warmup", "N", "untimed steps first"}, {"threads", "N", "threads per process"},
      {"tp", "N", "tensor parallel"}, {"dp", "N", "data parallel"}, {"pp", "N", "pipeline stages"},
      {"micro-batches", "N", "micro-batches per step (through the pipeline)"},
      {"virtual-stages", "V", "model chunks per pipeline rank (V > 1: interleaved schedule)"},
      {"sequence-parallel", "", "split token rows in the tp group"}};
  std::unique_ptr<parallel::MpiCommunicator> world = parallel::MpiCommunicator::world();
  try {
    ParsedArgs a = parse_args("bench_parallel", std::vector<std::string>(argv + 1, argv + argc), flags);
    const GPTConfig c{a.get_int("n-layer", 12), a.get_int("n-head", 12), a.get_int("n-embd", 768),
                      a.get_int("vocab", 50257), a.get_int("seq", 64)};
    const int B = a.get_int("batch", 4), T = c.max_seq_len;
    const int steps = a.get_int("steps", 5), warmup = a.get_int("warmup", 1);
    const int tp = a.get_int("tp", 1), dp = a.get_int("dp", 1), pp = a.get_int("pp", 1);
    const int accum = a.get_int("micro-batches", 1);
    const int threads = set_thread_count(a.get_int("threads", 1));
    parallel::ProcessGrid grid(*world, parallel::GridShape{tp, pp, dp});
    parallel::TimedCommunicator timed_tp(grid.tp()), timed_dp(grid.dp()), timed_pp(grid.pp());
    const int chunks = a.get_int("virtual-stages", 1);
    std::vector<std::unique_ptr<GPT>> models;
    std::vector<std::unique_ptr<AdamW>> optimizers;
    std::vector<GPT*> model_ptrs;
    std::vector<AdamW*> optimizer_ptrs;
    for (int chunk = 0; chunk < chunks; ++chunk) {
      ModelParallel layout = model_parallel_for(grid, even_block_split(c.n_layer, pp * chunks),
                                                a.has("sequence-parallel"), chunk, chunks);
      layout.tp = &timed_tp;
      layout.pp = &timed_pp;
      models.push_back(std::make_unique<GPT>(c, layout));
      models.back()->init_weights(1);
      optimizers.push_back(std::make_unique<AdamW>(*models.back(), AdamWSettings{0.9f, 0.95f, 1e-8f, 0.1f, 1.0f}, &timed_dp));
      model_ptrs.push_back(models.back().get());
      optimizer_ptrs.push_back(optimizers.back().get());
    }
    std::vector<int32_t> tokens(static_cast<size_t>(B) * T * accum), targets(tokens.size());
    CounterRng rng(1234, static_cast<uint64_t>(grid.coord().dp));
    for (size_t j = 0; j < tokens.size(); ++j) {
      const std::array<uint32_t, 4> bits = rng.bits(j);
      tokens[j] = static_cast<int32_t>(bits[0] % static_cast<uint32_t>(c.vocab_size));
      targets[j] = static_cast<int32_t>(bits[1] % static_cast<uint32_t>(c.vocab_size));
    }
    std::vector<MicroBatch> micro;
    for (int m = 0; m < accum; ++m) {
      const size_t at = static_cast<size_t>(m) * B * T;
      micro.push_back(MicroBatch{tokens.data() + at, targets.data() + at, B, T});
    }
    using Clock = std::chrono::steady_clock;
    Clock::time_point start;
    for (int step = 0; step < warmup + steps; ++step) {
      if (step == warmup) {
        world->barrier();
        timed_tp.reset_time();
        timed_dp.reset_time();
        timed_pp.reset_time();
        grid.tp().stats().reset();
        grid.dp().stats().reset();
        grid.pp().stats().reset();
        start = Clock::now();
      }
      train_step(model_ptrs, optimizer_ptrs, micro, 3e-4f);
    }
    world->barrier();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    float comm[3] = {static_cast<float>(timed_tp.total_seconds() / steps),
                     static_cast<float>(timed_dp.total_seconds() / steps),
                     static_cast<float>(timed_pp.total_seconds() / steps)};
    world->all_reduce(comm, comm, 3, DType::kF32, parallel::ReduceOp::kMax);
    float pp_bytes = static_cast<float>(grid.pp().stats().total_bytes()) / static_cast<float>(steps);
    world->all_reduce(&pp_bytes, &pp_bytes, 1, DType::kF32, parallel::ReduceOp::kMax);
    if (world->rank() == 0) {
      std::printf("{\"impl\": \"loom\", \"tp\": %d, \"pp\": %d, \"dp\": %d, \"sequence_parallel\": %s, "
                  "\"threads\": %d, \"micro_batches\": %d, \"virtual_stages\": %d, "
                  "\"tokens_per_s\": %.2f, \"ms_per_step\": %.3f, \"tp_comm_s_per_step\": %.4f, "
                  "\"dp_comm_s_per_step\": %.4f, \"pp_comm_s_per_step\": %.4f, \"tp_bytes_per_step\": %.0f, "
                  "\"dp_bytes_per_step\": %.0f, \"pp_bytes_per_step\": %.0f}\n",
                  tp, pp, dp, a.has("sequence-parallel") ? "true" : "false", threads, accum, chunks,
                  static_cast<double>(steps) * B * dp * T * accum / seconds, 1e3 * seconds / steps,
                  static_cast<double>(comm[0]), static_cast<double>(comm[1]), static_cast<double>(comm[2]),
                  static_cast<double>(grid.tp().stats().total_bytes()) / steps,
                  static_cast<double>(grid.dp().stats().total_bytes()) / steps,
                  static_cast<double>(pp_bytes));
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_parallel: error on rank %d: %s\n", world->rank(), e.what());
    MPI_Abort(MPI_COMM_WORLD, 2);
    return 2;
  }
}
