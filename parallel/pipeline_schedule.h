// Pipeline schedules: the order in which one pipeline rank runs the forward and backward passes
// of its micro-batches. A schedule knows nothing of the model: it is a list of actions, and the
// pipeline runner turns each into a forward or backward of one model chunk plus the sends and
// receives of activations and gradients between neighbouring stages.
//
// 1F1B (PipeDream-Flush): rank s of p runs min(p - s - 1, m) warm-up forwards, then alternates one
// forward and one backward, then drains the remaining backwards; at most p micro-batches are in
// flight on a rank, so activation memory is bounded by p, not m.
// Interleaved (Megatron's virtual pipeline): each rank holds v model chunks; chunk c of rank s is
// virtual stage c * p + s of v * p. Micro-batches advance in groups of p, chunk by chunk, which
// shrinks the bubble by v at the cost of v times more point-to-point messages. Needs m % p == 0.
#pragma once

#include <vector>

namespace loom::parallel {

struct PipelineAction {
  enum class Kind { kForward, kBackward } kind;
  int micro_batch;
  int chunk;  // model chunk on this rank (0 for 1F1B)
  bool operator==(const PipelineAction&) const = default;
};

// UserError for a shape that has no schedule (stages, chunks or micro-batches < 1; interleaved
// with micro_batches not a multiple of stages).
std::vector<PipelineAction> schedule_1f1b(int stages, int stage, int micro_batches);
std::vector<PipelineAction> schedule_interleaved(int stages, int stage, int chunks, int micro_batches);

// The schedule of every rank (chunks == 1: 1F1B).
std::vector<std::vector<PipelineAction>> pipeline_schedules(int stages, int chunks, int micro_batches);

struct PipelineSimulation {
  bool deadlock = false;   // some rank waits for an action that can never run
  double makespan = 0;     // time until the last action ends
  double bubble = 0;       // idle fraction of the ranks' time: 1 - busy / (stages * makespan)
};

// Runs the schedules with every forward of a chunk taking `forward_time` and every backward
// `backward_time`, and communication free: a forward of virtual stage k waits for the same
// micro-batch's forward of stage k - 1, a backward for its own forward and for the backward of
// stage k + 1. For 1F1B the bubble is (p - 1) / (m + p - 1); interleaved, (p - 1) / (v m + p - 1).
PipelineSimulation simulate_pipeline(const std::vector<std::vector<PipelineAction>>& schedules,
                                     int chunks, double forward_time, double backward_time);

// The bubble fraction of the formulas above.
double pipeline_bubble_fraction(int stages, int chunks, int micro_batches);

}  // namespace loom::parallel
