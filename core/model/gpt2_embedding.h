// The two ends of a GPT-2 pipeline: the embedding that starts the first stage (token embeddings
// of this rank's vocabulary slice, summed over the tensor-parallel group, plus learned positions)
// and the head that ends the last (final LayerNorm, the output projection through the tied wte,
// the vocabulary-parallel cross-entropy). Pieces of a stage as the block is (gpt2_block.h).
#pragma once

#include "core/model/gpt2_block.h"
#include "core/model/stage_context.h"

namespace loom {

// out (N, C) buffer: partial token embeddings, then (Nl, C) of the residual stream's start in its
// first rows; `scratch` (Nl, C) is free. tokens (N) i32 on the device.
void gpt2_embedding_forward(const StageOps& ops, const StageDims& s, const Tensor& wte, const Tensor& wpe,
                            const Tensor& tokens, int vocab_start, void* out, void* scratch);
// dwte, dwpe += the gradients of d.dresidual, the gradient of the residual stream's start.
void gpt2_embedding_backward(const StageOps& ops, const StageDims& s, const Tensor& dwte, const Tensor& dwpe,
                             const Tensor& tokens, int vocab_start, const StageScratch& d);

// What the head's forward keeps (absent on the other stages: all null).
struct Gpt2HeadActivations {
  void* lnf;         // (Nl, C)
  float* lnf_mean;   // (Nl)
  float* lnf_rstd;   // (Nl)
  void* lnf_full;    // (N, C) or == lnf
  void* logits;      // (N, Vl); becomes d(logits) in place during backward
  float* losses;     // (N)
  float* row_max;    // (N)
  float* row_stats;  // (2N): sum of exps, then the target's logit
};
// Carves the head's buffers, of size 0 unless `present` (the last stage).
void carve_gpt2_head(ArenaCarver& arena, const StageDims& s, bool sequence_parallel, bool present, Gpt2HeadActivations& h);

// The tensors of the head: the final LayerNorm and the (tied) output projection.
struct Gpt2HeadWeights {
  Tensor lnf_w, lnf_b, wte;
};

// logits = ln_f(residual (Nl, C)) @ wte^T for this rank's vocabulary slice; with targets (N) i32
// on the device, the losses (N) of every row too (0 where not counted), the statistics reduced
// over the tensor-parallel group.
void gpt2_head_forward(const StageOps& ops, const StageDims& s, const Gpt2HeadWeights& w, const void* residual,
                       const Tensor& targets, int vocab_start, Gpt2HeadActivations& h);
// d.dresidual (Nl, C) = the gradient of the head's input for d(loss)/d(row losses) = dloss on
// counted rows; the head's weight gradients g accumulate. The logits become their gradient.
void gpt2_head_backward(const StageOps& ops, const StageDims& s, const Gpt2HeadWeights& w, const Gpt2HeadWeights& g,
                        const void* residual, const Tensor& targets, int vocab_start, float dloss,
                        const Gpt2HeadActivations& h, const StageScratch& d);

}  // namespace loom
