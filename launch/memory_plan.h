// How much memory a `loom train` run needs, known before anything is allocated, and the refusal
// of a run that cannot fit: every rank computes the same estimate from the config (its own share
// and every other rank's: the largest is what a host must hold per rank), checks it against what
// its host has, and the run stops before its first allocation with the estimate, what the host
// has, and what to lower. `loom train` prints the same estimate.
//
// Per rank, on the CPU (fp32): the parameter arena and the gradient arena of its model chunks
// (GPT::arena_elements), AdamW's two moments of the elements its optimizer owns (a 1/dp slice
// under ZeRO-1) plus its reduce-scattered gradient slice, the activations of the micro-batches in
// flight (one slot each; a pipeline stage holds up to pp of them), and the token buffers of a
// step. Rank 0 also holds the whole model (weights and gradients) for evaluation and the model
// file. Overheads (the MPI library, OpenBLAS buffers, the checkpoint's host copy) are not counted.
#pragma once

#include <cstdint>
#include <string>

#include "core/config.h"

namespace loom {

struct MemoryEstimate {
  int64_t weights = 0, gradients = 0, optimizer = 0, activations = 0, data = 0;  // bytes, one rank
  int64_t rank0_whole_model = 0;  // bytes rank 0 holds besides its share
  int64_t per_rank() const;
  // "412 MiB per rank (weights 100 MiB, gradients 100 MiB, optimizer 200 MiB, activations 12 MiB,
  // data 0 B), + 50 MiB on rank 0 for the whole model"
  std::string describe() const;
};

// The largest per-rank estimate over the ranks of the config's layout. UserError when a size
// overflows (core/base/checked_math.h).
MemoryEstimate estimate_memory(const config::RunConfig& cfg);

// Bytes the host can still give (/proc/meminfo MemAvailable; 0 where unknown).
int64_t host_available_bytes();

// UserError unless `ranks_on_host` ranks of this estimate (rank 0's extra when `has_rank0`) fit
// in `available` bytes; no check when `available` is 0 (unknown).
void check_memory_fits(const MemoryEstimate& estimate, int ranks_on_host, bool has_rank0, int64_t available);

}  // namespace loom
