// The parameter layout of a model: every tensor once, with everything any reader needs to know of
// it: its name, global shape, how tensor parallelism splits it, its initialisation, whether weight
// decay applies, and how Hugging Face stores it. One list per family (gpt2_layout.cpp,
// llama_layout.cpp); model_layout picks the config's.
//
// The model (core/gpt.cpp) builds its arenas and initialises its weights from it; the optimizer
// reads decay through the model's parameters; Hugging Face import and export read the storage
// order from it. A new model family is a new layout beside these (and a block), not a second
// copy of these facts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/parameter.h"
#include "core/tensor.h"

namespace loom {

struct GPTConfig;

// How a tensor is split over the tensor-parallel group.
enum class Sharding : uint8_t {
  kReplicated,  // every rank holds the whole tensor (norms, wpe, row-parallel biases)
  kRows,        // column-parallel: a contiguous slice of the rows (c_fc weight and bias)
  kColumns,     // row-parallel: a contiguous slice of the columns (the c_proj weights)
  kQkvRows,     // the q rows of this rank's heads and the k and v rows of its key/value heads in
                // a fused ((NH + 2 NKV) HS, ...) tensor (GPT-2: NKV = NH)
  kGateUpRows,  // the gate rows and the up rows of this rank's hidden units in a fused (2F, C) tensor
  kVocabRows,   // this rank's slice of the vocabulary (token embedding, output projection)
};

// The initialisation of a tensor (drawn at each element's global index: layout-independent).
enum class Init : uint8_t {
  kZeros,           // biases
  kOnes,            // norm gains
  kNormal,          // N(0, 0.02): matrices and embeddings
  kResidualNormal,  // N(0, 0.02 / sqrt(2 n_layer)): GPT-2's projections into the residual stream
};

struct TensorSpec {
  std::string name;
  Shape global;
  Sharding sharding = Sharding::kReplicated;
  Init init = Init::kZeros;
  bool decay = false;  // weight decay applies (matrices and embeddings)
  // With sequence parallelism each rank computes this replicated tensor's gradient from its own
  // token rows only, to be summed over the group (LayerNorms, wpe; not a row-parallel bias, whose
  // output gradient is gathered whole first).
  bool partial_under_sequence_parallel = false;
  bool hf_transposed = false;  // Hugging Face stores it (in, out) (GPT-2's Conv1D)
  // The model's output projection when it is not the token embedding (Llama's lm_head).
  bool output_projection = false;
  // The block it belongs to; -1 for the tensors before the blocks (embeddings) and after them
  // (the head).
  int layer = -1;
};

// The tensors of a pipeline stage holding blocks [first_layer, end_layer) of the config's family,
// in arena order: the token embedding first (first stage; also the last stage's copy when tied),
// the blocks', then the head's (last stage).
std::vector<TensorSpec> model_layout(const GPTConfig& config, int first_layer, int end_layer, bool first_stage,
                                     bool last_stage);

// GPT-2's: wte (first or last stage), wpe (first), the blocks' twelve each, ln_f (last).
std::vector<TensorSpec> gpt2_layout(const GPTConfig& config, int first_layer, int end_layer, bool first_stage,
                                    bool last_stage);
// Llama's (Hugging Face's names without "model."; q, k, v fused as self_attn.qkv_proj, gate and up
// as mlp.gate_up_proj): embed_tokens (first stage, or last when tied), per block input_layernorm,
// qkv_proj (weight, bias with qkv_bias), o_proj, post_attention_layernorm, gate_up_proj,
// down_proj; norm and lm_head (untied) on the last.
std::vector<TensorSpec> llama_layout(const GPTConfig& config, int first_layer, int end_layer, bool first_stage,
                                     bool last_stage);
// Tensors per block of the config's family, in its layout's order.
size_t block_tensor_count(const GPTConfig& config);
// The name of the token embedding of the config's family ("wte" or "embed_tokens.weight").
const char* token_embedding_name(const GPTConfig& config);

// The part of `spec` that tensor-parallel rank `tp_rank` of `tp` holds, as blocks of the global
// tensor seen as a matrix, in local memory order.
std::vector<ShardBlock> shard_blocks(const TensorSpec& spec, const GPTConfig& config, int tp, int tp_rank);

// Where part `index` of `parts` contiguous parts of `total` items starts: the parts differ in size
// by at most one (the vocabulary's split over tensor-parallel ranks).
int64_t split_start(int64_t total, int parts, int index);

// The spec named `name` in `layout`; null when there is none.
const TensorSpec* find_spec(const std::vector<TensorSpec>& layout, const std::string& name);

}  // namespace loom
