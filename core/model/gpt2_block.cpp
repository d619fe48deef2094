#include "core/model/gpt2_block.h"

namespace loom {

namespace {

Gpt2BlockWeights block_of(const std::vector<Parameter>& params, size_t first, bool grads) {
  auto t = [&](size_t i) { return grads ? params[first + i].grad : params[first + i].compute; };
  return {t(0), t(1), t(2), t(3), t(4), t(5), t(6), t(7), t(8), t(9), t(10), t(11)};
}

}  // namespace

Gpt2BlockWeights Gpt2BlockWeights::values(const std::vector<Parameter>& params, size_t first) {
  return block_of(params, first, false);
}

Gpt2BlockWeights Gpt2BlockWeights::grads(const std::vector<Parameter>& params, size_t first) {
  return block_of(params, first, true);
}

void carve_gpt2_attention_core(ArenaCarver& arena, const StageDims& s, Gpt2BlockActivations& a) {
  a.atty = arena.take_act(static_cast<int64_t>(s.N) * s.Cl);
  a.att_lse = arena.take(static_cast<int64_t>(s.B) * s.NHl * s.T);
}

void carve_gpt2_block(ArenaCarver& arena, const StageDims& s, bool sp, bool attention_core, Gpt2BlockActivations& a) {
  const int64_t n = s.N, nl = s.Nl, C = s.C;
  // Without sequence parallelism the gathered ("full") input of a column-parallel matmul is the
  // LayerNorm output itself.
  a.ln1 = arena.take_act(nl * C);
  a.ln1_mean = arena.take(nl);
  a.ln1_rstd = arena.take(nl);
  a.ln1_full = sp ? arena.take_act(n * C) : a.ln1;
  a.qkv = arena.take_act(checked_mul(n, 3 * static_cast<int64_t>(s.Cl), "the QKV activations"));
  if (attention_core) carve_gpt2_attention_core(arena, s, a);
  a.attproj = arena.take_act(n * C);
  a.residual2 = arena.take_act(nl * C);
  a.ln2 = arena.take_act(nl * C);
  a.ln2_mean = arena.take(nl);
  a.ln2_rstd = arena.take(nl);
  a.ln2_full = sp ? arena.take_act(n * C) : a.ln2;
  a.fch = arena.take_act(n * s.Fl);
  a.fch_gelu = arena.take_act(n * s.Fl);
  a.fcproj = arena.take_act(n * C);
}

void gpt2_block_forward(const StageOps& ops, const StageDims& s, const Gpt2BlockWeights& w, Gpt2BlockActivations& a,
                        const void* residual, void* scratch) {
  const int B = s.B, T = s.T, N = s.N, Nl = s.Nl, C = s.C;
  const RegionEnds ends(ops, s);
  auto A = [&](const void* p, int64_t rows, int64_t cols) { return ops.rows(p, rows, cols); };
  Backend& be = ops.backend;
  be.layernorm_forward(A(a.ln1, Nl, C), ops.stats(a.ln1_mean, Nl), ops.stats(a.ln1_rstd, Nl), A(residual, Nl, C),
                       w.ln1_w, w.ln1_b);
  const void* ln1 = ends.enter(a.ln1, a.ln1_full);
  be.matmul_forward(A(a.qkv, N, 3 * s.Cl), {}, A(ln1, N, C), w.qkv_w, w.qkv_b, Epilogue::kBias);
  be.attention_forward(A(a.atty, N, s.Cl), ops.stats(a.att_lse, static_cast<int64_t>(B) * s.NHl * T),
                       A(a.qkv, N, 3 * s.Cl), B, T, s.NHl, s.NHl, s.doc_starts);
  be.matmul_forward(A(a.attproj, N, C), {}, A(a.atty, N, s.Cl), w.attproj_w, {}, Epilogue::kNone);
  ends.leave(a.attproj, scratch);
  // The row-parallel bias is added once, after the tensor-parallel reduction.
  be.residual_layernorm_forward(A(a.residual2, Nl, C), A(a.ln2, Nl, C), ops.stats(a.ln2_mean, Nl),
                                ops.stats(a.ln2_rstd, Nl), A(residual, Nl, C), A(a.attproj, Nl, C), w.attproj_b,
                                w.ln2_w, w.ln2_b);
  const void* ln2 = ends.enter(a.ln2, a.ln2_full);
  be.matmul_forward(A(a.fch_gelu, N, s.Fl), A(a.fch, N, s.Fl), A(ln2, N, C), w.fc_w, w.fc_b, Epilogue::kBiasGelu);
  be.matmul_forward(A(a.fcproj, N, C), {}, A(a.fch_gelu, N, s.Fl), w.fcproj_w, {}, Epilogue::kNone);
  ends.leave(a.fcproj, scratch);
  be.residual_add(A(a.residual3, Nl, C), A(a.residual2, Nl, C), A(a.fcproj, Nl, C), w.fcproj_b);
}

void gpt2_block_backward(const StageOps& ops, const StageDims& s, const Gpt2BlockWeights& w, const Gpt2BlockWeights& g,
                         const Gpt2BlockActivations& a, const void* residual, const StageScratch& d,
                         bool recompute_attention) {
  const int B = s.B, T = s.T, N = s.N, Nl = s.Nl, C = s.C;
  const RegionEnds ends(ops, s);
  auto A = [&](const void* p, int64_t rows, int64_t cols) { return ops.rows(p, rows, cols); };
  Backend& be = ops.backend;
  const Tensor dresidual = A(d.dresidual, Nl, C);

  // MLP. The row-parallel bias sees every row of the (gathered) output gradient, so its gradient
  // is complete on every rank.
  const Tensor dfcproj = A(ends.leave_backward(d.dresidual, d.dfull), N, C);
  const Tensor dfch_gelu = A(d.dfch_gelu, N, s.Fl), dfch = A(d.dfch, N, s.Fl);
  be.matmul_backward(dfch_gelu, g.fcproj_w, dfcproj, A(a.fch_gelu, N, s.Fl), w.fcproj_w);
  be.bias_backward(g.fcproj_b, dfcproj);
  be.gelu_backward(dfch, A(a.fch, N, s.Fl), dfch_gelu);
  be.matmul_backward(A(d.dfull, N, C), g.fc_w, dfch, A(a.ln2_full, N, C), w.fc_w);
  be.bias_backward(g.fc_b, dfch);
  void* dln2 = ends.enter_backward(d.dfull, d.dlocal);
  be.layernorm_backward(dresidual, g.ln2_w, g.ln2_b, A(dln2, Nl, C), A(a.residual2, Nl, C), w.ln2_w,
                        ops.stats(a.ln2_mean, Nl), ops.stats(a.ln2_rstd, Nl));

  // Attention. Selective recomputation rebuilds the attention core from the kept QKV.
  const Tensor qkv = A(a.qkv, N, 3 * s.Cl), atty = A(a.atty, N, s.Cl);
  const Tensor lse = ops.stats(a.att_lse, static_cast<int64_t>(B) * s.NHl * T);
  if (recompute_attention) be.attention_forward(atty, lse, qkv, B, T, s.NHl, s.NHl, s.doc_starts);
  const Tensor dattproj = A(ends.leave_backward(d.dresidual, d.dfull), N, C);
  const Tensor datty = A(d.datty, N, s.Cl), dqkv = A(d.dqkv, N, 3 * s.Cl);
  be.matmul_backward(datty, g.attproj_w, dattproj, atty, w.attproj_w);
  be.bias_backward(g.attproj_b, dattproj);
  be.attention_backward(dqkv, datty, qkv, atty, lse, B, T, s.NHl, s.NHl, s.doc_starts);
  // dfull may still hold dattproj (sequence parallel): it was consumed above.
  be.matmul_backward(A(d.dfull, N, C), g.qkv_w, dqkv, A(a.ln1_full, N, C), w.qkv_w);
  be.bias_backward(g.qkv_b, dqkv);
  void* dln1 = ends.enter_backward(d.dfull, d.dlocal);
  be.layernorm_backward(dresidual, g.ln1_w, g.ln1_b, A(dln1, Nl, C), A(residual, Nl, C), w.ln1_w,
                        ops.stats(a.ln1_mean, Nl), ops.stats(a.ln1_rstd, Nl));
}

}  // namespace loom
