// What the pieces of a pipeline stage (embedding, blocks, head: core/model/gpt2_*.h) share: the
// sizes of a micro-batch on this rank, the backend and tensor-parallel group their ops run on,
// the ends of a tensor-parallel region, and the carving of a stage's activation arena.
#pragma once

#include <cstdint>

#include "core/backend/backend.h"
#include "core/base/checked_math.h"
#include "core/tensor.h"
#include "parallel/communicator.h"
#include "parallel/regions.h"

namespace loom {

// Sizes of this rank's share of a micro-batch of (B, T). N = B * T token rows; Nl rows of the
// residual stream per rank (N / tp with sequence parallelism, else N); Cl = C / tp attention
// channels (NHl query heads, NKVl key/value heads); QKVl = (NHl + 2 NKVl) x head size, the fused
// q, k, v columns; Fl MLP hidden units (GPT-2 4C / tp, Llama intermediate_size / tp); MLPl the
// MLP's first matmul's columns (GPT-2 Fl; Llama 2 Fl, gate and up); Vl vocabulary rows;
// first_row: this rank's first row of the residual stream. doc_starts (N) i32 on the device: each
// row's document start when documents are packed into sequences (backend.h), absent for one
// document per sequence; the attention and RoPE read all N rows, the position embedding the Nl of
// this rank (local_doc_starts).
struct StageDims {
  int B, T, N, Nl, C, Cl, NHl, NKVl, QKVl, Fl, MLPl, Vl, first_row;
  Tensor doc_starts;

  Tensor local_doc_starts() const {
    return doc_starts.raw() == nullptr ? Tensor() : doc_starts.slice_rows(first_row, first_row + Nl);
  }
};

// The backend, the tensor-parallel group and the activation dtype a stage's ops run with, and
// views of activation buffers (on the backend's device) as the ops take them.
struct StageOps {
  Backend& backend;
  parallel::Communicator& tp;
  bool sequence_parallel;
  DType act;  // activations: f32 or bf16

  // (rows, cols) of the activation dtype; (n) f32 statistics.
  Tensor rows(const void* p, int64_t r, int64_t c) const {
    return Tensor::view(const_cast<void*>(p), {r, c}, act, backend.device());
  }
  Tensor stats(const float* p, int64_t n) const {
    return Tensor::view(const_cast<float*>(p), {n}, DType::kF32, backend.device());
  }
};

// The two ends of a tensor-parallel region, in the sequence-parallel or the plain variant.
// enter: (Nl, C) rows this rank holds -> (N, C) all rows, for a column-parallel matmul.
// leave: (N, C) partial sums of a row-parallel matmul -> (Nl, C) reduced rows, in place at the
//        start of the same buffer.
struct RegionEnds {
  const StageOps& ops;
  size_t Nl, C;

  RegionEnds(const StageOps& o, const StageDims& s) : ops(o), Nl(static_cast<size_t>(s.Nl)), C(static_cast<size_t>(s.C)) {}

  const void* enter(const void* local, void* full) const {
    if (!ops.sequence_parallel) return local;  // CopyToTensorParallel::forward is the identity
    parallel::GatherFromSequenceParallel::forward(ops.tp, local, full, Nl, C, ops.act);
    return full;
  }
  // d(full) (N, C) -> d(local) (Nl, C); returns where d(local) is.
  void* enter_backward(void* dfull, void* dlocal) const {
    if (!ops.sequence_parallel) {
      parallel::CopyToTensorParallel::backward(ops.tp, dfull, Nl * C, ops.act);
      return dfull;
    }
    parallel::GatherFromSequenceParallel::backward(ops.tp, dfull, dlocal, Nl, C, ops.act);
    return dlocal;
  }
  void leave(void* partial, void* scratch) const {
    if (!ops.sequence_parallel) {
      parallel::ReduceFromTensorParallel::forward(ops.tp, partial, Nl * C, ops.act);
      return;
    }
    parallel::ScatterToSequenceParallel::forward(ops.tp, partial, scratch, Nl, C, ops.act);
    const auto nl = static_cast<int64_t>(Nl), c = static_cast<int64_t>(C);
    ops.backend.copy(ops.rows(partial, nl, c), ops.rows(scratch, nl, c));
  }
  // d(reduced) (Nl, C) -> d(partial) (N, C); returns where it is.
  const void* leave_backward(const void* dlocal, void* dfull) const {
    if (!ops.sequence_parallel) return dlocal;  // ReduceFromTensorParallel::backward is the identity
    parallel::ScatterToSequenceParallel::backward(ops.tp, dlocal, dfull, Nl, C, ops.act);
    return dfull;
  }
};

// The backward's scratch, shared by the pieces of a stage.
struct StageScratch {
  void* dresidual;   // (Nl, C): the residual stream's gradient
  void* dfull;       // (N, C): a gradient with all rows
  void* dlocal;      // (Nl, C)
  void* datty;       // (N, Cl)
  void* dqkv;        // (N, QKVl)
  void* dfch;        // (N, MLPl): the gradient of the MLP's first matmul's output
  void* dfch_gelu;   // (N, Fl): the gradient of the MLP's activation's output
};

// Hands out the buffers of one activation arena in order, each at a multiple of `align` floats;
// with a null base it only counts. Counts are products of config sizes: checked, as is the total.
class ArenaCarver {
 public:
  ArenaCarver(float* base, bool bf16, int64_t align) : base_(base), half_(bf16), align_(align) {}
  // `count` f32 values (statistics).
  float* take(int64_t count) {
    used_ = checked_add(used_, (align_ - used_ % align_) % align_, "the activations of a micro-batch");
    float* out = base_ ? base_ + used_ : nullptr;
    used_ = checked_add(used_, count, "the activations of a micro-batch");
    return out;
  }
  // `count` elements of the activation dtype: bf16 ones take half the floats (rounded up).
  void* take_act(int64_t count) { return take(half_ ? (count + 1) / 2 : count); }
  int64_t used() const { return used_; }

 private:
  float* base_;
  bool half_;
  int64_t align_;
  int64_t used_ = 0;  // in floats
};

// Carves the backward's scratch.
inline void carve_stage_scratch(ArenaCarver& arena, const StageDims& s, StageScratch& d) {
  const int64_t n = s.N, nl = s.Nl, C = s.C;
  d.dresidual = arena.take_act(nl * C);
  d.dfull = arena.take_act(n * C);
  d.dlocal = arena.take_act(nl * C);
  d.datty = arena.take_act(n * s.Cl);
  d.dqkv = arena.take_act(checked_mul(n, s.QKVl, "the QKV activations"));
  d.dfch = arena.take_act(checked_mul(n, s.MLPl, "the MLP activations"));
  d.dfch_gelu = arena.take_act(checked_mul(n, s.Fl, "the MLP activations"));
}

}  // namespace loom
