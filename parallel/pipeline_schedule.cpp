#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <map>
#include <utility>

#include "core/base/check.h"

namespace loom::parallel {

namespace {

using Kind = PipelineAction::Kind;

void check_shape(int stages, int stage, int chunks, int micro_batches) {
  if (stages < 1 || chunks < 1 || micro_batches < 1) {
    fail_user("a pipeline needs stages, chunks per stage and micro-batches >= 1, got", stages,
              "stages,", chunks, "chunks,", micro_batches, "micro-batches");
  }
  LOOM_CHECK(stage >= 0 && stage < stages, "stage", stage, "of", stages);
  if (chunks > 1 && micro_batches % stages != 0) {
    fail_user("the interleaved pipeline schedule runs micro-batches in groups of the", stages,
              "stages, so the number of micro-batches (", micro_batches,
              ") must be a multiple of it");
  }
}

}  // namespace

std::vector<PipelineAction> schedule_1f1b(int stages, int stage, int micro_batches) {
  check_shape(stages, stage, 1, micro_batches);
  const int warmup = std::min(stages - stage - 1, micro_batches);
  std::vector<PipelineAction> out;
  int next_forward = 0, next_backward = 0;
  for (int i = 0; i < warmup; ++i) out.push_back({Kind::kForward, next_forward++, 0});
  while (next_forward < micro_batches) {
    out.push_back({Kind::kForward, next_forward++, 0});
    out.push_back({Kind::kBackward, next_backward++, 0});
  }
  while (next_backward < micro_batches) out.push_back({Kind::kBackward, next_backward++, 0});
  return out;
}

std::vector<PipelineAction> schedule_interleaved(int stages, int stage, int chunks, int micro_batches) {
  check_shape(stages, stage, chunks, micro_batches);
  if (chunks == 1) return schedule_1f1b(stages, stage, micro_batches);
  const int p = stages, v = chunks, total = micro_batches * chunks;
  // The k-th forward (backward) of this rank: micro-batches advance in groups of p, and within a
  // group through the chunks in order (backwards: in reverse order).
  auto micro_batch_of = [&](int k) { return (k / (p * v)) * p + k % p; };
  auto forward_chunk = [&](int k) { return (k / p) % v; };
  auto backward_chunk = [&](int k) { return v - 1 - (k / p) % v; };
  // Enough forwards in flight that the last virtual stage is reached before the first backward.
  const int warmup = std::min(total, (p - stage - 1) * 2 + (v - 1) * p);
  std::vector<PipelineAction> out;
  int f = 0, b = 0;
  for (; f < warmup; ++f) out.push_back({Kind::kForward, micro_batch_of(f), forward_chunk(f)});
  while (f < total) {
    out.push_back({Kind::kForward, micro_batch_of(f), forward_chunk(f)});
    ++f;
    out.push_back({Kind::kBackward, micro_batch_of(b), backward_chunk(b)});
    ++b;
  }
  for (; b < total; ++b) out.push_back({Kind::kBackward, micro_batch_of(b), backward_chunk(b)});
  return out;
}

std::vector<std::vector<PipelineAction>> pipeline_schedules(int stages, int chunks, int micro_batches) {
  std::vector<std::vector<PipelineAction>> all;
  for (int s = 0; s < stages; ++s) all.push_back(schedule_interleaved(stages, s, chunks, micro_batches));
  return all;
}

PipelineSimulation simulate_pipeline(const std::vector<std::vector<PipelineAction>>& schedules,
                                     int chunks, double forward_time, double backward_time) {
  const int p = static_cast<int>(schedules.size());
  const int last_virtual = chunks * p - 1;
  // End time of (kind, micro-batch, virtual stage) once it has run.
  std::map<std::tuple<int, int, int>, double> done;
  std::vector<size_t> next(static_cast<size_t>(p), 0);
  std::vector<double> free_at(static_cast<size_t>(p), 0.0);
  double busy = 0;
  PipelineSimulation result;
  for (bool progress = true; progress;) {
    progress = false;
    for (int s = 0; s < p; ++s) {
      const std::vector<PipelineAction>& list = schedules[static_cast<size_t>(s)];
      while (next[static_cast<size_t>(s)] < list.size()) {
        const PipelineAction& a = list[next[static_cast<size_t>(s)]];
        const int vs = a.chunk * p + s;
        const bool forward = a.kind == Kind::kForward;
        double ready = free_at[static_cast<size_t>(s)];
        auto need = [&](int kind, int stage) {
          auto it = done.find({kind, a.micro_batch, stage});
          if (it == done.end()) return false;
          ready = std::max(ready, it->second);
          return true;
        };
        const bool runnable = forward ? (vs == 0 || need(0, vs - 1))
                                      : (need(0, vs) && (vs == last_virtual || need(1, vs + 1)));
        if (!runnable) break;
        const double end = ready + (forward ? forward_time : backward_time);
        done[{forward ? 0 : 1, a.micro_batch, vs}] = end;
        free_at[static_cast<size_t>(s)] = end;
        busy += forward ? forward_time : backward_time;
        result.makespan = std::max(result.makespan, end);
        ++next[static_cast<size_t>(s)];
        progress = true;
      }
    }
  }
  for (int s = 0; s < p; ++s) {
    if (next[static_cast<size_t>(s)] < schedules[static_cast<size_t>(s)].size()) result.deadlock = true;
  }
  result.bubble = result.makespan > 0 ? 1.0 - busy / (p * result.makespan) : 0.0;
  return result;
}

double pipeline_bubble_fraction(int stages, int chunks, int micro_batches) {
  const double p = stages, v = chunks, m = micro_batches;
  return (p - 1) / (v * m + p - 1);
}

}  // namespace loom::parallel
