// The shape and dtype contract of a Backend op, checked before it runs: one place for the
// messages every backend gives ("matmul_forward: weight is (64, 48) bf16, expected (64, 32) bf16").
#pragma once

#include <cstdint>
#include <initializer_list>

#include "core/tensor.h"

namespace loom::backend_checks {

// Rows of a row-major tensor (its first dimension) and the elements of one row.
int64_t rows(const Tensor& t);
int64_t cols(const Tensor& t);
bool present(const Tensor& t);

// Throws loom::Error naming the op and the argument unless `t` is present, has `dtype`, lives on
// `device` and has exactly `dims` (a 1-D tensor of n elements matches {n}; any tensor of
// dims[0] rows of dims[1] elements matches {rows, cols}).
void expect(const char* op, const char* name, const Tensor& t, DType dtype, Device device,
            std::initializer_list<int64_t> dims);
// The same where the argument may be absent.
void expect_optional(const char* op, const char* name, const Tensor& t, DType dtype, Device device,
                     std::initializer_list<int64_t> dims);

// The contract of each Backend op (core/backend/backend.h), checked by every backend before it
// runs the op: one statement of each op's shapes and dtypes, on a backend's device with its
// activation dtype (f32 or bf16) and accumulator dtype. Each throws loom::Error naming the op and
// the argument.
struct OpContract {
  Device device;
  DType act;          // activations and compute weights
  DType accumulator;  // device scalars that accumulate
};
void check_token_embedding_forward(const OpContract& c, const Tensor& out, const Tensor& tokens, const Tensor& wte);
void check_position_embedding_forward(const OpContract& c, const Tensor& out, const Tensor& wpe, int T,
                                      const Tensor& doc_starts);
void check_token_embedding_backward(const OpContract& c, const Tensor& dwte, const Tensor& dout, const Tensor& tokens);
void check_position_embedding_backward(const OpContract& c, const Tensor& dwpe, const Tensor& dout, int T,
                                       const Tensor& doc_starts);
void check_layernorm_forward(const OpContract& c, const Tensor& out, const Tensor& mean, const Tensor& rstd,
                             const Tensor& inp, const Tensor& weight, const Tensor& bias);
void check_residual_add(const OpContract& c, const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& bias);
void check_residual_layernorm_forward(const OpContract& c, const Tensor& residual_out, const Tensor& out,
                                      const Tensor& mean, const Tensor& rstd, const Tensor& residual_in,
                                      const Tensor& delta, const Tensor& delta_bias, const Tensor& weight,
                                      const Tensor& bias);
void check_layernorm_backward(const OpContract& c, const Tensor& dresidual, const Tensor& dweight, const Tensor& dbias,
                              const Tensor& dout, const Tensor& inp, const Tensor& weight, const Tensor& mean,
                              const Tensor& rstd);
void check_rmsnorm_forward(const OpContract& c, const Tensor& out, const Tensor& rstd, const Tensor& inp,
                           const Tensor& weight, float eps);
void check_residual_rmsnorm_forward(const OpContract& c, const Tensor& residual_out, const Tensor& out,
                                    const Tensor& rstd, const Tensor& residual_in, const Tensor& delta,
                                    const Tensor& delta_bias, const Tensor& weight, float eps);
void check_rmsnorm_backward(const OpContract& c, const Tensor& dresidual, const Tensor& dweight, const Tensor& dout,
                            const Tensor& inp, const Tensor& weight, const Tensor& rstd);
// Epilogue as an int (0 none, 1 bias, 2 bias + GELU) to keep backend.h out of this header.
void check_matmul_forward(const OpContract& c, const Tensor& out, const Tensor& pre, const Tensor& inp,
                          const Tensor& weight, const Tensor& bias, int epilogue);
void check_matmul_backward(const OpContract& c, const Tensor& dinp, const Tensor& dweight, const Tensor& dout,
                           const Tensor& inp, const Tensor& weight);
void check_bias_backward(const OpContract& c, const Tensor& dbias, const Tensor& dout);
void check_gelu_backward(const OpContract& c, const Tensor& dinp, const Tensor& pre, const Tensor& dout);
void check_swiglu_forward(const OpContract& c, const Tensor& out, const Tensor& gu);
void check_swiglu_backward(const OpContract& c, const Tensor& dgu, const Tensor& gu, const Tensor& dout);
void check_rope_forward(const OpContract& c, const Tensor& qkv, const Tensor& inv_freq, int B, int T, int NH, int NKV,
                        int first_position, const Tensor& doc_starts);
void check_rope_backward(const OpContract& c, const Tensor& dqkv, const Tensor& inv_freq, int B, int T, int NH,
                         int NKV, const Tensor& doc_starts);
void check_attention_forward(const OpContract& c, const Tensor& out, const Tensor& lse, const Tensor& qkv, int B,
                             int T, int NH, int NKV, const Tensor& doc_starts);
void check_attention_backward(const OpContract& c, const Tensor& dqkv, const Tensor& dout, const Tensor& qkv,
                              const Tensor& out, const Tensor& lse, int B, int T, int NH, int NKV,
                              const Tensor& doc_starts);
void check_attention_decode(const OpContract& c, const Tensor& out, const Tensor& k_cache, const Tensor& v_cache,
                            const Tensor& qkv, int NH, int NKV, int pos);
void check_vocab_row_max(const OpContract& c, const Tensor& row_max, const Tensor& logits);
void check_vocab_sum_exp(const OpContract& c, const Tensor& sum_exp, const Tensor& target_logit, const Tensor& logits,
                         const Tensor& targets, const Tensor& row_max);
void check_vocab_losses(const OpContract& c, const Tensor& losses, const Tensor& row_max, const Tensor& sum_exp,
                        const Tensor& target_logit, const Tensor& targets);
void check_vocab_cross_entropy_backward(const OpContract& c, const Tensor& dlogits, const Tensor& logits,
                                        const Tensor& targets, const Tensor& row_max, const Tensor& sum_exp);
void check_sum_of_squares(const OpContract& c, const Tensor& result, const Tensor& x);
// `compute` is checked when present and not `master` itself.
void check_adamw_update(const OpContract& c, const Tensor& master, const Tensor& compute, const Tensor& grad,
                        const Tensor& m, const Tensor& v, const Tensor& global_norm);

}  // namespace loom::backend_checks
