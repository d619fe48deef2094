// GPT-2: pre-LayerNorm transformer blocks, learned positions, tied input/output embeddings.
//
// Forward and backward are written out per layer (no autograd): each step's activations live in
// one arena sized for the largest (B, T) seen, parameters and gradients in two more arenas with
// one named view per tensor. Parameter names and layouts follow torch.nn.Linear / nanoGPT
// ("h.0.attn.c_attn.weight" is (3C, C)), so the PyTorch reference test can load them directly.
//
//   x = wte[tokens] + wpe[:T]
//   for each block: x += attn(ln_1(x)); x += mlp(ln_2(x))
//   logits = ln_f(x) @ wte^T
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace loom {

struct GPTConfig {
  int n_layer = 2;
  int n_head = 4;
  int n_embd = 128;
  int vocab_size = 16;
  int max_seq_len = 16;

  // Throws UserError naming the first invalid field.
  void validate() const;
  bool operator==(const GPTConfig&) const = default;
};

// One trainable tensor: its value and gradient are views into the model's arenas.
struct Parameter {
  std::string name;
  Tensor value;
  Tensor grad;
  bool decay = false;  // weight decay applies (matrices and embeddings, not biases or norms)
};

class GPT {
 public:
  explicit GPT(const GPTConfig& config);
  GPT(const GPT&) = delete;
  GPT& operator=(const GPT&) = delete;

  const GPTConfig& config() const { return config_; }
  std::vector<Parameter>& parameters() { return params_; }
  const std::vector<Parameter>& parameters() const { return params_; }
  const Parameter& parameter(const std::string& name) const;
  int64_t num_parameters() const { return static_cast<int64_t>(param_arena_.numel()); }
  // All parameter values (resp. gradients) as one flat fp32 buffer, in parameters() order.
  Tensor parameter_arena() const { return param_arena_; }
  Tensor gradient_arena() const { return grad_arena_; }

  // GPT-2 initialisation from a counter-based RNG keyed by (seed, parameter name): N(0, 0.02) for
  // matrices and embeddings, 0.02 / sqrt(2 n_layer) for the residual projections, zero biases,
  // unit LayerNorm gains.
  void init_weights(uint64_t seed);

  // Runs the model on tokens (B, T). With targets (B, T) (-1 = not counted) it returns the mean
  // cross-entropy over counted positions (0 when none count); without, returns 0. logits() is
  // valid until backward().
  float forward(const int32_t* tokens, const int32_t* targets, int B, int T);
  // (B, T, V) logits of the last forward.
  const float* logits() const { return acts_.logits; }

  // Accumulates d(loss_scale * loss)/d(params) into the gradients; loss_scale = 1 / accum steps
  // for gradient accumulation. Needs the preceding forward to have had targets.
  void backward(float loss_scale = 1.0f);
  void zero_grad();

  // Bytes of the activation arena (for the benchmark and memory reports).
  size_t activation_bytes() const { return act_arena_.nbytes(); }

 private:
  struct LayerParams {
    float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *attproj_w, *attproj_b;
    float *ln2_w, *ln2_b, *fc_w, *fc_b, *fcproj_w, *fcproj_b;
  };
  struct LayerActs {
    float* ln1;       // (B, T, C)
    float* ln1_mean;  // (B, T)
    float* ln1_rstd;  // (B, T)
    float* qkv;       // (B, T, 3C)
    float* atty;      // (B, T, C)
    float* att_lse;   // (B, NH, T)
    float* attproj;   // (B, T, C)
    float* residual2; // (B, T, C)
    float* ln2;       // (B, T, C)
    float* ln2_mean;  // (B, T)
    float* ln2_rstd;  // (B, T)
    float* fch;       // (B, T, 4C)
    float* fch_gelu;  // (B, T, 4C)
    float* fcproj;    // (B, T, C)
    float* residual3; // (B, T, C)
  };
  struct Activations {
    float* encoded;   // (B, T, C)
    std::vector<LayerActs> layers;
    float* lnf;       // (B, T, C)
    float* lnf_mean;  // (B, T)
    float* lnf_rstd;  // (B, T)
    float* logits;    // (B, T, V); becomes d(logits) in place during backward
    float* losses;    // (B, T)
    // backward scratch
    float* dresidual; // (B, T, C)
    float* dln;       // (B, T, C)
    float* datty;     // (B, T, C)
    float* dqkv;      // (B, T, 3C)
    float* dfch;      // (B, T, 4C)
    float* dfch_gelu; // (B, T, 4C)
    float* dlosses;   // (B, T)
  };

  void ensure_activations(int B, int T);
  LayerParams layer_params(const std::vector<float*>& values, int layer) const;

  GPTConfig config_;
  Tensor param_arena_;
  Tensor grad_arena_;
  std::vector<Parameter> params_;
  std::vector<float*> param_ptrs_;  // values, in params_ order
  std::vector<float*> grad_ptrs_;   // gradients, in params_ order

  Tensor act_arena_;
  Activations acts_{};
  int last_B_ = 0, last_T_ = 0; // shape of the last forward
  std::vector<int32_t> last_tokens_;
  std::vector<int32_t> last_targets_;
  bool has_targets_ = false;
};

}  // namespace loom
