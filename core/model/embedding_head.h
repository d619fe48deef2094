// The two ends of a pipeline, shared by the model families: the embedding that starts the first
// stage (token embeddings of this rank's vocabulary slice, summed over the tensor-parallel group,
// plus learned positions where the family has them) and the head that ends the last (final norm,
// the output projection, the vocabulary-parallel cross-entropy). Pieces of a stage as the blocks
// are (gpt2_block.h, llama_block.h).
#pragma once

#include "core/model/gpt2_block.h"
#include "core/model/stage_context.h"

namespace loom {

// out (N, C) buffer: partial token embeddings, then (Nl, C) of the residual stream's start in its
// first rows; `scratch` (Nl, C) is free. tokens (N) i32 on the device. wpe absent: no positions
// (rotary families add theirs in the attention).
void embedding_forward(const StageOps& ops, const StageDims& s, const Tensor& wte, const Tensor& wpe,
                       const Tensor& tokens, int vocab_start, void* out, void* scratch);
// dwte, dwpe += the gradients of d.dresidual, the gradient of the residual stream's start (dwpe
// absent: no positions).
void embedding_backward(const StageOps& ops, const StageDims& s, const Tensor& dwte, const Tensor& dwpe,
                        const Tensor& tokens, int vocab_start, const StageScratch& d);

// The final norm: GPT-2's LayerNorm (weight and bias) or Llama's RMSNorm (weight, eps).
struct HeadNorm {
  bool rms = false;
  float eps = 1e-5f;
};

// What the head's forward keeps (absent on the other stages: all null).
struct HeadActivations {
  void* lnf;         // (Nl, C)
  float* lnf_mean;   // (Nl); LayerNorm only
  float* lnf_rstd;   // (Nl)
  void* lnf_full;    // (N, C) or == lnf
  void* logits;      // (N, Vl); becomes d(logits) in place during backward
  float* losses;     // (N)
  float* row_max;    // (N)
  float* row_stats;  // (2N): sum of exps, then the target's logit
};
// Carves the head's buffers, of size 0 unless `present` (the last stage).
void carve_head(ArenaCarver& arena, const StageDims& s, bool sequence_parallel, bool present, const HeadNorm& norm,
                HeadActivations& h);

// The tensors of the head: the final norm (lnf_b absent for RMSNorm) and the output projection
// (the tied token embedding, or its own).
struct HeadWeights {
  Tensor lnf_w, lnf_b, out;
};

// logits = norm(residual (Nl, C)) @ out^T for this rank's vocabulary slice; with targets (N) i32
// on the device, the losses (N) of every row too (0 where not counted), the statistics reduced
// over the tensor-parallel group.
void head_forward(const StageOps& ops, const StageDims& s, const HeadNorm& norm, const HeadWeights& w,
                  const void* residual, const Tensor& targets, int vocab_start, HeadActivations& h);
// d.dresidual (Nl, C) = the gradient of the head's input for d(loss)/d(row losses) = dloss on
// counted rows; the head's weight gradients g accumulate. The logits become their gradient.
void head_backward(const StageOps& ops, const StageDims& s, const HeadNorm& norm, const HeadWeights& w,
                   const HeadWeights& g, const void* residual, const Tensor& targets, int vocab_start, float dloss,
                   const HeadActivations& h, const StageScratch& d);

}  // namespace loom
