// AdamW over every parameter in one launch, fp32 master weights and moments, bf16 copies for
// compute; and the global gradient norm (CPU twin: kernels/cpu/adamw.h).
//
// The parameters lie in one flat arena. Which elements take weight decay is given per segment
// (a parameter's run of elements); the kernel finds each element's segment by a binary search in
// a table kept in device memory. Clipping needs the global norm, which the norm kernels leave in
// device memory: the update reads it there, so no step waits for the host. When that norm is
// not finite the update does nothing (the trainer, reading the norm later, counts a skipped step).
//
// No backward here. sum_of_squares overwrites its result, or adds to it with `accumulate`;
// finish_norm turns the sum into the norm in place, which is what adamw_update reads (the
// Backend's adamw_update is handed the norm itself, so it calls the update directly).
#pragma once

#include "kernels/cpu/adamw.h"
#include "kernels/cuda/common.h"

namespace loom::kernels::cuda {

// A parameter's run of elements (begin, end, decay) and the step's hyperparameters (lr, beta1,
// beta2, eps, weight_decay, step, max_norm): the CPU twin's types, so that both take one table.
using AdamWSegment = cpu::AdamWSegment;
using AdamWHyper = cpu::AdamWArenaHyper;

// Segments sorted by begin, disjoint; elements outside every segment (arena padding) are left
// alone. master, m, v (n) fp32 updated; params (n) bf16 = master rounded to nearest even
// (loom::float_to_bf16's bits); grad (n) fp32. global_norm: one fp32 in device memory
// (finish_norm's result). segments: device array, which the launcher cannot read: the caller
// checks its host copy once with cpu::check_adamw_segments. Twin: cpu::adamw_update_segments.
// Matches torch.optim.AdamW with clip_grad_norm_ (factor min(1, max_norm / (norm + 1e-6))).
void adamw_update(float* master, bf16* params, const float* grad, float* m, float* v, int64_t n,
                  const AdamWSegment* segments, int num_segments, const float* global_norm,
                  const AdamWHyper& hyper, cudaStream_t stream);

// Floats of scratch the norm needs (one double partial sum per block of the first pass, so two
// floats each); the scratch must be 8-byte aligned (any allocator block is).
size_t gradient_norm_scratch_floats();

// sum_of_squares (one fp32 in device memory) = sum of x[i]^2, accumulated deterministically
// (a fixed grid of blocks, each summing its strided elements and then a tree, in double; one
// block adds the partials in a fixed tree, in double), so the bits do not change from run to run.
// `accumulate`: add to the value already there (a norm over several buffers).
void sum_of_squares(float* result, const float* x, int64_t n, bool accumulate, float* scratch,
                    cudaStream_t stream);
// result = sqrt(sum_of_squares), in place.
void finish_norm(float* result, cudaStream_t stream);

// out (n) bf16 = in (n) fp32 rounded to nearest even (weights from the master copy).
void f32_to_bf16(bf16* out, const float* in, int64_t n, cudaStream_t stream);
// out (n) fp32 = in (n) bf16.
void bf16_to_f32(float* out, const bf16* in, int64_t n, cudaStream_t stream);

}  // namespace loom::kernels::cuda
