// What the operations guards cost a training step: the per-step agreement on stopping
// (agree_on_stop, one 4-byte max all-reduce over the world) and the memory figure of a progress
// line (peak_rss_bytes plus, at a log step, another max all-reduce). Run under mpirun at the
// world size of interest; rank 0 prints one JSON line with the median over repeats of the
// microseconds per call, to set against a step's milliseconds (docs/benchmarks.md).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "launch/cli.h"
#include "launch/metrics.h"
#include "launch/stop_request.h"
#include "parallel/mpi_communicator.h"

using namespace loom;

int main(int argc, char** argv) {
  parallel::MpiSession mpi(&argc, &argv);
  const std::vector<FlagSpec> flags = {
      {"calls", "N", "calls per repeat (default 2000)"},
      {"repeats", "N", "repeats; the median is printed (default 7)"},
      {"help", "", "show this help"},
  };
  const ParsedArgs args = parse_args("bench_stop_agreement", std::vector<std::string>(argv + 1, argv + argc), flags);
  auto world = parallel::MpiCommunicator::world();
  if (args.has("help")) {
    if (world->rank() == 0) std::fputs(usage_text("mpirun -np N bench_stop_agreement", "", flags).c_str(), stdout);
    return 0;
  }
  const int calls = args.get_int("calls", 2000), repeats = args.get_int("repeats", 7);
  using Clock = std::chrono::steady_clock;
  auto median_us = [&](auto&& body) {
    std::vector<double> per_call;
    for (int r = 0; r < repeats; ++r) {
      world->barrier();
      const auto start = Clock::now();
      for (int i = 0; i < calls; ++i) body();
      world->barrier();
      per_call.push_back(1e6 * std::chrono::duration<double>(Clock::now() - start).count() / calls);
    }
    std::sort(per_call.begin(), per_call.end());
    return per_call[per_call.size() / 2];
  };
  const double agree = median_us([&] { agree_on_stop(*world, StopReason::kNone); });
  const double memory = median_us([&] {
    int32_t mib = static_cast<int32_t>(peak_rss_bytes() >> 20);
    if (world->size() > 1) world->all_reduce(&mib, &mib, 1, DType::kI32, parallel::ReduceOp::kMax);
  });
  if (world->rank() == 0) {
    std::printf("{\"ranks\": %d, \"agree_on_stop_us\": %.2f, \"memory_max_us\": %.2f}\n", world->size(), agree, memory);
  }
  return 0;
}
