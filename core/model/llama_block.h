// One Llama block of a stage, on a backend: x += attn(rmsnorm_1(x)); x += mlp(rmsnorm_2(x)), with
// rotary positions on q and k, grouped-query attention (NKV key/value heads serving NH query
// heads) and a SwiGLU MLP; no biases but Qwen2's optional q, k, v ones. Tensor parallel as GPT-2's
// block (gpt2_block.h): column-parallel fused QKV (a rank holds whole key/value groups and their
// query heads) and fused gate/up, row-parallel o_proj and down_proj, the regions of
// stage_context.h between.
#pragma once

#include <vector>

#include "core/model/stage_context.h"
#include "core/parameter.h"

namespace loom {

// What every Llama block of a model shares: RMSNorm's epsilon, the rotary inverse frequencies
// (head size / 2, f32 on the backend's device) and whether q, k, v have biases.
struct LlamaBlockConfig {
  float eps = 1e-5f;
  Tensor inv_freq;
  bool qkv_bias = false;
};

// One block's tensors, values (the compute copy) or gradients; qkv_b absent without biases.
struct LlamaBlockWeights {
  Tensor ln1_w, qkv_w, qkv_b, o_w, ln2_w, gate_up_w, down_w;
  // The block whose first tensor is params[first] (llama_layout's order).
  static LlamaBlockWeights values(const std::vector<Parameter>& params, size_t first, bool qkv_bias);
  static LlamaBlockWeights grads(const std::vector<Parameter>& params, size_t first, bool qkv_bias);
};

// What a block's forward keeps for its backward. Buffers (`void*`) hold the activation dtype; the
// statistics (`float*`) f32.
struct LlamaBlockActivations {
  void* ln1;        // (Nl, C)
  float* ln1_rstd;  // (Nl)
  void* ln1_full;   // (N, C): all rows (sequence parallel), else == ln1
  void* qkv;        // (N, QKVl): q and k rotated
  void* atty;       // (N, Cl)
  float* att_lse;   // (B, NHl, T)
  void* attproj;    // (N, C): partial sums, then (Nl, C) of the reduced output in its first rows
  void* residual2;  // (Nl, C)
  void* ln2;        // (Nl, C)
  float* ln2_rstd;  // (Nl)
  void* ln2_full;   // (N, C) or == ln2
  void* gate_up;    // (N, 2 Fl): [gate | up]
  void* mlp_h;      // (N, Fl): silu(gate) * up
  void* mlpproj;    // (N, C) as attproj
  void* residual3;  // (Nl, C): the block's output
};

// As carve_gpt2_block and carve_gpt2_attention_core (gpt2_block.h).
void carve_llama_block(ArenaCarver& arena, const StageDims& s, bool sequence_parallel, bool attention_core,
                       LlamaBlockActivations& a);
void carve_llama_attention_core(ArenaCarver& arena, const StageDims& s, LlamaBlockActivations& a);

// residual3 = the block applied to `residual` (Nl, C); `scratch` (Nl, C) is free for the
// sequence-parallel scatter.
void llama_block_forward(const StageOps& ops, const StageDims& s, const LlamaBlockConfig& cfg,
                         const LlamaBlockWeights& w, LlamaBlockActivations& a, const void* residual, void* scratch);
// d.dresidual holds d(loss)/d(block output) and becomes d(loss)/d(block input); the weight
// gradients g accumulate. With `recompute_attention` the attention core is rebuilt from the kept
// (rotated) QKV first (selective recomputation).
void llama_block_backward(const StageOps& ops, const StageDims& s, const LlamaBlockConfig& cfg,
                          const LlamaBlockWeights& w, const LlamaBlockWeights& g, const LlamaBlockActivations& a,
                          const void* residual, const StageScratch& d, bool recompute_attention);

}  // namespace loom
