#include "core/model/embedding_head.h"

namespace loom {

void embedding_forward(const StageOps& ops, const StageDims& s, const Tensor& wte, const Tensor& wpe,
                       const Tensor& tokens, int vocab_start, void* out, void* scratch) {
  // Each rank looks up the tokens of its vocabulary slice; the region's reduction completes the
  // embedding, and each rank adds the positions of the rows it holds.
  ops.backend.token_embedding_forward(ops.rows(out, s.N, s.C), tokens, wte, vocab_start);
  RegionEnds(ops, s).leave(out, scratch);
  if (wpe.raw() != nullptr) {
    ops.backend.position_embedding_forward(ops.rows(out, s.Nl, s.C), wpe, s.T, s.first_row, s.local_doc_starts());
  }
}

void embedding_backward(const StageOps& ops, const StageDims& s, const Tensor& dwte, const Tensor& dwpe,
                        const Tensor& tokens, int vocab_start, const StageScratch& d) {
  if (dwpe.raw() != nullptr) {
    ops.backend.position_embedding_backward(dwpe, ops.rows(d.dresidual, s.Nl, s.C), s.T, s.first_row,
                                            s.local_doc_starts());
  }
  const void* dembedded = RegionEnds(ops, s).leave_backward(d.dresidual, d.dfull);
  ops.backend.token_embedding_backward(dwte, ops.rows(dembedded, s.N, s.C), tokens, vocab_start);
}

void carve_head(ArenaCarver& arena, const StageDims& s, bool sp, bool present, const HeadNorm& norm,
                HeadActivations& h) {
  const int64_t head = present ? 1 : 0, n = s.N, nl = s.Nl, C = s.C;
  h.lnf = arena.take_act(head * nl * C);
  h.lnf_mean = norm.rms ? nullptr : arena.take(head * nl);
  h.lnf_rstd = arena.take(head * nl);
  h.lnf_full = sp ? arena.take_act(head * n * C) : h.lnf;
  h.logits = arena.take_act(head * n * s.Vl);
  h.losses = arena.take(head * n);
  h.row_max = arena.take(head * n);
  h.row_stats = arena.take(head * 2 * n);
}

void head_forward(const StageOps& ops, const StageDims& s, const HeadNorm& norm, const HeadWeights& w,
                  const void* residual, const Tensor& targets, int vocab_start, HeadActivations& h) {
  const int N = s.N, Nl = s.Nl, C = s.C;
  Backend& be = ops.backend;
  if (norm.rms) {
    be.rmsnorm_forward(ops.rows(h.lnf, Nl, C), ops.stats(h.lnf_rstd, Nl), ops.rows(residual, Nl, C), w.lnf_w,
                       norm.eps);
  } else {
    be.layernorm_forward(ops.rows(h.lnf, Nl, C), ops.stats(h.lnf_mean, Nl), ops.stats(h.lnf_rstd, Nl),
                         ops.rows(residual, Nl, C), w.lnf_w, w.lnf_b);
  }
  const void* lnf = RegionEnds(ops, s).enter(h.lnf, h.lnf_full);
  const Tensor logits = ops.rows(h.logits, N, s.Vl);
  be.matmul_forward(logits, {}, ops.rows(lnf, N, C), w.out, {}, Epilogue::kNone);
  if (targets.raw() == nullptr) return;  // no targets: the logits alone

  // Vocabulary-parallel cross-entropy: two reductions of per-row statistics over the TP group.
  const Tensor row_max = ops.stats(h.row_max, N);
  const Tensor sum_exp = ops.stats(h.row_stats, N), target_logit = ops.stats(h.row_stats + N, N);
  be.vocab_row_max(row_max, logits);
  parallel::VocabParallelStatistics::max(ops.tp, h.row_max, static_cast<size_t>(N));
  be.vocab_sum_exp(sum_exp, target_logit, logits, targets, row_max, vocab_start);
  parallel::VocabParallelStatistics::sum(ops.tp, h.row_stats, 2 * static_cast<size_t>(N));
  be.vocab_losses(ops.stats(h.losses, N), row_max, sum_exp, target_logit, targets);
}

void head_backward(const StageOps& ops, const StageDims& s, const HeadNorm& norm, const HeadWeights& w,
                   const HeadWeights& g, const void* residual, const Tensor& targets, int vocab_start, float dloss,
                   const HeadActivations& h, const StageScratch& d) {
  const int N = s.N, Nl = s.Nl, C = s.C;
  Backend& be = ops.backend;
  const RegionEnds ends(ops, s);
  // Logits become their gradient in place; the probabilities are never stored.
  const Tensor dlogits = ops.rows(h.logits, N, s.Vl);
  be.vocab_cross_entropy_backward(dlogits, dlogits, targets, ops.stats(h.row_max, N), ops.stats(h.row_stats, N),
                                  vocab_start, dloss);
  // The *_full buffers still hold the rows gathered in the forward.
  be.matmul_backward(ops.rows(d.dfull, N, C), g.out, dlogits, ops.rows(h.lnf_full, N, C), w.out);
  void* dlnf = ends.enter_backward(d.dfull, d.dlocal);
  const Tensor dresidual = ops.rows(d.dresidual, Nl, C);
  be.zero(dresidual);
  if (norm.rms) {
    be.rmsnorm_backward(dresidual, g.lnf_w, ops.rows(dlnf, Nl, C), ops.rows(residual, Nl, C), w.lnf_w,
                        ops.stats(h.lnf_rstd, Nl));
  } else {
    be.layernorm_backward(dresidual, g.lnf_w, g.lnf_b, ops.rows(dlnf, Nl, C), ops.rows(residual, Nl, C), w.lnf_w,
                          ops.stats(h.lnf_mean, Nl), ops.stats(h.lnf_rstd, Nl));
  }
}

}  // namespace loom
