// One GPT-2 block of a stage, on a backend: x += attn(ln_1(x)); x += mlp(ln_2(x)), tensor
// parallel (column-parallel QKV and c_fc, row-parallel projections, the regions of
// stage_context.h between), its forward and backward written out. A stage (core/gpt.cpp) carves
// its activations, owns its weights (gpt2_layout.h gives their order) and runs its blocks in
// turn; a new block type is a file like this one and a layout, composed the same way.
#pragma once

#include <cstddef>
#include <vector>

#include "core/model/stage_context.h"
#include "core/parameter.h"

namespace loom {

// Tensors per block, in the layout's order (gpt2_layout.h).
constexpr size_t kGpt2BlockTensors = 12;

// One block's tensors, values (the compute copy) or gradients.
struct Gpt2BlockWeights {
  Tensor ln1_w, ln1_b, qkv_w, qkv_b, attproj_w, attproj_b;
  Tensor ln2_w, ln2_b, fc_w, fc_b, fcproj_w, fcproj_b;
  // The block whose first tensor is params[first].
  static Gpt2BlockWeights values(const std::vector<Parameter>& params, size_t first);
  static Gpt2BlockWeights grads(const std::vector<Parameter>& params, size_t first);
};

// What a block's forward keeps for its backward. Buffers (`void*`) hold the activation dtype; the
// statistics (`float*`) f32.
struct Gpt2BlockActivations {
  void* ln1;         // (Nl, C)
  float* ln1_mean;   // (Nl)
  float* ln1_rstd;   // (Nl)
  void* ln1_full;    // (N, C): all rows (sequence parallel), else == ln1
  void* qkv;         // (N, 3Cl)
  void* atty;        // (N, Cl)
  float* att_lse;    // (B, NHl, T)
  void* attproj;     // (N, C): partial sums, then (Nl, C) of the reduced output in its first rows
  void* residual2;   // (Nl, C)
  void* ln2;         // (Nl, C)
  float* ln2_mean;   // (Nl)
  float* ln2_rstd;   // (Nl)
  void* ln2_full;    // (N, C) or == ln2
  void* fch;         // (N, Fl)
  void* fch_gelu;    // (N, Fl)
  void* fcproj;      // (N, C) as attproj
  void* residual3;   // (Nl, C): the block's output
};

// Carves a block's buffers but residual3 (always the block's own: the next block's input), and
// the attention core (atty, att_lse) only with `attention_core` (selective recomputation shares
// one).
void carve_gpt2_block(ArenaCarver& arena, const StageDims& s, bool sequence_parallel, bool attention_core,
                      Gpt2BlockActivations& a);
// The attention core alone.
void carve_gpt2_attention_core(ArenaCarver& arena, const StageDims& s, Gpt2BlockActivations& a);

// residual3 = the block applied to `residual` (Nl, C); `scratch` (Nl, C) is free for the
// sequence-parallel scatter.
void gpt2_block_forward(const StageOps& ops, const StageDims& s, const Gpt2BlockWeights& w, Gpt2BlockActivations& a,
                        const void* residual, void* scratch);
// d.dresidual holds d(loss)/d(block output) and becomes d(loss)/d(block input); the weight
// gradients g accumulate. With `recompute_attention` the attention core is rebuilt from the kept
// QKV first (selective recomputation).
void gpt2_block_backward(const StageOps& ops, const StageDims& s, const Gpt2BlockWeights& w, const Gpt2BlockWeights& g,
                         const Gpt2BlockActivations& a, const void* residual, const StageScratch& d,
                         bool recompute_attention);

}  // namespace loom
