#include "core/model/llama_block.h"

namespace loom {

namespace {

LlamaBlockWeights block_of(const std::vector<Parameter>& params, size_t first, bool qkv_bias, bool grads) {
  auto t = [&](size_t i) { return grads ? params[first + i].grad : params[first + i].compute; };
  // input_layernorm, qkv_proj.weight, [qkv_proj.bias], o_proj, post_attention_layernorm,
  // gate_up_proj, down_proj.
  const size_t b = qkv_bias ? 1 : 0;
  return {t(0), t(1), qkv_bias ? t(2) : Tensor(), t(2 + b), t(3 + b), t(4 + b), t(5 + b)};
}

}  // namespace

LlamaBlockWeights LlamaBlockWeights::values(const std::vector<Parameter>& params, size_t first, bool qkv_bias) {
  return block_of(params, first, qkv_bias, false);
}

LlamaBlockWeights LlamaBlockWeights::grads(const std::vector<Parameter>& params, size_t first, bool qkv_bias) {
  return block_of(params, first, qkv_bias, true);
}

void carve_llama_attention_core(ArenaCarver& arena, const StageDims& s, LlamaBlockActivations& a) {
  a.atty = arena.take_act(static_cast<int64_t>(s.N) * s.Cl);
  a.att_lse = arena.take(static_cast<int64_t>(s.B) * s.NHl * s.T);
}

void carve_llama_block(ArenaCarver& arena, const StageDims& s, bool sp, bool attention_core,
                       LlamaBlockActivations& a) {
  const int64_t n = s.N, nl = s.Nl, C = s.C;
  a.ln1 = arena.take_act(nl * C);
  a.ln1_rstd = arena.take(nl);
  a.ln1_full = sp ? arena.take_act(n * C) : a.ln1;
  a.qkv = arena.take_act(checked_mul(n, s.QKVl, "the QKV activations"));
  if (attention_core) carve_llama_attention_core(arena, s, a);
  a.attproj = arena.take_act(n * C);
  a.residual2 = arena.take_act(nl * C);
  a.ln2 = arena.take_act(nl * C);
  a.ln2_rstd = arena.take(nl);
  a.ln2_full = sp ? arena.take_act(n * C) : a.ln2;
  a.gate_up = arena.take_act(checked_mul(n, s.MLPl, "the MLP activations"));
  a.mlp_h = arena.take_act(checked_mul(n, s.Fl, "the MLP activations"));
  a.mlpproj = arena.take_act(n * C);
}

void llama_block_forward(const StageOps& ops, const StageDims& s, const LlamaBlockConfig& cfg,
                         const LlamaBlockWeights& w, LlamaBlockActivations& a, const void* residual, void* scratch) {
  const int B = s.B, T = s.T, N = s.N, Nl = s.Nl, C = s.C;
  const RegionEnds ends(ops, s);
  auto A = [&](const void* p, int64_t rows, int64_t cols) { return ops.rows(p, rows, cols); };
  Backend& be = ops.backend;
  be.rmsnorm_forward(A(a.ln1, Nl, C), ops.stats(a.ln1_rstd, Nl), A(residual, Nl, C), w.ln1_w, cfg.eps);
  const void* ln1 = ends.enter(a.ln1, a.ln1_full);
  const Tensor qkv = A(a.qkv, N, s.QKVl);
  be.matmul_forward(qkv, {}, A(ln1, N, C), w.qkv_w, w.qkv_b, cfg.qkv_bias ? Epilogue::kBias : Epilogue::kNone);
  // Every row of a micro-batch is here (the gathered rows under sequence parallelism): row n is
  // position n % T, less its document's start when documents are packed.
  be.rope_forward(qkv, cfg.inv_freq, B, T, s.NHl, s.NKVl, 0, s.doc_starts);
  be.attention_forward(A(a.atty, N, s.Cl), ops.stats(a.att_lse, static_cast<int64_t>(B) * s.NHl * T), qkv, B, T,
                       s.NHl, s.NKVl, s.doc_starts);
  be.matmul_forward(A(a.attproj, N, C), {}, A(a.atty, N, s.Cl), w.o_w, {}, Epilogue::kNone);
  ends.leave(a.attproj, scratch);
  be.residual_rmsnorm_forward(A(a.residual2, Nl, C), A(a.ln2, Nl, C), ops.stats(a.ln2_rstd, Nl), A(residual, Nl, C),
                              A(a.attproj, Nl, C), {}, w.ln2_w, cfg.eps);
  const void* ln2 = ends.enter(a.ln2, a.ln2_full);
  be.matmul_forward(A(a.gate_up, N, s.MLPl), {}, A(ln2, N, C), w.gate_up_w, {}, Epilogue::kNone);
  be.swiglu_forward(A(a.mlp_h, N, s.Fl), A(a.gate_up, N, s.MLPl));
  be.matmul_forward(A(a.mlpproj, N, C), {}, A(a.mlp_h, N, s.Fl), w.down_w, {}, Epilogue::kNone);
  ends.leave(a.mlpproj, scratch);
  be.residual_add(A(a.residual3, Nl, C), A(a.residual2, Nl, C), A(a.mlpproj, Nl, C), {});
}

void llama_block_backward(const StageOps& ops, const StageDims& s, const LlamaBlockConfig& cfg,
                          const LlamaBlockWeights& w, const LlamaBlockWeights& g, const LlamaBlockActivations& a,
                          const void* residual, const StageScratch& d, bool recompute_attention) {
  const int B = s.B, T = s.T, N = s.N, Nl = s.Nl, C = s.C;
  const RegionEnds ends(ops, s);
  auto A = [&](const void* p, int64_t rows, int64_t cols) { return ops.rows(p, rows, cols); };
  Backend& be = ops.backend;
  const Tensor dresidual = A(d.dresidual, Nl, C);

  // MLP: down_proj, SwiGLU, the fused gate/up.
  const Tensor dmlpproj = A(ends.leave_backward(d.dresidual, d.dfull), N, C);
  const Tensor dh = A(d.dfch_gelu, N, s.Fl), dgate_up = A(d.dfch, N, s.MLPl);
  be.matmul_backward(dh, g.down_w, dmlpproj, A(a.mlp_h, N, s.Fl), w.down_w);
  be.swiglu_backward(dgate_up, A(a.gate_up, N, s.MLPl), dh);
  be.matmul_backward(A(d.dfull, N, C), g.gate_up_w, dgate_up, A(a.ln2_full, N, C), w.gate_up_w);
  void* dln2 = ends.enter_backward(d.dfull, d.dlocal);
  be.rmsnorm_backward(dresidual, g.ln2_w, A(dln2, Nl, C), A(a.residual2, Nl, C), w.ln2_w,
                      ops.stats(a.ln2_rstd, Nl));

  // Attention. The kept qkv holds the rotated q and k the attention saw; selective recomputation
  // rebuilds the attention core from it.
  const Tensor qkv = A(a.qkv, N, s.QKVl), atty = A(a.atty, N, s.Cl);
  const Tensor lse = ops.stats(a.att_lse, static_cast<int64_t>(B) * s.NHl * T);
  if (recompute_attention) be.attention_forward(atty, lse, qkv, B, T, s.NHl, s.NKVl, s.doc_starts);
  const Tensor dattproj = A(ends.leave_backward(d.dresidual, d.dfull), N, C);
  const Tensor datty = A(d.datty, N, s.Cl), dqkv = A(d.dqkv, N, s.QKVl);
  be.matmul_backward(datty, g.o_w, dattproj, atty, w.o_w);
  be.attention_backward(dqkv, datty, qkv, atty, lse, B, T, s.NHl, s.NKVl, s.doc_starts);
  // d(rotated q, k) -> d(q, k) before the projection.
  be.rope_backward(dqkv, cfg.inv_freq, B, T, s.NHl, s.NKVl, s.doc_starts);
  be.matmul_backward(A(d.dfull, N, C), g.qkv_w, dqkv, A(a.ln1_full, N, C), w.qkv_w);
  if (cfg.qkv_bias) be.bias_backward(g.qkv_b, dqkv);
  void* dln1 = ends.enter_backward(d.dfull, d.dlocal);
  be.rmsnorm_backward(dresidual, g.ln1_w, A(dln1, Nl, C), A(residual, Nl, C), w.ln1_w, ops.stats(a.ln1_rstd, Nl));
}

}  // namespace loom
